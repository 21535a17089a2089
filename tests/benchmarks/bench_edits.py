"""apply, revert, and the three-way merge of the user's edits (issue 9) on ultralytics' tasks.py.

Per round, a fresh copy of the newest ultralytics release (tests/upstream.py), then through the real console
entry (`python -m yolopatch ...`, compiled bytecode available as after `pip install`, in a private
PYTHONPYCACHEPREFIX):

  1. `apply mobilenetv4`                       - a plain apply (tasks.py as yolopatch wrote nothing yet);
  2. the user appends a function to tasks.py (and is not asked anything);
  3. `apply slimneck`                          - tasks.py changes again: merged three ways (the bytes
                                                 yolopatch wrote, the user's bytes, the new version);
  4. `revert`                                  - every recipe: tasks.py merged back to the pristine bytes
                                                 plus the user's function.

Each step's wall time is timed on its own; the figure is the median over the rounds after one warm-up
round. The checks that make the figures mean something: every step exits 0, the user's function is in
tasks.py after step 3, and after step 4 tasks.py is exactly the pristine file with the function appended
and every other file as before.

usage: python tests/benchmarks/bench_edits.py [--json OUT] [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "CLI"
TARGET = 1.0
TASKS = "ultralytics/nn/tasks.py"
FUNCTION = b"\n\ndef my_helper():\n    \"\"\"The user's own code, kept through every apply and revert.\"\"\"\n    return 42\n"
STEPS = {
    "apply": ("`yolopatch apply mobilenetv4` (plain)", ["apply", "mobilenetv4"]),
    "merge": ("`yolopatch apply slimneck` onto a tasks.py the user edited (three-way merge)", ["apply", "slimneck"]),
    "revert": ("`yolopatch revert` keeping the user's edit in tasks.py (three-way merge)", ["revert"]),
}


def files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def one_round(work: Path, env: dict) -> tuple[dict, list[str]]:
    copy = C.fresh_ultralytics(work / "copy")
    pristine = files(copy)
    walls, cpus, problems = {}, {}, []
    for key, (_, args) in STEPS.items():
        if key == "merge":
            tasks = copy / TASKS
            tasks.write_bytes(tasks.read_bytes() + FUNCTION)
        wall, cpu, done = C.run_timed(C.yolopatch_cmd(*args, "--repo", copy), env, work)
        walls[key], cpus[key] = wall, cpu
        if done.returncode:
            problems.append(f"{' '.join(args)} exited {done.returncode}: "
                            f"{' '.join(done.stderr.decode().split())[-300:]}")
        if key == "merge" and FUNCTION not in (copy / TASKS).read_bytes():
            problems.append("the user's function is gone after `apply slimneck`")
    expected = dict(pristine, **{TASKS: pristine[TASKS] + FUNCTION})
    if files(copy) != expected:
        problems.append("after revert the tree is not the pristine one plus the user's function")
    return {"walls": walls, "cpus": cpus}, problems


def run(quick: bool = False) -> tuple[list[dict], dict]:
    rounds = 2 if quick else 7
    env = C.cached_env()
    details: dict = {"load_before": C.loadavg(), "rounds": rounds}
    results, problems = [], []
    with tempfile.TemporaryDirectory(prefix="yolopatch-bench-edits-") as tmp:
        for i in range(rounds + 1):  # round 0 warms bytecode and the page cache
            result, found = one_round(Path(tmp), env)
            problems += found
            if i:
                results.append(result)
    details["rounds_measured"] = results
    details["problems"] = problems
    rows = []
    for key, (label, _) in STEPS.items():
        wall = C.median(r["walls"][key] for r in results)
        cpu = C.median(r["cpus"][key] for r in results)
        ok = wall < TARGET and not problems
        note = (f"CPU {C.fmt_s(cpu)}; median of {rounds} rounds after 1 warm-up, fresh copy each; checks: "
                + ("every step exit 0, the function kept, tree after revert = pristine + the function"
                   if not problems else "; ".join(sorted(set(problems)))[:400]))
        rows.append(C.row(GROUP, label + f" (ultralytics {C.newest_ultralytics()[1]})", f"< {TARGET} s",
                          C.fmt_s(wall), C.judge(ok), note))
    details["load_after"] = C.loadavg()
    rows[-1]["note"] += f"; load average {details['load_before'][0]:.2f} -> {details['load_after'][0]:.2f}"
    return rows, details


def main() -> None:
    C.script_main(__doc__, run)


if __name__ == "__main__":
    main()
