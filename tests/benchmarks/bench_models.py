"""What a user trades: every YAML the recipes generate for ultralytics, against the stock model of the scale.

Every shipped recipe is applied (one `yolopatch apply` of all of them) to a fresh copy of the newest
ultralytics release; each generated YAML is then built through ultralytics' own model classes in a
subprocess that imports the copy (PYTHONPATH=<copy>, PYTHONDONTWRITEBYTECODE=1): yolov8-*.yaml at scale n
(named yolov8n-* in the table) against the stock yolov8.yaml at scale n, and rtdetr-*.yaml against the stock
rtdetr-l.yaml; the YAML is read and handed to the model class as a dict with its scale. Per model:

  * parameters;
  * GFLOPs of one 640x640 image, counted by torch.utils.flop_counter.FlopCounterMode (2 FLOPs per
    multiply-add, like ultralytics' own figure) on a meta-device copy in eval mode (shapes only), or on a
    real eval forward when a module needs tensor values;
  * CPU latency of an eval forward (no Conv+BN fusion, for stock and patched alike) at 640x640, batch 1,
    torch threads as in _common.TORCH_THREADS (2 unless YOLOPATCH_BENCH_THREADS says otherwise): median of
    N runs after a warm-up run. Right after each model the stock model of its scale is timed again (three
    runs of yolov8n, one of rtdetr-l); the model's reference is the median of those stock runs and of its
    neighbours', so each ratio compares runs made under the same machine load.

usage: python tests/benchmarks/bench_models.py [--json OUT] [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from copy import deepcopy
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "trade"
SCRIPT = Path(__file__).resolve()
SIZE = 640
WARMUP, RUNS = 1, 3
# Runs of the stock model right after each generated model: cheap for yolov8n, one for rtdetr-l (pooled
# with the neighbouring models' samples).
BASE_RUNS = {"yolov8n": 3, "rtdetr-l": 1}
STOCK = {"yolov8n": ("cfg/models/v8/yolov8.yaml", "detect", "n"),
         "rtdetr-l": ("cfg/models/rt-detr/rtdetr-l.yaml", "rtdetr", "l")}


# ---------------------------------------------------------------------------------------------------------
# Worker: runs inside the patched copy's interpreter environment
# ---------------------------------------------------------------------------------------------------------
def _meta_copy(model, torch):
    memo = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return deepcopy(model, memo)


def gflops(model, torch) -> tuple[float, str]:
    from torch.utils.flop_counter import FlopCounterMode

    try:
        meta = _meta_copy(model, torch).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            meta(torch.empty(1, 3, SIZE, SIZE, device="meta"))
        return counter.get_total_flops() / 1e9, "meta"
    except Exception:  # noqa: BLE001 - a module reads tensor values: count on a real forward
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 3, SIZE, SIZE))
        return counter.get_total_flops() / 1e9, "real"


def build(path: str, kind: str, scale: str, tasks):
    """The model of one YAML at one scale. The YAML is read here and handed over as a dict with its scale:
    ultralytics' scale-from-file-name rule applies a regex to the whole path and mangles folders whose
    names hold a digit followed by n/s/m/l/x (random temporary folders do)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        d = yaml.safe_load(f)
    d["scale"], d["yaml_file"] = scale, path
    cls = tasks.RTDETRDetectionModel if kind == "rtdetr" else tasks.DetectionModel
    return cls(d, verbose=False).eval()


def timed_runs(model, x, torch, warmup: int, runs: int) -> list[float]:
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def measure(item: dict, torch, tasks, spec: dict, stock: dict) -> dict:
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build(item["path"], item["kind"], item["scale"], tasks)
    built = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    flops, how = gflops(model, torch)
    x = torch.rand(1, 3, SIZE, SIZE)
    times = timed_runs(model, x, torch, spec["warmup"], spec["runs"])
    del model
    # The stock model of the same scale, timed right after: the reference of this model's latency ratio
    # comes from the same minutes of machine load (run_all pools these samples with the neighbours').
    base_times = []
    if item.get("baseline"):
        base_times = timed_runs(stock[item["baseline"]], x, torch, 0, spec["base_runs"][item["baseline"]])
    return {"params": params, "gflops": flops, "flops_by": how, "latency": C.median(times), "times": times,
            "base_times": base_times, "build_seconds": built}


def worker(spec: dict) -> None:
    torch = C.set_torch_threads()
    from ultralytics.nn import tasks

    stock = {}
    for item in spec["stock"]:
        torch.manual_seed(0)
        try:
            stock[item["name"]] = build(item["path"], item["kind"], item["scale"], tasks)
        except Exception as exc:  # noqa: BLE001 - without the reference every item fails alike
            raise SystemExit(f"cannot build the stock {item['name']} ({item['path']}): {type(exc).__name__}: {exc}")
        timed_runs(stock[item["name"]], torch.rand(1, 3, SIZE, SIZE), torch, 1, 0)  # warm-up
    for item in spec["stock"] + spec["items"]:
        try:
            result = measure(item, torch, tasks, spec, stock)
            result.update(ok=True)
        except Exception as exc:  # noqa: BLE001 - report and go on
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        result.update(name=item["name"], baseline=item.get("baseline"), load=C.loadavg())
        C.report(result)


