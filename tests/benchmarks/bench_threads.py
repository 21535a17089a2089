"""Thread calibration: does a second torch thread speed a forward pass up on this machine right now?

On an idle 2-core machine two intra-op threads make a CNN forward faster. When other processes keep the
cores busy, a 2-thread forward waits at every OpenMP barrier until the descheduled thread gets a core
again, and can be several times slower than one thread. This script times two of the benchmarked
backbones (our MobileNetV2 and MobileNetV4HybridMedium, batch 1, 640x640, eval) at 1 and 2 threads,
in alternating blocks of runs (1, 2, 1, 2 threads, each block after a warm-up run), median per thread
count, in one fresh subprocess. run_all.py uses 2 threads for every
module and model benchmark when the second thread gives at least a 1.2x speed-up on both models, and
1 thread otherwise (YOLOPATCH_BENCH_THREADS set by hand overrides the calibration).

usage: python tests/benchmarks/bench_threads.py [--json OUT] [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "machine"
SCRIPT = Path(__file__).resolve()
MODELS = [("mobilenetv2", "mobilenetv2.py", "MobileNetV2"), ("mobilenetv4", "mobilenetv4.py", "MobileNetV4HybridMedium")]
MIN_SPEEDUP = 1.2


def worker(spec: dict) -> dict:
    import torch

    result = {}
    x = torch.randn(1, 3, 640, 640)
    for recipe, file, name in MODELS:
        model = getattr(C.load_recipe_module(recipe, file), name)().eval()
        times = {1: [], 2: []}
        with torch.inference_mode():
            # Blocks of runs per thread count (1, 2, 1, 2), each after its own warm-up run: switching the
            # count between single runs would time the thread pool's re-creation, not the forward.
            for threads in (1, 2) * spec["blocks"]:
                torch.set_num_threads(threads)
                model(x)
                for _ in range(spec["runs"]):
                    start = time.perf_counter()
                    model(x)
                    times[threads].append(time.perf_counter() - start)
        result[name] = {str(k): C.median(v) for k, v in times.items()}
    return result


def run(quick: bool = False) -> tuple[list[dict], dict]:
    load = C.loadavg()
    result = C.run_worker(SCRIPT, {"blocks": 1 if quick else 2, "runs": 3 if quick else 2})
    speedups = {name: r["1"] / r["2"] for name, r in result.items()}
    chosen = 2 if all(s >= MIN_SPEEDUP for s in speedups.values()) else 1
    text = ", ".join(f"{name} {s:.2f}x ({C.fmt_ms(result[name]['1'])} -> {C.fmt_ms(result[name]['2'])})"
                     for name, s in speedups.items())
    rows = [C.row(GROUP, "speed-up of a 2nd torch thread (batch 1, 640x640)", "-", text, "info",
                  f"load average {load[0]:.2f} on {C.os.cpu_count()} cores; threads chosen for the module and model "
                  f"benchmarks: {chosen} (2 needs >= {MIN_SPEEDUP}x on both)")]
    return rows, {"speedups": speedups, "times": result, "chosen_threads": chosen, "load": load}


def main() -> None:
    C.script_main(__doc__, run, worker)


if __name__ == "__main__":
    main()
