"""GSConv (slimneck) on CPU: what its channel shuffle costs, against a plain convolution of equal FLOPs.

GSConv(c1, c2, k, s) = dense Conv(c1 -> c2/2, k, s) + depthwise 5x5 Conv of that half + concatenation +
two-group channel shuffle. The shuffle and the concatenation do no arithmetic but each copy the whole
output. For the neck shapes yolov8s-slimneck sees at 640x640, in one fresh subprocess with the
benchmark thread count (_common.TORCH_THREADS), eval mode, inference_mode, median of N runs after warm-up (alternating):

  * the shipped GSConv forward;
  * its parts: dense conv, depthwise conv, concatenation, shuffle (each timed alone on its real input);
  * a plain Conv (conv + BN + SiLU, same kernel and stride) whose output width gives the same FLOPs;
  * a single-copy interleave (stack on a new axis + reshape) that yields the same tensor as cat + shuffle.

usage: python tests/benchmarks/bench_gsconv.py [--json OUT] [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "modules"
SCRIPT = Path(__file__).resolve()
# (c1, c2, k, s, input height = width, batch): yolov8s-slimneck at 640 - the two downsampling GSConvs
# of the head (P3 -> P4, P4 -> P5) and the stride-1 GSConvs inside the P3 GSBottlenecks; batch 8 once.
CASES = [(128, 128, 3, 2, 80, 1), (256, 256, 3, 2, 40, 1), (64, 64, 3, 1, 80, 1), (128, 128, 3, 2, 80, 8)]
WARMUP, RUNS = 5, 30


def conv_macs(c1, c2, k, s, h, groups=1):
    out = (h + 2 * (k // 2) - k) // s + 1
    return c1 // groups * c2 * k * k * out * out


def worker(spec: dict) -> dict:
    torch = C.set_torch_threads()
    slim = C.load_recipe_module("slimneck", "slimneck.py")
    torch.manual_seed(0)
    c1, c2, k, s, h, batch = spec["case"]
    c_ = c2 // 2
    gs = slim.GSConv(c1, c2, k, s).eval()
    gs_macs = conv_macs(c1, c_, k, s, h) + conv_macs(c_, c_, 5, 1, (h + 2 * (k // 2) - k) // s + 1, groups=c_)
    per_channel = conv_macs(c1, 1, k, s, h)
    c_eq = round(gs_macs / per_channel)
    plain = slim.Conv(c1, c_eq, k, s).eval()
    full = slim.Conv(c1, c2, k, s).eval()
    x = torch.randn(batch, c1, h, h)
    with torch.inference_mode():
        x1 = gs.cv1(x)
        x2 = gs.cv2(x1)
        cat = torch.cat((x1, x2), 1)
        b, c, hh, ww = cat.shape
        interleave = torch.stack((x1, x2), 2).reshape(b, c, hh, ww)
        same = bool(torch.equal(interleave, slim.channel_shuffle(cat, 2)))
        candidates = {
            "GSConv": lambda: gs(x),
            "dense conv": lambda: gs.cv1(x),
            "depthwise 5x5": lambda: gs.cv2(x1),
            "cat": lambda: torch.cat((x1, x2), 1),
            "shuffle": lambda: slim.channel_shuffle(cat, 2),
            "equal-FLOPs Conv": lambda: plain(x),
            "full Conv c1->c2": lambda: full(x),
            "stack interleave": lambda: torch.stack((x1, x2), 2).reshape(b, c, hh, ww),
        }
        times = {name: [] for name in candidates}
        names = list(candidates)
        for i in range(spec["warmup"] + spec["runs"]):
            for name in (names if i % 2 == 0 else names[::-1]):
                start = time.perf_counter()
                candidates[name]()
                elapsed = time.perf_counter() - start
                if i >= spec["warmup"]:
                    times[name].append(elapsed)
    med = {name: C.median(v) for name, v in times.items()}
    return {"median": med, "gs_macs": gs_macs, "c_eq": c_eq, "eq_macs": per_channel * c_eq,
            "full_macs": conv_macs(c1, c2, k, s, h), "stack_equals_shuffle": same,
            "params": {"GSConv": sum(p.numel() for p in gs.parameters()),
                       "equal-FLOPs Conv": sum(p.numel() for p in plain.parameters())}}


def run(quick: bool = False) -> tuple[list[dict], dict]:
    details: dict = {"load_before": C.loadavg(), "threads": C.TORCH_THREADS}
    rows = []
    for case in CASES:
        c1, c2, k, s, h, batch = case
        r = C.run_worker(SCRIPT, {"case": case, "warmup": 2 if quick else WARMUP, "runs": 5 if quick else RUNS})
        details[str(case)] = r
        m = r["median"]
        ratio = m["GSConv"] / m["equal-FLOPs Conv"]
        copies = m["cat"] + m["shuffle"]
        label = f"GSConv({c1}, {c2}, k={k}, s={s}) on {batch}x{c1}x{h}x{h}"
        rows.append(C.row(
            GROUP, f"{label}: latency vs plain Conv of equal FLOPs (Conv({c1}, {r['c_eq']}, k={k}, s={s}))", "-",
            f"{ratio:.2f}x ({C.fmt_ms(m['GSConv'])} vs {C.fmt_ms(m['equal-FLOPs Conv'])})", "info",
            f"parts: dense {C.fmt_ms(m['dense conv'])}, depthwise 5x5 {C.fmt_ms(m['depthwise 5x5'])}, "
            f"cat {C.fmt_ms(m['cat'])}, shuffle {C.fmt_ms(m['shuffle'])} ({m['shuffle'] / m['GSConv']:.0%} of GSConv; "
            f"cat+shuffle {copies / m['GSConv']:.0%}); single-copy stack interleave {C.fmt_ms(m['stack interleave'])} "
            f"(same tensor: {'yes' if r['stack_equals_shuffle'] else 'NO'}); the full Conv({c1}, {c2}) it replaces "
            f"{C.fmt_ms(m['full Conv c1->c2'])} at {r['full_macs'] / r['gs_macs']:.2f}x the FLOPs; torch threads "
            f"{C.TORCH_THREADS}"))
    details["load_after"] = C.loadavg()
    return rows, details


def main() -> None:
    C.script_main(__doc__, run, worker)


if __name__ == "__main__":
    main()