# ---------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------
def shipped_recipes() -> list[str]:
    """Every shipped recipe that declares the ultralytics target and generates YAMLs (read from
    recipes/*/recipe.toml); the IoU-loss recipes change no model and exclude each other (bench_iou.py)."""
    import tomllib

    names = []
    for toml in sorted(C.RECIPES.glob("*/recipe.toml")):
        data = tomllib.loads(toml.read_text(encoding="utf-8"))
        if "ultralytics" in data.get("targets", []) and "loss" not in data:
            names.append(data["name"])
    return names


def items_for(copy: Path) -> list[dict]:
    package = copy / "ultralytics"
    generated = sorted((package / "cfg/models/yolopatch").glob("*.yaml"))
    items = []
    for path in generated:
        if path.name.startswith("rtdetr"):
            items.append({"name": path.stem, "path": str(path), "kind": "rtdetr", "scale": "l", "baseline": "rtdetr-l"})
        else:  # named as ultralytics names a scaled model: yolov8-x.yaml at scale n is yolov8n-x
            items.append({"name": path.stem.replace("yolov8-", "yolov8n-", 1), "path": str(path), "kind": "detect",
                          "scale": "n", "baseline": "yolov8n"})
    return items


def stock_items(copy: Path) -> list[dict]:
    return [{"name": name, "path": str(copy / "ultralytics" / rel), "kind": kind, "scale": scale}
            for name, (rel, kind, scale) in STOCK.items()]


def run_items(copy: Path, stock: list[dict], items: list[dict], warmup: int, runs: int) -> list[dict]:
    up = C.upstream()
    env = up.target_env(copy)
    env["YOLO_VERBOSE"] = "False"
    env["YOLO_CONFIG_DIR"] = str(copy.parent / "config")
    spec = {"stock": stock, "items": items, "warmup": warmup, "runs": runs, "base_runs": BASE_RUNS}
    cmd = [C.PYTHON, str(SCRIPT), "--worker", json.dumps(spec)]
    proc = subprocess.Popen(cmd, env=env, cwd=str(copy.parent), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    results = []
    for line in proc.stdout:
        if line.startswith(C.RESULT_PREFIX):
            result = json.loads(line[len(C.RESULT_PREFIX):])
            results.append(result)
            status = f"{result['latency'] * 1000:.0f} ms" if result.get("ok") else result.get("error")
            print(f"  {result['name']}: {status}", file=sys.stderr, flush=True)
    err = proc.stderr.read()
    proc.wait()
    if len(results) != len(stock) + len(items):
        raise RuntimeError(f"model worker exited {proc.returncode} after {len(results)} of "
                           f"{len(stock) + len(items)}: {err[-3000:]}")
    return results


def reference_samples(measured: list[dict]) -> None:
    """Each model's latency reference: the median of the stock runs timed right after it and right after
    its neighbours with the same stock model (so the ratio compares like with like under a changing load)."""
    for i, r in enumerate(measured):
        if not r.get("ok"):
            continue
        same = [m for m in measured if m.get("ok") and m.get("baseline") == r["baseline"]]
        k = same.index(r)
        samples = [t for m in same[max(0, k - 1):k + 2] for t in m["base_times"]]
        r["reference"] = C.median(samples)
        r["reference_samples"] = len(samples)


def run(quick: bool = False) -> tuple[list[dict], dict]:
    warmup, runs = (1, 1) if quick else (WARMUP, RUNS)
    details: dict = {"load_before": C.loadavg(), "threads": C.TORCH_THREADS, "warmup": warmup, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="yolopatch-bench-models-") as tmp:
        copy = C.fresh_ultralytics(Path(tmp) / "ultralytics")
        recipes = shipped_recipes()
        done = subprocess.run([C.PYTHON, "-m", "yolopatch", "apply", *recipes, "--repo", str(copy)],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"yolopatch apply {' '.join(recipes)} exited {done.returncode}: {done.stderr[-2000:]}")
        details["recipes"] = recipes
        items = items_for(copy)
        if quick:
            items = [i for i in items if "mobilenetv4" in i["name"]]
        stock = stock_items(copy)
        results = run_items(copy, stock, items, warmup, runs)
    first, measured = results[:len(stock)], results[len(stock):]
    reference_samples(measured)
    base = {}
    for s in first:
        samples = [t for m in measured if m.get("baseline") == s["name"] for t in m.get("base_times", [])]
        base[s["name"]] = dict(s, latency=C.median(samples) if samples else s["latency"], samples=len(samples))
    details["stock"] = base
    details["models"] = measured
    rows = []
    for name, info in base.items():
        rows.append(C.row(GROUP, f"{name} (stock)", "reference",
                          f"{info['params'] / 1e6:.2f} M params, {info['gflops']:.1f} GFLOPs, {C.fmt_ms(info['latency'])}",
                          "info", f"latency: median of {info['samples']} runs spread over the whole run"))
    for r in measured:
        if not r.get("ok"):
            rows.append(C.row(GROUP, r["name"], "builds", "failed", "MISS", r.get("error", "")))
            continue
        b = base[r["baseline"]]
        rows.append(C.row(
            GROUP, f"{r['name']} vs {r['baseline']}", "report",
            f"params {r['params'] / 1e6:.2f} M ({r['params'] / b['params']:.2f}x), GFLOPs {r['gflops']:.1f} "
            f"({r['gflops'] / b['gflops']:.2f}x), latency {C.fmt_ms(r['latency'])} ({r['latency'] / r['reference']:.2f}x)",
            "info", "" if r["flops_by"] == "meta" else "FLOPs counted on a real forward"))
    details["load_after"] = C.loadavg()
    return rows, details


def main() -> None:
    C.script_main(__doc__, run, worker)


if __name__ == "__main__":
    main()
