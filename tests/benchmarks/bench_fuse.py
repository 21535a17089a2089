"""Fused predict latency: every backbone recipe's YOLOv8n model after the patched target's fuse(), against
the same model with every conv + BatchNorm pair folded by hand, and against the stock yolov8n fused.

Every shipped recipe with a `backbone` module (recipes/*/recipe.toml) is applied (one `yolopatch apply`) to
a fresh copy of the newest ultralytics release; its yolov8-<recipe>.yaml is built at scale n through
ultralytics' DetectionModel in one subprocess that imports the copy (PYTHONPATH=<copy>), seeded, eval mode.
Per model, three copies:

  * fuse()   `model.fuse()`, the patched target's own (what ultralytics' predictor and validator call);
  * by hand  the unfused model with every conv + BatchNorm pair folded by this script, independently of
             how the module keeps the pair: one forward pass with hooks finds every BatchNorm whose input
             is the very tensor a Conv2d returned (each called once), folds the BatchNorm's running
             statistics into that conv's weight and bias (in float64) and puts an nn.Identity in the
             BatchNorm's place (timm's BatchNormAct2d keeps its activation). The folded model's output
             must equal the unfused one (relative difference < 1e-4), else the row says so;
  * stock    the stock yolov8.yaml at scale n, fused by the same fuse().

Latency: eval forward of one 1x3x640x640 image under torch.inference_mode(), torch threads 1 (fixed, not
calibrated: one thread measures the work the model does, not the scheduler), `time.perf_counter()`; one
warm-up forward each, then rounds of (fuse(), by hand, stock) alternating, median per copy. The ratio
fuse() / by hand is judged (<= 1.03: fuse() leaves no foldable pair that costs time); the ratio to the
stock yolov8n fused is the trade a user makes at inference. The notes give the BatchNorm layers left in
each copy (a BatchNorm that follows no conv, such as MobileNetV4-hybrid's attention pre-norm, is left by
both).

usage: python tests/benchmarks/bench_fuse.py [--json OUT] [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "fuse"
SCRIPT = Path(__file__).resolve()
TARGET_RATIO = 1.03
SIZE = 640
ROUNDS, QUICK_ROUNDS = 7, 3
CHECK_SIZE = 256      # the input of the hook pass and of the folded-equals-unfused check
TOLERANCE = 1e-4
STOCK = "cfg/models/v8/yolov8.yaml"


# ---------------------------------------------------------------------------------------------------------
# Worker: runs in the patched copy's interpreter environment
# ---------------------------------------------------------------------------------------------------------
def conv_bn_pairs(model, torch, x) -> list:
    """(conv name, BatchNorm name) of every BatchNorm fed directly by a Conv2d's output, found by one
    forward pass: a pair only when both modules run once and the BatchNorm's input is the conv's output
    tensor itself (no op in between)."""
    names = {m: n for n, m in model.named_modules()}
    produced, calls, pairs = {}, {}, []
    handles = []

    def after_conv(module, _inputs, output):
        calls[module] = calls.get(module, 0) + 1
        produced[id(output)] = (module, output)  # keep the tensor alive so its id stays unique

    def before_bn(module, inputs):
        calls[module] = calls.get(module, 0) + 1
        found = produced.get(id(inputs[0]))
        if found is not None and found[1] is inputs[0]:
            pairs.append((found[0], module))

    for m in model.modules():
        if type(m) is torch.nn.Conv2d:
            handles.append(m.register_forward_hook(after_conv))
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_pre_hook(before_bn))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [(names[c], names[b]) for c, b in pairs if calls[c] == 1 and calls[b] == 1
            and b.track_running_stats and b.running_mean is not None and c.out_channels == b.num_features]


def fold_by_hand(model, torch, pairs) -> int:
    modules = dict(model.named_modules())
    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        with torch.no_grad():
            scale = torch.rsqrt(bn.running_var.double() + bn.eps)
            if bn.affine:
                scale = scale * bn.weight.double()
            shift = -bn.running_mean.double() * scale
            if bn.affine:
                shift = shift + bn.bias.double()
            if conv.bias is not None:
                shift = shift + conv.bias.double() * scale
            conv.weight.copy_((conv.weight.double() * scale.reshape(-1, 1, 1, 1)).float())
            conv.bias = torch.nn.Parameter(shift.float(), requires_grad=False)
        # timm's BatchNormAct2d applies its drop and activation after the normalisation: keep them
        keep = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, torch.nn.Module)]
        replacement = torch.nn.Sequential(*keep) if keep else torch.nn.Identity()
        parent_name, _, attr = bn_name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        if isinstance(parent, (torch.nn.Sequential, torch.nn.ModuleList)) and attr.isdigit():
            parent[int(attr)] = replacement
        else:
            setattr(parent, attr, replacement)
    return len(pairs)


def batchnorm_count(model, torch) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def main_output(out, torch):
    while isinstance(out, (list, tuple)):
        out = out[0]
    return out


def relative_difference(a, b, torch) -> float:
    a, b = main_output(a, torch), main_output(b, torch)
    return float((a - b).abs().max() / (1 + b.abs().max()))


def three_copies(item: dict, torch, tasks) -> dict:
    from bench_models import build  # the same YAML-as-dict build as the trade table

    torch.manual_seed(0)
    model = build(item["path"], "detect", "n", tasks)
    # Random BatchNorm statistics: at initialisation mean 0 / var 1 makes a wrong fold invisible.
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 3, CHECK_SIZE, CHECK_SIZE, generator=gen)
    with torch.inference_mode():
        reference = model(x)
    before = batchnorm_count(model, torch)
    pairs = conv_bn_pairs(model, torch, x)
    hand = model
    folded = fold_by_hand(hand, torch, pairs)
    with torch.inference_mode():
        hand_diff = relative_difference(hand(x), reference, torch)
    fused = build(item["path"], "detect", "n", tasks)
    fused.load_state_dict(state)
    fused = fused.eval()
    result = fused.fuse(verbose=False)
    fused = result if isinstance(result, torch.nn.Module) else fused
    with torch.inference_mode():
        fused_diff = relative_difference(fused(x), reference, torch)
    return {"fused": fused.eval(), "hand": hand.eval(), "bn_before": before, "bn_fused": batchnorm_count(fused, torch),
            "bn_hand": batchnorm_count(hand, torch), "pairs_by_hand": folded, "hand_diff": hand_diff,
            "fused_diff": fused_diff, "params": sum(p.numel() for p in model.parameters())}


def worker(spec: dict) -> None:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(C.HERE))
    from bench_models import build
    from ultralytics.nn import tasks

    torch.manual_seed(0)
    stock = build(spec["stock"], "detect", "n", tasks)
    stock = stock.fuse(verbose=False) or stock
    x = torch.rand(1, 3, SIZE, SIZE)
    for item in spec["items"]:
        try:
            copies = three_copies(item, torch, tasks)
            models = {"fused": copies.pop("fused"), "hand": copies.pop("hand"), "stock": stock}
            times = {k: [] for k in models}
            with torch.inference_mode():
                for name, model in models.items():
                    model(x)  # warm-up
                for _ in range(spec["rounds"]):
                    for name, model in models.items():
                        start = time.perf_counter()
                        model(x)
                        times[name].append(time.perf_counter() - start)
            result = dict(copies, ok=True, times=times, median={k: C.median(v) for k, v in times.items()})
        except Exception as exc:  # noqa: BLE001 - report and go on
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        result.update(name=item["name"], recipe=item["recipe"], load=C.loadavg())
        C.report(result)


# ---------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------
def backbone_recipes() -> list[str]:
    """Shipped recipes for ultralytics with at least one module of role `backbone`."""
    import tomllib

    names = []
    for toml in sorted(C.RECIPES.glob("*/recipe.toml")):
        data = tomllib.loads(toml.read_text(encoding="utf-8"))
        if "ultralytics" in data.get("targets", []) and any(m.get("role") == "backbone" for m in data.get("modules", [])):
            names.append(data["name"])
    return names


def run(quick: bool = False) -> tuple[list[dict], dict]:
    rounds = QUICK_ROUNDS if quick else ROUNDS
    details: dict = {"load_before": C.loadavg(), "rounds": rounds, "threads": 1}
    recipes = backbone_recipes()
    if quick:
        recipes = [r for r in recipes if r in ("mobilenetv4", "shufflenetv2")] or recipes[:2]
    with tempfile.TemporaryDirectory(prefix="yolopatch-bench-fuse-") as tmp:
        copy = C.fresh_ultralytics(Path(tmp) / "ultralytics")
        done = subprocess.run([C.PYTHON, "-m", "yolopatch", "apply", *recipes, "--repo", str(copy)],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"yolopatch apply {' '.join(recipes)} exited {done.returncode}: {done.stderr[-2000:]}")
        folder = copy / "ultralytics" / "cfg" / "models" / "yolopatch"
        items = [{"name": f"yolov8n-{r}", "recipe": r, "path": str(folder / f"yolov8-{r}.yaml")} for r in recipes
                 if (folder / f"yolov8-{r}.yaml").is_file()]
        spec = {"stock": str(copy / "ultralytics" / STOCK), "items": items, "rounds": rounds}
        env = C.upstream().target_env(copy)
        env.update(YOLO_VERBOSE="False", YOLO_CONFIG_DIR=str(Path(tmp) / "config"), OMP_NUM_THREADS="1")
        proc = subprocess.Popen([C.PYTHON, str(SCRIPT), "--worker", json.dumps(spec)], env=env, cwd=tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        results = []
        for line in proc.stdout:
            if line.startswith(C.RESULT_PREFIX):
                r = json.loads(line[len(C.RESULT_PREFIX):])
                results.append(r)
                print(f"  {r['name']}: " + (f"{r['median']['fused'] / r['median']['hand']:.3f}" if r.get("ok")
                                             else r.get("error", "")), file=sys.stderr, flush=True)
        err = proc.stderr.read()
        proc.wait()
    if len(results) != len(items):
        raise RuntimeError(f"fuse worker exited {proc.returncode} after {len(results)} of {len(items)}: {err[-3000:]}")
    details["recipes"], details["models"] = recipes, results
    rows = []
    stock_times = [t for r in results if r.get("ok") for t in r["times"]["stock"]]
    for r in results:
        if not r.get("ok"):
            rows.append(C.row(GROUP, f"{r['name']}: fuse() vs every pair folded by hand", f"<= {TARGET_RATIO}",
                              "failed", "MISS", r["error"]))
            continue
        m = r["median"]
        ratio = m["fused"] / m["hand"]
        exact = r["hand_diff"] < TOLERANCE and r["fused_diff"] < TOLERANCE
        note = (f"{C.fmt_ms(m['fused'])} vs {C.fmt_ms(m['hand'])}; BatchNorm layers {r['bn_before']} unfused, left "
                f"by fuse() {r['bn_fused']}, by hand {r['bn_hand']} ({r['pairs_by_hand']} pairs folded); output vs "
                f"unfused: fuse() {r['fused_diff']:.1e}, by hand {r['hand_diff']:.1e}; median of {len(r['times']['hand'])}, "
                f"torch threads 1, load average {r['load'][0]:.2f}")
        if not exact:
            note += "; an output differs from the unfused model by more than 1e-4"
        rows.append(C.row(GROUP, f"{r['name']}: latency after fuse() / with every conv+BN folded by hand "
                                 f"(640x640, batch 1)", f"<= {TARGET_RATIO}", f"{ratio:.3f}",
                          C.judge(ratio <= TARGET_RATIO and exact), note))
        rows.append(C.row(GROUP, f"{r['name']} fused vs stock yolov8n fused", "-",
                          f"{m['fused'] / m['stock']:.2f}x ({C.fmt_ms(m['fused'])} vs {C.fmt_ms(m['stock'])})", "info",
                          f"{r['params'] / 1e6:.2f} M params; stock timed in the same rounds"))
    if stock_times:
        rows.append(C.row(GROUP, "stock yolov8n after fuse() (640x640, batch 1, 1 thread)", "-",
                          C.fmt_ms(C.median(stock_times)), "info",
                          f"median of {len(stock_times)} runs spread over the whole script"))
    details["load_after"] = C.loadavg()
    return rows, details


def main() -> None:
    C.script_main(__doc__, run, worker)


if __name__ == "__main__":
    main()
