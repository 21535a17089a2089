"""RevCol training-step peak memory: the reversible backward (save_memory=True) against plain autograd.

revcol_tiny with its YAML defaults (drop_path 0.3) in train mode, input 2x3x640x640, one training step
(forward, then backward of a random projection of all four outputs), CPU, _common.TORCH_THREADS threads.
Each path runs in its own fresh subprocess: build the model and the input, note the RSS, reset the RSS
high-water mark (/proc/self/clear_refs), run the step, read the high-water mark (VmHWM). glibc's mmap
threshold is pinned (MALLOC_MMAP_THRESHOLD_) so that freed tensors leave the RSS at once and the peak
follows live tensor memory. The step time is reported too (the reversible path recomputes each column).

usage: python tests/benchmarks/bench_revcol.py [--json OUT] [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "modules"
SCRIPT = Path(__file__).resolve()
TARGET_RATIO = 2.0
BATCH, SIZE = 2, 640


def worker(spec: dict) -> dict:
    torch = C.set_torch_threads()
    torch.manual_seed(0)
    revcol = C.load_recipe_module("revcol", "revcol.py")
    model = revcol.revcol_tiny(save_memory=spec["save_memory"]).train()
    size = spec["size"]
    x = torch.randn(BATCH, 3, size, size)
    gen = torch.Generator().manual_seed(0)
    weights = None
    before = C.rss_mib()
    method = C.reset_peak()
    start = time.perf_counter()
    outs = model(x)
    if weights is None:
        weights = [torch.randn(o.shape, generator=gen) for o in outs]
    loss = sum((o * w).sum() for o, w in zip(outs, weights))
    loss.backward()
    elapsed = time.perf_counter() - start
    peak = C.peak_mib()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None) / 2**20
    return {"delta_mib": peak - before, "before_mib": before, "seconds": elapsed, "method": method,
            "grad_mib": grads, "params": sum(p.numel() for p in model.parameters())}


def run(quick: bool = False) -> tuple[list[dict], dict]:
    size = 320 if quick else SIZE
    details: dict = {"load_before": C.loadavg(), "batch": BATCH, "size": size, "threads": C.TORCH_THREADS}
    results = {}
    for save_memory in (False, True):
        results[save_memory] = C.run_worker(SCRIPT, {"save_memory": save_memory, "size": size}, C.MEMORY_ENV)
        print(f"  save_memory={save_memory}: {results[save_memory]['delta_mib']:.0f} MiB, "
              f"{results[save_memory]['seconds']:.1f} s", file=sys.stderr, flush=True)
    details["plain"], details["reversible"] = results[False], results[True]
    plain, rev = results[False], results[True]
    ratio = plain["delta_mib"] / max(rev["delta_mib"], 1e-9)
    rows = [
        C.row(GROUP, f"revcol_tiny training-step peak memory, reversible vs plain ({size}x{size}, batch {BATCH})",
              f">= {TARGET_RATIO:.0f}x lower", f"{ratio:.2f}x lower ({rev['delta_mib']:.0f} vs {plain['delta_mib']:.0f} MiB)",
              C.judge(ratio >= TARGET_RATIO),
              f"peak RSS delta of one forward+backward, fresh subprocess each ({plain['method']}); includes "
              f"{plain['grad_mib']:.0f} MiB of parameter gradients in both"),
        C.row(GROUP, "revcol_tiny training-step time, reversible vs plain", "-",
              f"{rev['seconds']:.1f} s vs {plain['seconds']:.1f} s ({rev['seconds'] / plain['seconds']:.2f}x)", "info",
              f"the reversible backward recomputes every column; one step each (torch threads "
              f"{C.TORCH_THREADS}), so load changes show here"),
    ]
    details["load_after"] = C.loadavg()
    return rows, details


def main() -> None:
    C.script_main(__doc__, run, worker)


if __name__ == "__main__":
    main()
