"""`yolopatch add` of a tutorial's module file, with and without a backbone probe.

Two of the tutorial-style fixture files (tests/fixtures/tutorial): se_block.py (an attention block: its
role is read from the source, nothing is run) and tinynet.py (a multi-output backbone that declares no
channels or strides: `add` builds it once in the target's interpreter, yolopatch/add/probe_backbones.py,
to measure them). Each `add` runs through the real console entry (`python -m yolopatch add FILE --repo
COPY`, compiled bytecode available as after `pip install`, in a private PYTHONPYCACHEPREFIX) on a fresh copy
of the newest ultralytics release; median wall time of several runs after one warm-up run; every run must
exit 0. The probe's time is measured on its own by one more `add tinynet.py` run in-process with
`yolopatch.add.compose.measure_backbones` wrapped and timed (the probe is a subprocess that imports torch
and the target, so its time is mostly those imports).

usage: python tests/benchmarks/bench_add.py [--json OUT] [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "CLI"
TARGET = 1.0
TUTORIAL = C.TESTS / "fixtures" / "tutorial"
PLAIN, BACKBONE = "se_block.py", "tinynet.py"

INSTRUMENT = r"""
import json, sys, time
import yolopatch.cli, yolopatch.add.compose as compose
probe = []
original = compose.measure_backbones
def measure_backbones(*a, **k):
    s = time.perf_counter()
    try:
        return original(*a, **k)
    finally:
        probe.append(time.perf_counter() - s)
compose.measure_backbones = measure_backbones
s = time.perf_counter()
try:
    yolopatch.cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("@instrument " + json.dumps({"main": time.perf_counter() - s, "probe": probe, "exit": code}))
"""


def timed_adds(file: str, env: dict, work: Path, runs: int) -> tuple[list, list]:
    walls, cpus = [], []
    for i in range(runs + 1):
        copy = C.fresh_ultralytics(work / "copy")
        wall, cpu, done = C.run_timed(C.yolopatch_cmd("add", TUTORIAL / file, "--repo", copy), env, work)
        if done.returncode:
            raise RuntimeError(f"add {file} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
        if i:
            walls.append(wall)
            cpus.append(cpu)
    return walls, cpus


def instrumented(file: str, env: dict, work: Path) -> dict:
    copy = C.fresh_ultralytics(work / "instrumented")
    done = subprocess.run([C.PYTHON, "-c", INSTRUMENT, "add", str(TUTORIAL / file), "--repo", str(copy)], env=env,
                          cwd=work, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("@instrument "):
            return json.loads(line[len("@instrument "):])
    raise RuntimeError(f"instrumented add failed: {done.stderr[-2000:]}")


def run(quick: bool = False) -> tuple[list[dict], dict]:
    runs = 2 if quick else 5
    env = C.cached_env()
    details: dict = {"load_before": C.loadavg(), "runs": runs}
    version = C.newest_ultralytics()[1]
    with tempfile.TemporaryDirectory(prefix="yolopatch-bench-add-") as tmp:
        work = Path(tmp)
        plain = timed_adds(PLAIN, env, work, runs)
        backbone = timed_adds(BACKBONE, env, work, 1 if quick else 3)  # the probe takes seconds: fewer runs
        inst = instrumented(BACKBONE, env, work)
    details.update(plain=plain, backbone=backbone, instrumented=inst)
    wall = C.median(plain[0])
    rows = [C.row(GROUP, f"`yolopatch add {PLAIN}` (no backbone probe; ultralytics {version})", f"< {TARGET} s",
                  C.fmt_s(wall), C.judge(wall < TARGET),
                  f"CPU {C.fmt_s(C.median(plain[1]))}; median of {runs} after 1 warm-up, fresh copy each; exit 0 "
                  f"every run")]
    probe = sum(inst["probe"])
    bwall = C.median(backbone[0])
    rows.append(C.row(GROUP, f"`yolopatch add {BACKBONE}` (a backbone: measured by the probe)", "-", C.fmt_s(bwall),
                      "info", f"CPU {C.fmt_s(C.median(backbone[1]))} (yolopatch's and the probe's processes); median "
                      f"of {len(backbone[0])} after 1 warm-up, fresh copy each; exit 0 every run"))
    rows.append(C.row(GROUP, "its backbone probe (a subprocess of the target's interpreter: imports torch and the "
                             "target, builds TinyNet once)", "-", C.fmt_s(probe), "info",
                      f"{probe / inst['main']:.0%} of that instrumented add's main() ({inst['main']:.2f} s); the "
                      f"rest, {C.fmt_s(inst['main'] - probe)}, is the add without a probe; load average "
                      f"{details['load_before'][0]:.2f} -> {C.loadavg()[0]:.2f}"))
    details["load_after"] = C.loadavg()
    return rows, details


def main() -> None:
    C.script_main(__doc__, run)


if __name__ == "__main__":
    main()
