"""`yolopatch bases --json` and `apply mobilenetv4 slimneck --base all` wall times on the newest ultralytics
release (its 66 stock model configs), and libcst parsing's share of that apply.

Each figure is the median wall time of several runs of the real console entry in a new interpreter
(`python -m yolopatch ...`) with compiled bytecode available (as after `pip install`; written into a
private PYTHONPYCACHEPREFIX, never into the repository), after one untimed warm-up run.
`apply mobilenetv4 slimneck --base all` runs on a fresh copy each time and is reverted after; the revert
must leave the tree byte for byte as it was.

libcst's share: one more apply runs in-process under instrumentation (`libcst.parse_module` wrapped and
timed, `import libcst` timed on its own, os.fsync counted and timed, `yolopatch.cli.main` timed as a whole); the note gives the
seconds and characters parsed, their share of that run, and how many YAMLs were derived.

If the yolopatch under test has no `apply --base` (the derivation work not merged), the figures say so
instead of a number.

usage: python tests/benchmarks/bench_bases.py [--json OUT] [--quick]
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "CLI"
TARGETS = {"bases": 0.5, "apply": 3.0}
RECIPES = ["mobilenetv4", "slimneck"]

# Runs inside the CLI's interpreter: times `import libcst`, every libcst.parse_module call and main().
INSTRUMENT = r"""
import json, sys, time
t = time.perf_counter(); import libcst; imported = time.perf_counter() - t
parses = []
original = libcst.parse_module
def parse_module(source, *a, **k):
    s = time.perf_counter()
    try:
        return original(source, *a, **k)
    finally:
        parses.append((time.perf_counter() - s, len(source)))
libcst.parse_module = parse_module
import os
syncs = []
original_fsync = os.fsync
def fsync(fd):
    s = time.perf_counter()
    try:
        return original_fsync(fd)
    finally:
        syncs.append(time.perf_counter() - s)
os.fsync = fsync
import yolopatch.cli
s = time.perf_counter()
try:
    yolopatch.cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("@instrument " + json.dumps({"main": time.perf_counter() - s, "import_libcst": imported, "exit": code,
                                   "parses": parses, "fsyncs": syncs}))
"""


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def instrumented_apply(env: dict, work: Path) -> dict:
    copy = C.fresh_ultralytics(work / "instrumented")
    done = subprocess.run([C.PYTHON, "-c", INSTRUMENT, "apply", *RECIPES, "--base", "all", "--repo", str(copy)],
                          env=env, cwd=work, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("@instrument "):
            return json.loads(line[len("@instrument "):])
    raise RuntimeError(f"instrumented apply failed: {done.stderr[-2000:]}")


def run(quick: bool = False) -> tuple[list[dict], dict]:
    runs = 2 if quick else 7
    env = C.cached_env()
    details: dict = {"load_before": C.loadavg(), "runs": runs}
    apply_label = f"`yolopatch apply {' '.join(RECIPES)} --base all` (ultralytics {C.newest_ultralytics()[1]})"
    if not C.cli_supports("apply", "--base"):
        note = "this yolopatch has no `apply --base` / `bases` (the derivation work is not merged): not measured"
        return [C.row(GROUP, "`yolopatch bases --json`", f"< {TARGETS['bases']} s", "not measured", "MISS", note),
                C.row(GROUP, apply_label, f"< {TARGETS['apply']} s", "not measured", "MISS", note)], details
    rows = []
    with tempfile.TemporaryDirectory(prefix="yolopatch-bench-bases-") as tmp:
        work = Path(tmp)
        copy = C.fresh_ultralytics(work / "copy")
        walls, cpus = C.time_command(C.yolopatch_cmd("bases", "--json", "--repo", copy), env, work, runs=runs)
        listed = json.loads(subprocess.run(C.yolopatch_cmd("bases", "--json", "--repo", copy), env=env, cwd=work,
                                           capture_output=True, text=True, check=True).stdout)
        configs = len(listed.get("bases", listed) if isinstance(listed, dict) else listed)
        wall = C.median(walls)
        rows.append(C.row(GROUP, f"`yolopatch bases --json` ({configs} stock configs)", f"< {TARGETS['bases']} s",
                          C.fmt_s(wall), C.judge(wall < TARGETS["bases"]),
                          f"CPU {C.fmt_s(C.median(cpus))}; median of {runs} after 1 warm-up"))
        applies, reverts, identical, written = [], [], True, 0
        for i in range(runs + 1):  # the first round warms bytecode and the page cache
            copy = C.fresh_ultralytics(work / "copy")
            before = tree_digest(copy)
            wall, cpu, done = C.run_timed(C.yolopatch_cmd("apply", *RECIPES, "--base", "all", "--repo", copy), env, work)
            if done.returncode:
                raise RuntimeError(done.stderr.decode()[-2000:])
            written = len(list((copy / "ultralytics" / "cfg" / "models" / "yolopatch").glob("*.yaml")))
            rwall, rcpu, done = C.run_timed(C.yolopatch_cmd("revert", "--repo", copy), env, work)
            identical &= done.returncode == 0 and tree_digest(copy) == before
            if i:
                applies.append((wall, cpu))
                reverts.append((rwall, rcpu))
        inst = instrumented_apply(env, work)
    details["instrumented"] = inst
    parse_s = sum(p[0] for p in inst["parses"])
    chars = sum(p[1] for p in inst["parses"])
    wall = C.median(w for w, _ in applies)
    rows.append(C.row(GROUP, apply_label + f", {written} YAMLs", f"< {TARGETS['apply']} s", C.fmt_s(wall),
                      C.judge(wall < TARGETS["apply"]),
                      f"CPU {C.fmt_s(C.median(c for _, c in applies))}; median of {runs} after 1 warm-up, fresh copy "
                      f"each; libcst parsing {parse_s:.2f} s = {parse_s / inst['main']:.0%} of the instrumented "
                      f"run's main() ({inst['main']:.2f} s; {len(inst['parses'])} parses, {chars:,} characters), "
                      f"`import libcst` {inst['import_libcst']:.2f} s more; os.fsync {len(inst['fsyncs'])} calls, "
                      f"{sum(inst['fsyncs']):.2f} s; load average {C.loadavg()[0]:.2f}"))
    rows.append(C.row(GROUP, "its `yolopatch revert`", "byte-identical tree",
                      C.fmt_s(C.median(w for w, _ in reverts)), C.judge(identical),
                      "identical after every revert" if identical else "the tree differs after a revert"))
    details["load_after"] = C.loadavg()
    return rows, details


def main() -> None:
    C.script_main(__doc__, run)


if __name__ == "__main__":
    main()
