"""CLI start-up and apply/revert wall times, as a user feels them.

Every figure is the median wall time of several runs of the real console entry in a new interpreter
(`python -m yolopatch ...`, i.e. sys.executable directly, no shell shim), next to python's own bare
start-up (`python -c pass`), the floor no command can go below.

Two bytecode settings:
  * "cached"   compiled bytecode available, as after `pip install` (written once into a private
               PYTHONPYCACHEPREFIX under ~/.cache/yolopatch-bench, never into the repository) - the figure
               judged against the targets;
  * "no cache" PYTHONDONTWRITEBYTECODE=1 and no yolopatch bytecode: yolopatch's own sources are compiled on
               every start (what a source checkout run with that variable set pays), for reference.

apply/revert run on a fresh copy of the newest ultralytics release (tests/upstream.py) per run. An
instrumented run counts how often libcst parses each file and where the apply time goes; for a figure
that misses its target, `python -X importtime` shows which imports cost the most.

usage: python tests/benchmarks/bench_cli.py [--json OUT] [--quick]
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "CLI"
APPLY_RECIPES = ["mobilenetv4", "slimneck", "bifpn"]
TARGETS = {"help": 0.3, "list": 0.3, "apply": 1.0, "revert": 0.3}

# Runs inside the CLI's interpreter: counts libcst parses / full-tree visits / code generations and times
# the phases of one `apply`, then prints them as JSON.
INSTRUMENT = r"""
import json, sys, time
T = {}
t = time.perf_counter(); import yolopatch.cli; T["import yolopatch.cli (click)"] = time.perf_counter() - t
t = time.perf_counter(); import yolopatch.api; T["import yolopatch.api"] = time.perf_counter() - t
t = time.perf_counter(); import libcst; T["import libcst"] = time.perf_counter() - t
t = time.perf_counter(); import jinja2; T["import jinja2"] = time.perf_counter() - t
t = time.perf_counter(); import yolopatch.plan; T["import yolopatch.plan (edits)"] = time.perf_counter() - t - 0
calls = {"parse_module": [], "Module.visit": [], "Module.code": []}

def timed(name, fn):
    def wrapper(*a, **k):
        s = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            calls.setdefault(name, []).append(time.perf_counter() - s)
    return wrapper

orig_parse = libcst.parse_module
def parse_module(source, *a, **k):
    s = time.perf_counter()
    try:
        return orig_parse(source, *a, **k)
    finally:
        calls["parse_module"].append((time.perf_counter() - s, len(source)))
libcst.parse_module = parse_module
orig_visit = libcst.Module.visit
def visit(self, visitor):
    s = time.perf_counter()
    try:
        return orig_visit(self, visitor)
    finally:
        calls["Module.visit"].append(time.perf_counter() - s)
libcst.Module.visit = visit
orig_code = libcst.Module.code.fget
def code(self):
    s = time.perf_counter()
    try:
        return orig_code(self)
    finally:
        calls["Module.code"].append(time.perf_counter() - s)
libcst.Module.code = property(code)

import yolopatch.plan as plan, yolopatch.api as api, yolopatch.edits.parser_file as pf
plan.build = timed("plan.build", plan.build)
plan._check_output = timed("plan._check_output", plan._check_output)
plan.apply_patch = timed("apply_patch", plan.apply_patch)
plan.render_yaml = timed("render_yaml", plan.render_yaml)
api.commit = timed("commit (writes, fsync)", api.commit)
s = time.perf_counter()
try:
    yolopatch.cli.main(sys.argv[1:])
except SystemExit as exc:
    code_ = exc.code
T["main()"] = time.perf_counter() - s
out = {"imports": T, "exit": code_,
       "parses": [{"seconds": p[0], "chars": p[1]} for p in calls.pop("parse_module")],
       "calls": {k: {"n": len(v), "seconds": sum(v)} for k, v in calls.items()}}
