"""On-demand sweep: `yolopatch verify` on every stock model config a release ships, on a patched copy.

For each release: a fresh copy, `apply` of one recipe (default mobilenetv4), then one `verify --yaml` run
over copies of every stock config (ultralytics `cfg/models/**`, YOLOv5 `models/`, `models/segment/`,
`models/hub/`) at its first scale, in shards of at most --per-run configs (`verify --shard`). Prints one
line per config (task, parameters, the status of every step, seconds) and a summary; --json writes it all.
The test suite runs a sample of this (tests/real/test_verify_tasks.py); this is the whole set.

usage:
  python tests/verify_sweep.py ultralytics==8.4.190 [yolov5==7.0.14 upstream==7.0.14 ...]
  ... --quick            # import, names, build, shapes, figures only
  ... --export           # also the export step
  ... --recipe NAME      # the recipe applied first (default mobilenetv4)
  ... --env KEY=VALUE    # set in verify's environment (a user's fix, e.g. TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1)
  ... --json OUT
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upstream  # noqa: E402

STEPS = ("names", "build", "shapes", "figures", "train", "reload", "export")
CELL = {"passed": "ok", "failed": "FAIL", "skipped": "skip", "not-run": "-"}


def checkout(spec: str) -> Path:
    kind, version = spec.split("==")
    return upstream.upstream_yolov5(version) if kind == "upstream" else upstream.pristine(kind, version)


def stock_configs(root: Path) -> list:
    found = []
    for folder in ("ultralytics/cfg/models", "ultralytics/models"):
        if (root / folder).is_dir():
            found += sorted((root / folder).rglob("*.yaml"))
    for base in (root / "yolov5" / "models", root / "models"):
        for sub in ("", "segment", "hub"):
            if (base / sub).is_dir():
                found += sorted(p for p in (base / sub).glob("*.yaml") if p.name != "anchors.yaml")
    return found


def sweep(spec: str, args) -> dict:
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="yolopatch-sweep-") as tmp:
        root = upstream.fresh_copy(checkout(spec), Path(tmp) / "repo")
        applied = subprocess.run([sys.executable, "-m", "yolopatch", "apply", args.recipe, "--repo", str(root)],
                                 capture_output=True, text=True)
        if applied.returncode != 0:
            return {"release": spec, "error": applied.stderr.strip()}
        copies = Path(tmp) / "configs"
        copies.mkdir()
        yamls = []
        for k, path in enumerate(stock_configs(root)):
            copy = copies / f"{k:03d}-{path.parent.name}-{path.name}"   # names repeat across folders
            shutil.copy(path, copy)
            yamls.append(copy)
        env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
        shards = max(1, -(-len(yamls) // args.per_run))
        models, failures, codes = [], [], []
        for k in range(1, shards + 1):
            cmd = [sys.executable, "-m", "yolopatch", "verify", "--repo", str(root), "--one-scale", "--json",
                   "--shard", f"{k}/{shards}"]
            cmd += ["--quick"] if args.quick else []
            cmd += ["--export", "onnx"] if args.export and not args.quick else []
            for yaml in yamls:
                cmd += ["--yaml", str(yaml)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            codes.append(done.returncode)
            try:
                report = json.loads(done.stdout)
            except ValueError:
                failures.append({"model": None, "step": "verify", "message": done.stderr.strip()[-500:]})
                continue
            models += [m for m in report["models"] if m["source"] == "--yaml"]
            failures += report["failures"]
        return {"release": spec, "recipe": args.recipe, "exit_codes": codes, "models": models,
                "failures": failures, "seconds": round(time.time() - started, 1)}


def print_release(result: dict) -> None:
    print(f"\n== {result['release']} ({result.get('seconds', 0)} s, verify exit codes {result.get('exit_codes')})")
    if "error" in result:
        print(f"   apply failed: {result['error']}")
        return
    for m in sorted(result["models"], key=lambda m: Path(m["yaml"]).name):
        cells = " ".join(f"{CELL.get(m['steps'][s]['status'], '?'):<4}" for s in STEPS)
        seconds = sum(entry["seconds"] for entry in m["steps"].values())
        params = f"{m['params']:,}" if m.get("params") is not None else "-"
        print(f"   {Path(m['yaml']).name[4:]:<34} {m['kind']:<9} {params:>12}  {cells}  {seconds:6.1f}s")
    by_status = {}
    for m in result["models"]:
        worst = "failed" if any(e["status"] == "failed" for e in m["steps"].values()) else \
            "not built" if m["steps"]["build"]["status"] == "not-run" else "passed"
        by_status[worst] = by_status.get(worst, 0) + 1
    print(f"   {len(result['models'])} configs: " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())))
    for failure in result["failures"]:
        print(f"   FAIL {failure['model']} {failure['step']}: {failure['message'][:300]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("releases", nargs="+", help="ultralytics==X, yolov5==X or upstream==X")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--export", action="store_true")
    parser.add_argument("--recipe", default="mobilenetv4")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--per-run", type=int, default=20, help="configs per verify run (default 20)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    for spec in args.releases:
        results.append(sweep(spec, args))
        print_release(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0 if all(not r.get("failures") and "error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
