"""`verify --fit` per n-scale model and task: detect, segment, pose, obb and classify (ultralytics 8.4.190).

On a fresh copy of the newest ultralytics release, `yolopatch apply mobilenetv4 --base yolov8-seg,yolov8-pose,
yolov8-obb,yolov8-cls` writes the recipe's yolov8-mobilenetv4.yaml (detect) and one derived YAML per other
task; the stock yolov8.yaml is added as the reference of what the trainer costs without any patch. One
`yolopatch verify --quick --fit --one-scale --json --yaml ...` (the real console entry, runners on one torch
thread each as verify sets them) checks them all at scale n; the figure per model is the `fit` step's own
seconds from the JSON report: the target's trainer training one epoch on verify's synthetic dataset of the
task (8 images at 64 px, validation on 4, best.pt saved) and a fresh interpreter predicting with best.pt.
The note splits it as the step's message does (training, predicting, CPU seconds of the two interpreters).

If the yolopatch under test has no `apply --base` (the derivation work not merged), the stock task configs
(yolov8-seg/-pose/-obb/-cls.yaml) stand in for the derived ones and the notes say so.

usage: python tests/benchmarks/bench_fit.py [--json OUT] [--quick]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "verify"
TARGET = 30.0
RECIPE = "mobilenetv4"
BASES = ["yolov8-seg", "yolov8-pose", "yolov8-obb", "yolov8-cls"]
STOCK = "ultralytics/cfg/models/v8/{}.yaml"
SPLIT = re.compile(r"\(([\d.]+)s training, ([\d.]+)s predicting; the two interpreters used ([\d.]+)s of CPU time\)")
TIMEOUT = 1800


def yamls_to_fit(copy: Path, derive: bool, quick: bool) -> list[Path]:
    folder = copy / "ultralytics" / "cfg" / "models" / "yolopatch"
    bases = BASES[:1] if quick else BASES
    if derive:
        patched = [folder / f"yolov8-{RECIPE}.yaml"] + [folder / f"{b}-{RECIPE}.yaml" for b in bases]
    else:
        patched = [folder / f"yolov8-{RECIPE}.yaml"] + [copy / STOCK.format(b) for b in bases]
    return patched + [copy / STOCK.format("yolov8")]


def run(quick: bool = False) -> tuple[list[dict], dict]:
    details: dict = {"load_before": C.loadavg()}
    derive = C.cli_supports("apply", "--base")
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="yolopatch-bench-fit-") as tmp:
        copy = C.fresh_ultralytics(Path(tmp) / "ultralytics")
        base_args = ["--base", ",".join(BASES[:1] if quick else BASES)] if derive else []
        done = subprocess.run(C.yolopatch_cmd("apply", RECIPE, *base_args, "--repo", copy), env=env, cwd=tmp,
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"apply exited {done.returncode}: {done.stderr[-2000:]}")
        yamls = yamls_to_fit(copy, derive, quick)
        args = ["verify", "--repo", copy, "--quick", "--fit", "--one-scale", "--json"]
        args += [a for y in yamls for a in ("--yaml", y)]
        start = time.perf_counter()
        done = subprocess.run(C.yolopatch_cmd(*args), env=env, cwd=tmp, capture_output=True, text=True,
                              timeout=TIMEOUT)
        wall = time.perf_counter() - start
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise RuntimeError(f"verify exited {done.returncode} without a JSON report: {done.stderr[-2000:]}") from None
    details.update(verify_wall=wall, exit=done.returncode, report=report, derived=derive)
    stock_name = "yolov8n"
    rows = []
    for model in report.get("models", []):
        fit = model["steps"]["fit"]
        is_stock = model["yaml"].endswith("v8/yolov8.yaml")
        split = SPLIT.search(fit.get("message", ""))
        how = (f"{split.group(1)} s training, {split.group(2)} s predicting, {split.group(3)} s CPU of the two "
               f"interpreters" if split else fit.get("message", "")[:300])
        note = f"fit {fit['status']}; {how}"
        if not derive and not is_stock and RECIPE not in model["name"]:
            note += "; the stock config (no `apply --base` in this yolopatch)"
        if is_stock:
            rows.append(C.row(GROUP, f"`verify --fit`: stock {stock_name} (detect), the trainer's own cost", "-",
                              C.fmt_s(fit["seconds"]), "info", note))
            continue
        ok = fit["status"] == "passed" and fit["seconds"] < TARGET
        rows.append(C.row(GROUP, f"`verify --fit`: {model['name']} ({model['kind']})", f"< {TARGET:.0f} s",
                          C.fmt_s(fit["seconds"]), C.judge(ok), note))
    rows.append(C.row(GROUP, f"that `verify --quick --fit --one-scale` of {len(report.get('models', []))} models, "
                             "wall time", "-", C.fmt_s(wall), "info",
                      f"exit {done.returncode}; import {report.get('checks', {}).get('import', {}).get('seconds')} s; "
                      f"runner torch threads 1 each; load average {details['load_before'][0]:.2f} -> "
                      f"{C.loadavg()[0]:.2f} on {os.cpu_count()} cores"))
    details["load_after"] = C.loadavg()
    return rows, details


def main() -> None:
    C.script_main(__doc__, run)


if __name__ == "__main__":
    main()