print("@instrument " + json.dumps(out))
"""


def envs() -> dict[str, dict]:
    base = dict(os.environ)
    base.pop("PYTHONPYCACHEPREFIX", None)
    cached = dict(base)
    cached.pop("PYTHONDONTWRITEBYTECODE", None)
    cached["PYTHONPYCACHEPREFIX"] = str(C.BENCH_CACHE / "pycache")
    nocache = dict(base)
    nocache["PYTHONDONTWRITEBYTECODE"] = "1"
    return {"cached": cached, "no cache": nocache}


def yolopatch_cmd(*args) -> list[str]:
    return [C.PYTHON, "-m", "yolopatch", *args]


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        digest.update(oct(path.stat().st_mode).encode())
    return digest.hexdigest()


def time_apply_revert(env: dict, work: Path, runs: int) -> tuple[tuple, tuple, bool]:
    """((apply walls, cpus), (revert walls, cpus), byte-identical after revert) over `runs` fresh copies."""
    applies, reverts, identical = ([], []), ([], []), True
    pristine_digest = None
    for i in range(runs + 1):  # the first round is a warm-up (bytecode, page cache)
        copy = C.fresh_ultralytics(work / "copy")
        if pristine_digest is None:
            pristine_digest = tree_digest(copy)
        wall, cpu, done = C.run_timed(yolopatch_cmd("apply", *APPLY_RECIPES, "--repo", str(copy)), env, work)
        if done.returncode:
            raise RuntimeError(f"apply failed: {done.stderr.decode()[-2000:]}")
        rwall, rcpu, done = C.run_timed(yolopatch_cmd("revert", "--repo", str(copy)), env, work)
        if done.returncode:
            raise RuntimeError(f"revert failed: {done.stderr.decode()[-2000:]}")
        if i == 1:
            identical = tree_digest(copy) == pristine_digest
        if i:
            applies[0].append(wall)
            applies[1].append(cpu)
            reverts[0].append(rwall)
            reverts[1].append(rcpu)
    return applies, reverts, identical


def importtime_top(cmd_args: list[str], env: dict, cwd: Path, top: int = 8) -> list[tuple[str, float]]:
    """The imports with the largest cumulative time, top-level packages only (python -X importtime)."""
    done = subprocess.run([C.PYTHON, "-X", "importtime", "-m", "yolopatch", *cmd_args], env=env, cwd=cwd,
                          capture_output=True, text=True)
    entries = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:"):].split("|")
        try:
            cumulative = int(parts[1])
        except ValueError:
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        if depth == 0:
            entries.append((name.strip(), cumulative / 1e6))
    return sorted(entries, key=lambda e: -e[1])[:top]


def instrumented_apply(env: dict, work: Path) -> dict:
    copy = C.fresh_ultralytics(work / "instrumented")
    done = subprocess.run([C.PYTHON, "-c", INSTRUMENT, "apply", *APPLY_RECIPES, "--repo", str(copy)], env=env,
                          cwd=work, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("@instrument "):
            result = json.loads(line[len("@instrument "):])
            result["parser_file_chars"] = len((copy / "ultralytics/nn/tasks.py").read_text(encoding="utf-8"))
            return result
    raise RuntimeError(f"instrumented apply failed: {done.stderr[-2000:]}")


def torch_free_import(env: dict) -> dict:
    probe = ("import sys, json, yolopatch.cli; heavy = ('torch', 'libcst', 'jinja2', 'numpy', 'yolopatch.api');"
             "print(json.dumps({m: m in sys.modules for m in heavy}))")
    done = subprocess.run([C.PYTHON, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> tuple[list[dict], dict]:
    runs = 3 if quick else 9
    apply_runs = 2 if quick else 5
    environments = envs()
    details: dict = {"load_before": C.loadavg(), "runs": runs, "apply_runs": apply_runs}
    rows = []
    imported = torch_free_import(environments["cached"])
    details["imported_by_cli"] = imported
    rows.append(C.row(GROUP, "`import yolopatch.cli` imports torch", "no",
                      "yes" if imported["torch"] else "no", C.judge(not imported["torch"]),
                      "also not imported: " + ", ".join(k for k, v in imported.items() if not v and k != "torch")))
    measured: dict = {}
    with tempfile.TemporaryDirectory(prefix="yolopatch-bench-cli-") as tmp:
        work = Path(tmp)
        for label, env in environments.items():
            figures = {}
            figures["python -c pass"] = C.time_command([C.PYTHON, "-c", "pass"], env, work, runs)
            figures["help"] = C.time_command(yolopatch_cmd("--help"), env, work, runs)
            figures["list"] = C.time_command(yolopatch_cmd("list"), env, work, runs)
            # apply/revert without bytecode: fewer runs (a reference figure only, not judged)
            figures["apply"], figures["revert"], identical = time_apply_revert(
                env, work, apply_runs if label == "cached" else max(1, apply_runs // 2))
            measured[label] = {k: C.median(v[0]) for k, v in figures.items()}
            measured[label + " cpu"] = {k: C.median(v[1]) for k, v in figures.items()}
            details[f"times {label}"] = figures
            details[f"revert byte-identical ({label})"] = identical
        floor = measured["cached"]["python -c pass"]
        rows.append(C.row(GROUP, "`python -c pass` (bare interpreter start-up, the floor)", "-", C.fmt_s(floor), "info",
                          f"CPU {C.fmt_s(measured['cached cpu']['python -c pass'])}; "
                          f"no cache: {C.fmt_s(measured['no cache']['python -c pass'])}"))
        labels = {"help": "`yolopatch --help`", "list": "`yolopatch list`",
                  "apply": f"`yolopatch apply {' '.join(APPLY_RECIPES)}` (ultralytics {C.newest_ultralytics()[1]})",
                  "revert": "`yolopatch revert` (the same three)"}
        instrumented = instrumented_apply(environments["cached"], work)
        details["instrumented apply"] = instrumented
        for key, label in labels.items():
            value, target = measured["cached"][key], TARGETS[key]
            ok = value < target
            note = (f"CPU {C.fmt_s(measured['cached cpu'][key])}; {C.fmt_s(value - floor)} above the floor; "
                    f"no cache: {C.fmt_s(measured['no cache'][key])}")
            if key == "revert":
                note += "; tree byte-identical after revert: " + ("yes" if details["revert byte-identical (cached)"] else "NO")
            if not ok:
                top = importtime_top(["list"] if key == "list" else ["--help"], environments["cached"], work) \
                    if key in ("help", "list") else []
                if key == "apply":
                    note += "; " + explain_apply(instrumented)
                elif key == "revert":
                    copy = C.fresh_ultralytics(work / "importtime")
                    subprocess.run(yolopatch_cmd("apply", *APPLY_RECIPES, "--repo", str(copy)),
                                   env=environments["cached"], cwd=work, capture_output=True, check=True)
                    top = importtime_top(["revert", "--repo", str(copy)], environments["cached"], work)
                if top:
                    details[f"importtime {key}"] = top
                    note += "; -X importtime (cumulative): " + ", ".join(f"{n} {t * 1000:.0f} ms" for n, t in top[:5])
            rows.append(C.row(GROUP, label, f"< {target} s", C.fmt_s(value), C.judge(ok), note))
        parsed = sum(p["chars"] for p in instrumented["parses"]) / instrumented["parser_file_chars"]
        rows.append(C.row(GROUP, "characters libcst parses during that apply, as a share of tasks.py", "<= 1.0",
                          f"{parsed:.2f}", C.judge(parsed <= 1.0),
                          f"{len(instrumented['parses'])} pieces (import block, parse_model, forward-loop methods) "
                          f"in {sum(p['seconds'] for p in instrumented['parses']):.2f} s; full-tree visits "
                          f"{instrumented['calls']['Module.visit']['n']}, code generations "
                          f"{instrumented['calls']['Module.code']['n']}"))
    details["load_after"] = C.loadavg()
    return rows, details


def explain_apply(inst: dict) -> str:
    imports = inst["imports"]
    calls = inst["calls"]
    parts = [f"in-process: import libcst {imports['import libcst']:.2f} s",
             f"jinja2 {imports['import jinja2']:.2f} s",
             f"plan.build {calls.get('plan.build', {}).get('seconds', 0):.2f} s "
             f"(parse {sum(p['seconds'] for p in inst['parses']):.2f} s in {len(inst['parses'])} calls, "
             f"full-tree visits {calls['Module.visit']['n']} ({calls['Module.visit']['seconds']:.2f} s), "
             f"codegen {calls['Module.code']['seconds']:.2f} s, "
             f"output check {calls.get('plan._check_output', {}).get('seconds', 0):.2f} s)",
             f"writes {calls.get('commit (writes, fsync)', {}).get('seconds', 0):.2f} s"]
    return ", ".join(parts)


def main() -> None:
    C.script_main(__doc__, run)


if __name__ == "__main__":
    main()
