"""Derived YAMLs through verify: every recipe with a [derive] table applied with `--base` to a sample of stock
configs of a release (the newest detect configs, a segment and a pose config), `yolopatch verify --quick
--one-scale` on every derived YAML, then revert, byte for byte. Also counts, over every stock config of the
release, the bases each recipe derives onto (`yolopatch bases`).

Two larger runs share the code: `--base all` (every stock config; with `--covered`, the recipes of
tests/coverage.py: covered_recipes), and `--base per-task --ladder [--fit]`, one config per (family, task)
through the whole ladder (train, amp, fuse, reload; with --fit the target's own trainer), listed model by
model.

Recipes are applied in groups holding at most one recipe of each derivation kind (one backbone, one neck
block, one attention, …), so each group also writes, per base, one YAML combining its recipes; those are
verified too and counted apart.

usage:
  python tests/derive_verify.py                                  # ultralytics 8.4.190, print the table
  python tests/derive_verify.py --write-readme                   # put it between the README's markers
  python tests/derive_verify.py yolov5==7.0.14 upstream==7.0.14 --recipe p2 --base yolov5s
  python tests/derive_verify.py ultralytics==8.4.190 yolov5==7.0.14 upstream==7.0.14 --covered --base all \
      --json all.json --write-readme                             # every derived YAML: about 25 min a release
  python tests/derive_verify.py ... --recipe mobilenetv4 --base per-task --ladder --fit --write-readme
  python tests/derive_verify.py --render a.json b.json --write-readme   # the table from kept runs

On two shared cores the default run takes about half an hour; CI verifies a sample
(tests/real/test_derive_real.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trainer_env  # noqa: E402
import upstream  # noqa: E402
from lookalikes import tree_snapshot  # noqa: E402
from yolopatch import bases, manifest, recipes, targets  # noqa: E402
from yolopatch.derive.facts import KINDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# README blocks, one per kind of run: the sample, every base, the per-task ladder.
BLOCKS = {"sample": "derive-verify", "all": "derive-verify-all", "per-task": "derive-ladder"}
# The sample: the newest detect configs, then one segment and one pose config (the first found of each list).
SAMPLE = {"ultralytics": [["yolo11", "yolov8"], ["yolo26"], ["yolo11-seg", "yolov8-seg"], ["yolo26-pose", "yolov8-pose"]],
          "yolov5": [["yolov5s"], ["yolov5s-seg"]]}


def yolopatch(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True, text=True,
                          env=env)


def checkout(spec: str) -> Path:
    kind, version = spec.split("==")
    return upstream.upstream_yolov5(version) if kind == "upstream" else upstream.pristine(kind, version)


def groups(chosen: list) -> list:
    """The recipes in groups of at most one per derivation kind, as many groups as the largest kind."""
    by_kind = {kind: [r for r in chosen if r.derive.kind == kind] for kind in KINDS}
    count = max((len(found) for found in by_kind.values()), default=0)
    return [[found[i] for found in by_kind.values() if i < len(found)] for i in range(count)]


def covered_recipes(names: list) -> list:
    """The recipes of the coverage runs: every backbone, slimneck and bifpn (only `names`, when given)."""
    chosen = [r for r in recipes.load_all().values() if r.derive.kind == "backbone" or r.name in ("slimneck", "bifpn")]
    return [r for r in chosen if not names or r.name in names]


def derivable_recipes(target, names: list = ()) -> list:
    """The shipped recipes with a [derive] table for the target's family (only `names`, when given)."""
    return [r for r in recipes.load_all().values() if r.derive.kind in KINDS and target.family in r.targets
            and (not names or r.name in names)]


