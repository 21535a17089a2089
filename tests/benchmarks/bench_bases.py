"""`yolopatch bases` and `apply --base all` wall times on the newest ultralytics release (66 stock configs).

Each figure is the median wall time of several runs of the real console entry in a new interpreter with
compiled bytecode available (as after `pip install`; written into a private PYTHONPYCACHEPREFIX, never
into the repository). `apply mobilenetv4 slimneck --base all` runs on a fresh copy each time and is
reverted after, byte for byte.

usage: python tests/benchmarks/bench_bases.py [--json OUT] [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "CLI"
TARGETS = {"bases": 0.5, "apply": 3.0}
RECIPES = ["mobilenetv4", "slimneck"]


def cached_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(C.BENCH_CACHE / "pycache")
    return env


def run(quick: bool = False) -> tuple[list[dict], dict]:
    runs = 2 if quick else 7
    env = cached_env()
    details: dict = {"load_before": C.loadavg(), "runs": runs}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy = C.fresh_ultralytics(work / "copy")
        walls, cpus = C.time_command([C.PYTHON, "-m", "yolopatch", "bases", "--json", "--repo", str(copy)], env, work,
                                     runs=runs)
        wall = C.median(walls)
        rows.append(C.row(GROUP, "`bases --json` (66 stock configs x 14 recipes)", f"< {TARGETS['bases']} s",
                          C.fmt_s(wall), C.judge(wall < TARGETS["bases"]), f"CPU {C.fmt_s(C.median(cpus))}"))
        applies, reverts, identical, written = [], [], True, 0
        for i in range(runs + 1):  # the first round warms bytecode and the page cache
            copy = C.fresh_ultralytics(work / "copy")
            before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
            apply_cmd = [C.PYTHON, "-m", "yolopatch", "apply", *RECIPES, "--base", "all", "--repo", str(copy)]
            wall, cpu, done = C.run_timed(apply_cmd, env, work)
            if done.returncode:
                raise RuntimeError(done.stderr.decode()[-2000:])
            written = len(list((copy / "ultralytics" / "cfg" / "models" / "yolopatch").glob("*.yaml")))
            rwall, rcpu, done = C.run_timed([C.PYTHON, "-m", "yolopatch", "revert", "--repo", str(copy)], env, work)
            identical &= done.returncode == 0 and {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
            if i:
                applies.append((wall, cpu))
                reverts.append((rwall, rcpu))
        wall = C.median(w for w, _ in applies)
        rows.append(C.row(GROUP, f"`apply {' '.join(RECIPES)} --base all` ({written} YAMLs)", f"< {TARGETS['apply']} s",
                          C.fmt_s(wall), C.judge(wall < TARGETS["apply"]),
                          f"CPU {C.fmt_s(C.median(c for _, c in applies))}"))
        rows.append(C.row(GROUP, "its revert", "byte-identical", C.fmt_s(C.median(w for w, _ in reverts)),
                          C.judge(identical), "identical" if identical else "tree differs after revert"))
    details["load_after"] = C.loadavg()
    return rows, details


if __name__ == "__main__":
    C.script_main(__doc__, run)
