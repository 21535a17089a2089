"""Our MobileNetV2 / V3 / V4 backbones against their timm equivalents, and backbone construction time.

Latency: CPU, _common.TORCH_THREADS intra-op threads (2 unless YOLOPATCH_BENCH_THREADS says otherwise), eval mode under torch.inference_mode, 640x640 input at batch 1
and 8; both implementations are built in the same fresh subprocess and run alternately (ours, timm, timm,
ours, ...) after warm-up runs, so a change of machine load hits both alike; the figure is the median of
N runs each and the ratio ours / timm of the medians (at batch 8, cheap models get more than N runs).

Peak memory: a fresh process per (model, implementation, batch) - forked from the driver, which has
imported torch and timm but run nothing - builds the model, runs a warm-up forward (batch 1), notes its
RSS, resets the RSS high-water mark (/proc/self/clear_refs), runs one forward pass and reads the
high-water mark again (VmHWM): the peak RSS delta of the forward. glibc's mmap threshold is pinned
(mallopt M_MMAP_THRESHOLD, as MALLOC_MMAP_THRESHOLD_=131072) so freed tensors leave the RSS at once and
the high-water mark follows live tensor memory.

Construction: every backbone the recipes ship (and the timm equivalents), built with default arguments in
a fresh subprocess; the median of several constructions after one warm-up. A global forward pre-hook
records every module call during construction: the target is none at all (no probe forward pass, let
alone one at full resolution).

timm models: pretrained=False, features_only=True (MobileNetV2 with out_indices=(1, 2, 3, 4), the
outputs our backbone returns). Ours: loaded straight from recipes/ with importlib.

usage: python tests/benchmarks/bench_modules.py [--json OUT] [--quick]
"""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "modules"
SCRIPT = Path(__file__).resolve()
SIZE = 640
RATIO_TARGET = 1.1

# our class -> (recipe, file, timm name, timm kwargs)
PAIRS = {
    "MobileNetV2": ("mobilenetv2", "mobilenetv2.py", "mobilenetv2_100", {"out_indices": (1, 2, 3, 4)}),
    "MobileNetV3Small": ("mobilenetv3", "mobilenetv3.py", "mobilenetv3_small_100", {}),
    "MobileNetV3Large": ("mobilenetv3", "mobilenetv3.py", "mobilenetv3_large_100", {}),
    "MobileNetV4ConvSmall": ("mobilenetv4", "mobilenetv4.py", "mobilenetv4_conv_small", {}),
    "MobileNetV4HybridMedium": ("mobilenetv4", "mobilenetv4.py", "mobilenetv4_hybrid_medium", {}),
}
# (warm-up runs, measured runs) per batch size
REPS = {1: (2, 11), 8: (1, 5)}
BATCH_SECONDS, MAX_RUNS = 8.0, 9
QUICK_REPS = {1: (1, 3)}
CONSTRUCT_RUNS = 3
# Too large to construct repeatedly within the run's time budget (hundreds of millions of parameters).
CONSTRUCT_SKIP = {"revcol_large", "revcol_xlarge"}


# ---------------------------------------------------------------------------------------------------------
# Workers (fresh subprocesses)
# ---------------------------------------------------------------------------------------------------------
def build(name: str, impl: str):
    recipe, file, timm_name, kwargs = PAIRS[name]
    if impl == "ours":
        return getattr(C.load_recipe_module(recipe, file), name)()
    import timm

    return timm.create_model(timm_name, pretrained=False, features_only=True, **kwargs)


def worker_latency(spec: dict) -> dict:
    """Both implementations in this process, run alternately at every batch size of spec["reps"]."""
    torch = C.set_torch_threads()
    torch.manual_seed(0)
    models = {impl: build(spec["model"], impl).eval() for impl in ("ours", "timm")}
    result = {"params": {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}}
    first = None
    for batch, (warmup, runs) in spec["reps"].items():
        if first is not None and runs:
            # Cheap models get more runs at the larger batch (about BATCH_SECONDS of forwards per model),
            # never fewer than the table says.
            runs = max(runs, min(MAX_RUNS, round(BATCH_SECONDS / (int(batch) * first))))
        x = torch.randn(int(batch), 3, SIZE, SIZE)
        times = {"ours": [], "timm": []}
        with torch.inference_mode():
            for i in range(warmup + runs):
                order = ("ours", "timm") if i % 2 == 0 else ("timm", "ours")
                for impl in order:
                    start = time.perf_counter()
                    models[impl](x)
                    elapsed = time.perf_counter() - start
                    if i >= warmup:
                        times[impl].append(elapsed)
        result[str(batch)] = times
        if first is None:
            first = max(C.median(times["ours"]), C.median(times["timm"]))
    return result


def worker_memory(spec: dict) -> dict:
    torch = C.set_torch_threads()
    torch.manual_seed(0)
    model = build(spec["model"], spec["impl"]).eval()
    x = torch.randn(spec["batch"], 3, SIZE, SIZE)
    with torch.inference_mode():
        if spec["warmup"]:
            model(x)  # one-time allocations (oneDNN primitives, caches) happen here
        before = C.rss_mib()
        method = C.reset_peak()
        outs = model(x)
        peak = C.peak_mib()
        out_mib = sum(o.numel() * o.element_size() for o in outs) / 2**20
    return {"delta_mib": peak - before, "before_mib": before, "outputs_mib": out_mib, "method": method}


def backbone_names() -> list[tuple[str, str, str]]:
    """(recipe, file, class) of every shipped backbone."""
    found = []
    for toml in sorted(C.RECIPES.glob("*/recipe.toml")):
        data = tomllib.loads(toml.read_text(encoding="utf-8"))
        for module in data.get("modules", []):
            if module.get("role") == "backbone" and module["name"] not in CONSTRUCT_SKIP:
                found.append((data["name"], module["file"], module["name"]))
    return found