def verify_env() -> dict:
    """One torch thread per verify runner (two shared cores), and this checkout's yolopatch first."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "YOLOPATCH_VERIFY_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def per_task_bases(report: dict) -> dict:
    """(family, task) -> the config with the shortest name that some recipe of the report derives onto."""
    chosen = {}
    for entry in sorted(report["bases"], key=lambda e: (len(e["name"]), e["name"])):
        if any(result["derives"] for result in entry["recipes"].values()):
            chosen.setdefault((entry["family"], entry["task"]), entry["name"])
    return chosen


def mode_of(wanted: list) -> str:
    return wanted[0] if wanted in (["all"], ["per-task"]) else "sample"


def sample_bases(report: dict, family: str, wanted: list) -> list:
    names = {entry["name"] for entry in report["bases"]}
    if mode_of(wanted) == "all":
        return [entry["name"] for entry in report["bases"]]
    if mode_of(wanted) == "per-task":
        return list(per_task_bases(report).values())
    if wanted:
        return [name for name in wanted if name in names]
    return [next(name for name in options if name in names) for options in SAMPLE[family]
            if any(name in names for name in options)]


def passed(model: dict) -> bool:
    """Built, and no step failed (--quick leaves the later steps not run)."""
    steps = model["steps"]
    return steps.get("build", {}).get("status") == "passed" and all(
        step.get("status") != "failed" for step in steps.values())


def run_group(root: Path, target, group: list, chosen_bases: list, report: dict, entries: dict,
              combined: dict, env: dict, ladder: tuple = ("--quick",), models_out: list = None) -> None:
    """apply the group with --base, verify every derived YAML (`ladder`: verify's options for the steps), revert.
    Counts into `entries` (per recipe) and `combined` (the YAMLs combining the group); `models_out` collects
    each model's record."""
    results = {e["name"]: e["recipes"] for e in report["bases"] if e["name"] in chosen_bases}
    singles = {}  # derived YAML file name -> recipe
    for base, by_recipe in results.items():
        for recipe in group:
            if by_recipe[recipe.name]["derives"]:
                singles[by_recipe[recipe.name]["yaml"]] = recipe.name
    before = tree_snapshot(root)
    # every stock config: `--base all`, which skips the bases none of the group derives onto (a named base
    # must take one of them)
    every = set(chosen_bases) == {e["name"] for e in report["bases"]}
    base_arg = "all" if every else ",".join(chosen_bases)
    applied = yolopatch("apply", *[r.name for r in group], "--base", base_arg, "--repo", root, env=env)
    if applied.returncode != 0:
        for recipe in group:
            entries[recipe.name]["failures"].append(f"apply: {applied.stderr.strip().splitlines()[-1]}")
        return
    state = manifest.load(root)
    derived = sorted({rel for recipe in group for rel in bases.derived_paths(target, state, group, recipe.name)})
    args = [a for rel in derived for a in ("--yaml", root / rel)]
    verified = yolopatch("verify", "--repo", root, *ladder, "--one-scale", "--json", *args, env=env)
    try:
        models = json.loads(verified.stdout)["models"]
    except (ValueError, KeyError):
        for recipe in group:
            entries[recipe.name]["failures"].append(f"verify: {verified.stderr.strip()[-300:]}")
        models = []
    for model in models:
        name = Path(model["yaml"]).name
        ok = passed(model)
        failed = [f"{step}: {info.get('message', '')[:160]}" for step, info in model["steps"].items()
                  if info.get("status") == "failed"]
        if name in singles:
            entry = entries[singles[name]]
        else:
            entry = combined.setdefault("+".join(r.name for r in group), {"verified": 0, "passed": 0, "failures": []})
        entry["verified"] += 1
        entry["passed"] += ok
        entry["failures"] += [f"{name}: {f}" for f in failed]
        if models_out is not None:
            models_out.append({"yaml": name, "kind": model.get("kind"), "passed": ok,
                               "steps": {step: info.get("status") for step, info in model["steps"].items()},
                               "seconds": round(sum(info.get("seconds", 0) for info in model["steps"].values()))})
    reverted = yolopatch("revert", "--repo", root, env=env)
    if reverted.returncode != 0 or tree_snapshot(root) != before:
        for recipe in group:
            entries[recipe.name]["failures"].append("revert: the tree differs from before")


def run_release(spec: str, names: list, wanted_bases: list, ladder: tuple, progress) -> dict:
    title = spec.replace("==", " ").replace("upstream", "yolov5 upstream layout")
    with tempfile.TemporaryDirectory() as tmp:
        root = upstream.fresh_copy(checkout(spec), Path(tmp) / "repo")
        env = verify_env()
        if "--quick" not in ladder:   # training and reloading meet this machine's faults in older releases
            env = trainer_env.users_fixes(spec, env)
        target = targets.detect(root)
        chosen = derivable_recipes(target, names)
        report = bases.report(target, None, chosen)
        sample = sample_bases(report, target.family, wanted_bases)
        entries = {}
        for recipe in chosen:
            results = [e["recipes"][recipe.name] for e in report["bases"]]
            on_sample = [e["recipes"][recipe.name] for e in report["bases"] if e["name"] in sample]
            entries[recipe.name] = {"recipe": recipe.name, "kind": recipe.derive.kind, "listed": len(results),
                                    "derives": sum(r["derives"] for r in results),
                                    "sample": sum(r["derives"] for r in on_sample), "verified": 0, "passed": 0,
                                    "failures": []}
        combined, models = {}, []
        for group in groups(chosen):
            started = time.time()
            run_group(root, target, group, sample, report, entries, combined, env, ladder, models)
            progress(f"{title} {' '.join(r.name for r in group)}: "
                     + ", ".join(f"{r.name} {entries[r.name]['passed']}/{entries[r.name]['sample']}" for r in group)
                     + f" in {time.time() - started:.0f}s")
    bases_of = {e["name"]: (e["family"], e["task"]) for e in report["bases"]}
    return {"release": title, "mode": mode_of(wanted_bases), "ladder": list(ladder), "sample": sample,
            "bases": {name: bases_of[name] for name in sample}, "recipes": list(entries.values()),
            "combined": combined, "models": models}


def ladder_words(ladder: list) -> str:
    words = "`verify " + " ".join([*ladder, "--one-scale"]) + "`"
    return words if "--quick" in ladder else words + " (the whole ladder)"


def base_of(yaml_name: str, names: list) -> str:
    """The stock config a derived YAML was written from: the longest base name it starts with."""
    return max((n for n in names if yaml_name.startswith(n + "-")), key=len, default="?")


def ladder_markdown(row: dict) -> list:
    """One line per model: the per-task run."""
    applied = " + ".join(e["recipe"] for e in row["recipes"])
    out = [f"{row['release']}, {applied}: one config per (family, task), derived YAMLs through "
           f"{ladder_words(row['ladder'])}.", "",
           "| family | task | base | derived YAML | steps passed | result | seconds |", "|---|---|---|---|---|---|---|"]
    placed = []   # (family, task, base, model)
    for model in row["models"]:
        base = base_of(model["yaml"], row["sample"])
        placed.append((*row["bases"].get(base, ("?", "?")), base, model))
    for family, task, base, model in sorted(placed, key=lambda found: found[:3]):
        good = [s for s, status in model["steps"].items() if status == "passed"]
        bad = [s for s, status in model["steps"].items() if status == "failed"]
        out.append(f"| {family} | {task} | {base} | {model['yaml']} | {', '.join(good)} | "
                   f"{'pass' if model['passed'] else 'FAIL: ' + ', '.join(bad)} | {model['seconds']} |")
    good = sum(m["passed"] for m in row["models"])
    out += ["", f"{good} of {len(row['models'])} models passed."]
    return out


def counts_markdown(row: dict) -> list:
    """Per recipe: bases derived, YAMLs verified and passed (the sample run and the every-base run)."""
    where = (f"every stock config ({len(row['sample'])})" if row["mode"] == "all"
             else f"the sample ({', '.join(row['sample'])})")
    out = [f"{row['release']}: bases a recipe derives onto, of every stock config; derived YAMLs on {where} "
           f"through {ladder_words(row['ladder'])}.", "",
           "| recipe | derivation | bases derived / listed | YAMLs derived there | verified | passed |",
           "|---|---|---|---|---|---|"]
    for e in row["recipes"]:
        out.append(f"| {e['recipe']} | {e['kind']} | {e['derives']} / {e['listed']} | {e['sample']} | "
                   f"{e['verified']} | {e['passed']} |")
    totals = [sum(e[k] for e in row["recipes"]) for k in ("derives", "listed", "sample", "verified", "passed")]
    out.append(f"| **all** | | **{totals[0]} / {totals[1]}** | **{totals[2]}** | **{totals[3]}** | **{totals[4]}** |")
    if row["combined"]:
        verified = sum(c["verified"] for c in row["combined"].values())
        good = sum(c["passed"] for c in row["combined"].values())
        out += ["", f"YAMLs combining the recipes of a group (at most one of each derivation kind): "
                    f"{good} of {verified} passed."]
    return out


def markdown(rows: list) -> str:
    out = []
    for row in rows:
        out += ladder_markdown(row) if row["mode"] == "per-task" else counts_markdown(row)
        failures = [f"- {e['recipe']}: {f}" for e in row["recipes"] for f in e["failures"]]
        failures += [f"- {name}: {f}" for name, c in row["combined"].items() for f in c["failures"]]
        if failures:
            out += ["", "Failures:", "", *failures]
        out.append("")
    return "\n".join(out).rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("releases", nargs="*", help="ultralytics==X, yolov5==X or upstream==X")
    parser.add_argument("--recipe", action="append", default=[], help="only this recipe (repeatable)")
    parser.add_argument("--base", action="append", default=[],
                        help="sample base (repeatable; default: per family), `all`, or `per-task`")
    parser.add_argument("--covered", action="store_true",
                        help="the recipes of tests/coverage.py (backbones, slimneck, bifpn)")
    parser.add_argument("--ladder", action="store_true", help="the whole ladder instead of --quick")
    parser.add_argument("--fit", action="store_true", help="with --ladder: also verify --fit")
    parser.add_argument("--write-readme", action="store_true", help="write the table into README.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here (after each release)")
    parser.add_argument("--render", type=Path, nargs="+",
                        help="measure nothing: the table from files --json wrote (runs of one kind, in order)")
    args = parser.parse_args()
    if args.render:
        rows = [row for kept in args.render for row in json.loads(kept.read_text())]
        args.base = {"all": ["all"], "per-task": ["per-task"]}.get(rows[0]["mode"], []) if rows else []
    else:
        names = args.recipe + ([r.name for r in covered_recipes([])] if args.covered else [])
        ladder = (("--fit",) if args.fit else ()) if args.ladder else ("--quick",)
        rows = []
        for spec in args.releases or [f"ultralytics=={upstream.NEWEST_ULTRALYTICS}"]:
            rows.append(run_release(spec, names, args.base, ladder, lambda m: print(m, file=sys.stderr, flush=True)))
            if args.json:   # after each release: a partial run keeps
                args.json.write_text(json.dumps(rows, indent=1))
    table = markdown(rows)
    print(table)
    if args.write_readme:
        readme = ROOT / "README.md"
        text = readme.read_text(encoding="utf-8")
        block = BLOCKS[mode_of(args.base)]
        begin = f"<!-- {block}:begin (generated by `python tests/derive_verify.py --write-readme`) -->"
        end = f"<!-- {block}:end -->"
        if begin not in text or end not in text:
            sys.exit(f"README.md has no {begin} ... {end} markers")
        before, rest = text.split(begin, 1)
        readme.write_text(before + begin + "\n" + table + "\n" + end + rest.split(end, 1)[1], encoding="utf-8")
    failed = any(e["failures"] or e["passed"] < e["sample"] for row in rows for e in row["recipes"])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
