"""IoU-loss recipes across releases, on demand: for each release and each of the seven recipes, a fresh copy
of the release, `apply RECIPE`, `verify` (import, the stock models against the pristine files, and the
`loss` step: the target's own box loss equals the recipe's formula), `revert`, and the tree must be
byte-identical to the pristine copy. Prints one line per (release, recipe) and a summary.

usage:
  python tests/iou_sweep.py                               # the default releases below
  python tests/iou_sweep.py ultralytics==8.0.50 --recipes siou mpdiou
  ... --quick                                             # verify --quick: import and loss only

Releases come from PyPI (tests/upstream.py caches them outside the repository).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upstream  # noqa: E402
from lookalikes import tree_snapshot  # noqa: E402

RECIPES = ("siou", "eiou", "wiou", "mpdiou", "shape-iou", "inner-iou", "focaler-iou")
DEFAULT = ["ultralytics==8.4.190", "yolov5==7.0.14", "upstream==7.0.14", "ultralytics==8.0.50"]


def yolopatch(*args, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def checkout(spec: str) -> Path:
    kind, version = spec.split("==")
    return upstream.upstream_yolov5(version) if kind == "upstream" else upstream.pristine(kind, version)


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"


def run_one(spec: str, recipe: str, quick: bool, options: list[str]) -> dict:
    started = time.time()
    row = {"release": spec, "recipe": recipe}
    with tempfile.TemporaryDirectory() as tmp:
        root = upstream.fresh_copy(checkout(spec), Path(tmp) / "repo")
        before = tree_snapshot(root)
        extra = [arg for option in options for arg in ("--option", option)]
        applied = yolopatch("apply", recipe, *extra, "--repo", root)
        if applied.returncode != 0:
            return {**row, "error": f"apply: {last_line(applied)}"}
        verified = yolopatch("verify", "--repo", root, "--json", *(["--quick"] if quick else []))
        try:
            report = json.loads(verified.stdout)
        except json.JSONDecodeError:
            return {**row, "error": f"verify: {last_line(verified)}"}
        row["verify"] = "passed" if report["passed"] else report["failures"][0]["message"]
        row["loss"] = report["checks"].get("loss", {}).get("message", "")
        row["stock"] = report["checks"].get("stock", {}).get("status", "")
        reverted = yolopatch("revert", "--repo", root)
        row["revert"] = "identical" if reverted.returncode == 0 and tree_snapshot(root) == before else "DIFFERS"
    row["seconds"] = round(time.time() - started, 1)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("releases", nargs="*", help="project==version (ultralytics, yolov5, upstream)")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES))
    parser.add_argument("--option", action="append", default=[], help="passed to apply (NAME=VALUE)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    bad = 0
    for spec in args.releases or DEFAULT:
        for recipe in args.recipes:
            row = run_one(spec, recipe, args.quick, args.option)
            ok = "error" not in row and row["verify"] == "passed" and row["revert"] == "identical"
            bad += not ok
            detail = row.get("error") or (f"verify {row['verify']}; stock {row['stock']}; revert {row['revert']}; "
                                          f"{row['seconds']} s; loss: {row['loss']}")
            print(f"{'ok  ' if ok else 'FAIL'} {spec:<22} {recipe:<12} {detail}", flush=True)
    print(f"{'all passed' if not bad else f'{bad} failed'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
