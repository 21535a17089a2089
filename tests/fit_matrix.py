"""`verify --fit` across releases and tasks, on demand (the test suite runs two fits on the newest ultralytics:
tests/real/test_trainer_real.py). For each release: a fresh copy, `apply` of the recipes, then
`verify --quick --fit --one-scale` (every YAML the recipes wrote, at its first scale); with --tasks, the stock
segment / pose / obb / classify / YOLO26 / RT-DETR configs a release ships (YOLOv5: its segmentation model). Prints one row per
model: the fit step's result, its seconds (and the trainer's and predictor's share), the CPU time of its two
interpreters (on one thread, about the wall time on an idle machine) and the machine's load.

usage:
  python tests/fit_matrix.py                         # mobilenetv4 on the releases below
  python tests/fit_matrix.py --tasks                 # and the stock configs of every task (newest ultralytics)
  python tests/fit_matrix.py --recipe slimneck ultralytics==8.4.190
  ... --json                                         # the rows as JSON

YOLOv5 trains in the environment its package needs (tests/trainer_env.py). Releases come from PyPI
(tests/upstream.py caches them outside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trainer_env  # noqa: E402
import upstream  # noqa: E402

RELEASES = [f"ultralytics=={v}" for v in (upstream.OLDEST_ULTRALYTICS, upstream.MIDDLE_ULTRALYTICS,
                                          upstream.NEWEST_ULTRALYTICS)] + ["yolov5==7.0.14"]
# the stock configs --tasks adds (those the release ships), relative to the checkout
STOCK_TASK_CONFIGS = {
    "ultralytics": tuple(f"ultralytics/{folder}/{c}" for folder in ("cfg/models", "models") for c in (   # 8.0.x: models/
        "v8/yolov8-seg.yaml", "v8/yolov8-pose.yaml", "v8/yolov8-obb.yaml", "v8/yolov8-cls.yaml", "26/yolo26.yaml",
        "rt-detr/rtdetr-l.yaml")),
    "yolov5": ("yolov5/models/segment/yolov5s-seg.yaml",),
    "upstream": ("models/segment/yolov5s-seg.yaml",),
}
SPLIT = re.compile(r"\(([\d.]+)s training, ([\d.]+)s predicting; the two interpreters used ([\d.]+)s of CPU time\)")


def checkout(spec: str) -> Path:
    kind, version = spec.split("==")
    return upstream.upstream_yolov5(version) if kind == "upstream" else upstream.pristine(kind, version)


def environment(spec: str) -> dict:
    """The user's environment, fixed as verify's messages say (trainer_env.users_fixes)."""
    return trainer_env.users_fixes(spec, dict(os.environ))


def yolopatch(args: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=7200)


def rows_of(spec: str, report: dict) -> list:
    rows = []
    for model in report.get("models", []):
        fit = model["steps"]["fit"]
        if fit["status"] == "not-run":
            continue
        split = SPLIT.search(fit["message"])
        failed = [s for s, e in model["steps"].items() if e["status"] == "failed"]
        rows.append({"release": spec, "model": model["name"], "task": model["kind"], "fit": fit["status"],
                     "seconds": fit["seconds"], "train_seconds": float(split.group(1)) if split else None,
                     "predict_seconds": float(split.group(2)) if split else None,
                     "cpu_seconds": float(split.group(3)) if split else None,
                     "message": fit["message"] if fit["status"] != "skipped" else
                     f"{failed[0]}: {model['steps'][failed[0]]['message']}" if failed else fit["message"]})
    return rows


def run_release(spec: str, recipes: list, tasks: bool) -> list:
    env = environment(spec)
    with tempfile.TemporaryDirectory(prefix="yolopatch-fit-") as tmp:
        root = upstream.fresh_copy(checkout(spec), Path(tmp) / "repo")
        applied = yolopatch(["apply", *recipes, "--repo", root], env)
        if applied.returncode != 0:
            return [{"release": spec, "model": "-", "fit": "apply failed", "message": applied.stderr.strip()[-300:]}]
        configs = STOCK_TASK_CONFIGS[spec.split("==")[0]] if tasks else ()
        extra = [a for config in configs if (root / config).is_file() for a in ("--yaml", root / config)]
        args = ["verify", "--repo", root, "--quick", "--fit", "--one-scale", "--json", *extra]
        if extra:
            args += [a for recipe in recipes for a in ("--recipe", recipe)]
        done = yolopatch(args, env)
        try:
            report = json.loads(done.stdout)
        except ValueError:
            return [{"release": spec, "model": "-", "fit": "verify failed", "message": done.stderr.strip()[-300:]}]
        return rows_of(spec, report)


def table(rows: list) -> str:
    lines = ["| release | model | task | fit | seconds | training | predicting | CPU seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['release']} | {r['model']} | {r.get('task', '')} | {r['fit']} | {r.get('seconds', '')} "
                     f"| {r.get('train_seconds') or ''} | {r.get('predict_seconds') or ''} | {r.get('cpu_seconds') or ''} |")
    failures = [f"{r['release']} {r['model']}: {r['message']}" for r in rows if r["fit"] != "passed"]
    return "\n".join(lines + ([""] + failures if failures else []))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("releases", nargs="*", help="ultralytics==X, yolov5==X or upstream==X (default: the list)")
    parser.add_argument("--recipe", action="append", help="recipes to apply (default: mobilenetv4)")
    parser.add_argument("--tasks", action="store_true", help="also the stock configs of every task")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started, load = time.perf_counter(), os.getloadavg()[0]
    rows = []
    for spec in args.releases or RELEASES:
        rows += run_release(spec, args.recipe or ["mobilenetv4"], args.tasks)
        print(f"{spec}: done", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(table(rows))
        print(f"\n{len(rows)} fits in {time.perf_counter() - started:.0f}s; load average {load:.1f} at the start, "
              f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores "
              f"(YOLOPATCH_VERIFY_THREADS={os.environ.get('YOLOPATCH_VERIFY_THREADS', 'unset')})")
    return 0 if all(r["fit"] == "passed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