def worker_construct(spec: dict) -> dict:
    torch = C.set_torch_threads()
    calls = []

    def hook(module, args):
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        calls.append((type(module).__name__, shapes))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    results = {}
    try:
        for key, make in _constructors(spec):
            times = []
            calls.clear()
            for _ in range(1 + spec["runs"]):
                start = time.perf_counter()
                model = make()
                times.append(time.perf_counter() - start)
                del model
            largest = max((s for _, shapes in calls for s in shapes if len(s) == 4), key=lambda s: s[-1] * s[-2],
                          default=None)
            results[key] = {"seconds": C.median(times[1:]), "forward_calls": len(calls) // (1 + spec["runs"]),
                            "largest_input": largest}
    finally:
        handle.remove()
    return results


def _constructors(spec: dict):
    for recipe, file, name in spec["ours"]:
        module = C.load_recipe_module(recipe, file)
        yield f"ours:{name}", getattr(module, name)
    if spec.get("timm"):
        import timm

        for name, (_, _, timm_name, kwargs) in PAIRS.items():
            yield f"timm:{name}", (lambda n=timm_name, k=kwargs: timm.create_model(n, pretrained=False,
                                                                                     features_only=True, **k))


WORKERS = {"latency": worker_latency, "memory": worker_memory, "construct": worker_construct}


# ---------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------
def run(quick: bool = False) -> tuple[list[dict], dict]:
    reps = QUICK_REPS if quick else REPS
    details: dict = {"load_before": C.loadavg(), "threads": C.TORCH_THREADS, "size": SIZE, "reps": reps}
    rows = []
    # Memory is measured in processes forked from this one: import torch and timm here (no operation runs
    # before the fork), so each measurement gets a fresh address space without a new interpreter.
    import timm  # noqa: F401
    import torch  # noqa: F401

    latency = {name: C.run_worker(SCRIPT, {"kind": "latency", "model": name, "reps": reps}) for name in PAIRS}
    for batch, (warmup, runs) in reps.items():
        for name in PAIRS:
            lat = latency[name]
            # A warm-up forward before the measured one where it is cheap; at batch 8 the measured forward is
            # the process's first at that size (its one-time allocations are small next to the activations).
            mem = {impl: C.run_forked(worker_memory, {"model": name, "impl": impl, "batch": batch,
                                                      "warmup": batch == 1}) for impl in ("ours", "timm")}
            ours, ref = C.median(lat[str(batch)]["ours"]), C.median(lat[str(batch)]["timm"])
            ratio = ours / ref
            mem_ratio = mem["ours"]["delta_mib"] / max(mem["timm"]["delta_mib"], 1e-9)
            details[f"{name} b{batch}"] = {"latency": lat[str(batch)], "memory": mem, "load": C.loadavg()}
            params = lat["params"]
            same = "same parameter count" if params["ours"] == params["timm"] else \
                f"params ours {params['ours']:,} vs timm {params['timm']:,}"
            rows.append(C.row(GROUP, f"{name} vs timm {PAIRS[name][2]}: latency, batch {batch}, {SIZE}x{SIZE}",
                              f"ratio <= {RATIO_TARGET}",
                              f"{ratio:.2f} ({C.fmt_ms(ours)} vs {C.fmt_ms(ref)})", C.judge(ratio <= RATIO_TARGET),
                              f"median of {len(lat[str(batch)]['ours'])} after {warmup} warm-up, alternating; "
                              f"{same}; torch threads {C.TORCH_THREADS}"))
            rows.append(C.row(GROUP, f"{name} vs timm {PAIRS[name][2]}: peak memory, batch {batch}",
                              f"ratio <= {RATIO_TARGET}",
                              f"{mem_ratio:.2f} ({mem['ours']['delta_mib']:.0f} vs {mem['timm']['delta_mib']:.0f} MiB)",
                              C.judge(mem_ratio <= RATIO_TARGET),
                              f"peak RSS delta of one forward, fresh subprocess each ({mem['ours']['method']}); "
                              f"the outputs alone {mem['ours']['outputs_mib']:.0f} MiB"))
            print(f"  {name} b{batch}: latency {ratio:.2f}, memory {mem_ratio:.2f}", file=sys.stderr, flush=True)
    construct = C.run_worker(SCRIPT, {"kind": "construct", "ours": backbone_names(), "timm": True,
                                      "runs": 2 if quick else CONSTRUCT_RUNS})
    details["construct"] = construct
    for key, info in construct.items():
        impl, name = key.split(":", 1)
        if impl != "ours":
            continue
        ref = construct.get(f"timm:{name}")
        compare = f"; timm equivalent {C.fmt_ms(ref['seconds'])}" if ref else ""
        forward = "none" if info["forward_calls"] == 0 else \
            f"{info['forward_calls']} module calls, largest input {info['largest_input']}"
        rows.append(C.row(GROUP, f"{name}() construction (default arguments)", "no forward pass",
                          f"{C.fmt_ms(info['seconds'])}; forward calls: {forward}",
                          C.judge(info["forward_calls"] == 0), f"median of {CONSTRUCT_RUNS if not quick else 2}{compare}"))
    details["skipped construction"] = sorted(CONSTRUCT_SKIP)
    details["load_after"] = C.loadavg()
    return rows, details


def main() -> None:
    C.script_main(__doc__, run, lambda spec: WORKERS[spec["kind"]](spec))


if __name__ == "__main__":
    main()
