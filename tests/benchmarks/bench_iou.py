"""IoU-loss recipes on CPU: the box-loss time of each variant per batch, against the target's stock CIoU.

The box term of the detection loss at its largest: every anchor of a 640x640 image foreground (8,400
anchors: 80x80 + 40x40 + 20x20) for a batch of 16, i.e. 134,400 (prediction, target) pairs in grid-unit
corner form, as ultralytics' BboxLoss passes them. One step is the forward of the IoU call, `(1 - iou)`
summed, and the backward to the predicted boxes. The baseline is the target's own
`bbox_iou(..., xywh=False, CIoU=True)` from the newest ultralytics release (tests/upstream.py), imported
from that checkout; each recipe runs the function its edit calls (recipes/_shared/yolopatch_iou.py) with
the recipe's default options. In one fresh subprocess with the benchmark thread count, median of N
alternating runs after warm-up; the ratio is variant / CIoU.

usage: python tests/benchmarks/bench_iou.py [--json OUT] [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "modules"
SCRIPT = Path(__file__).resolve()
ANCHORS, BATCH = 8400, 16
TARGET_RATIO = 2.0   # a recipe's box loss at most twice the stock CIoU's time
WARMUP, RUNS = 3, 15
# recipe -> (function of yolopatch_iou, keyword arguments: the recipe's defaults)
VARIANTS = {
    "siou": ("siou", {"theta": 4.0}),
    "eiou": ("eiou", {}),
    "wiou": ("wiou_v3", {"alpha": 1.9, "delta": 3.0, "half_life": 7000}),
    "mpdiou": ("mpdiou", {"image_size": (80.0, 80.0)}),
    "shape-iou": ("shape_iou", {"scale": 0.0}),
    "inner-iou": ("inner_iou", {"ratio": 0.7, "base": "none"}),
    "focaler-iou": ("focaler_iou", {"d": 0.0, "u": 0.95, "base": "none"}),
}


def boxes(torch, n: int):
    """n pairs in grid units: targets anywhere on an 80x80 grid, predictions near them."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g) * 70
    wh = torch.rand(n, 2, generator=g) * 9 + 0.5
    target = torch.cat([xy, xy + wh], 1)
    pred = target + torch.randn(n, 4, generator=g) * 0.8
    pred[:, 2:] = torch.maximum(pred[:, 2:], pred[:, :2] + 0.1)
    return pred, target


def worker(spec: dict) -> dict:
    torch = C.set_torch_threads()
    iou = C.load_recipe_module("_shared", "yolopatch_iou.py")
    sys.path.insert(0, spec["target_root"])
    from ultralytics.utils.metrics import bbox_iou   # the target's own, from the pristine checkout

    pred, target = boxes(torch, ANCHORS * BATCH)
    calls = {"CIoU (target)": lambda p: bbox_iou(p, target, xywh=False, CIoU=True)}
    for name, (function, kwargs) in VARIANTS.items():
        calls[name] = (lambda f, kw: lambda p: f(p, target, xywh=False, **kw))(getattr(iou, function), kwargs)

    def step(call):
        p = pred.clone().requires_grad_(True)
        (1 - call(p)).sum().backward()

    times = {name: [] for name in calls}
    names = list(calls)
    for i in range(spec["warmup"] + spec["runs"]):
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            step(calls[name])
            if i >= spec["warmup"]:
                times[name].append(time.perf_counter() - start)
    iou.reset_wiou_running_mean()
    return {"median": {name: C.median(v) for name, v in times.items()}}


def run(quick: bool = False) -> tuple[list[dict], dict]:
    root, version = C.newest_ultralytics()
    details: dict = {"load_before": C.loadavg(), "threads": C.TORCH_THREADS, "target": f"ultralytics {version}"}
    r = C.run_worker(SCRIPT, {"target_root": str(root), "warmup": 1 if quick else WARMUP, "runs": 3 if quick else RUNS})
    details.update(r)
    m = r["median"]
    base = m["CIoU (target)"]
    rows = [C.row(GROUP, f"box loss, stock CIoU of ultralytics {version}: {ANCHORS} anchors x batch {BATCH}, "
                         "forward + backward", "-", C.fmt_ms(base), "info",
                  f"the target's bbox_iou(xywh=False, CIoU=True); torch threads {C.TORCH_THREADS}")]
    for name in VARIANTS:
        ratio = m[name] / base
        rows.append(C.row(GROUP, f"box loss, {name} vs stock CIoU of ultralytics {version} ({ANCHORS} x {BATCH})",
                          f"<= {TARGET_RATIO:.1f}x", f"{ratio:.2f}x ({C.fmt_ms(m[name])})", C.judge(ratio <= TARGET_RATIO),
                          f"yolopatch_iou.{VARIANTS[name][0]} with the recipe's defaults"))
    details["load_after"] = C.loadavg()
    return rows, details


def main() -> None:
    C.script_main(__doc__, run, worker)


if __name__ == "__main__":
    main()
