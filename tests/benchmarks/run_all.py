"""Run every benchmark script (tests/benchmarks/bench_*.py) once and write BENCHMARKS.md.

usage: python tests/benchmarks/run_all.py [--quick] [--out BENCHMARKS.md] [--only cli,verify,...]

Each script runs in its own subprocess and hands its figures back as JSON; this file only orders them,
adds the machine description and writes the Markdown. A script that fails is reported as a MISS with its
error instead of stopping the run. YOLOPATCH_BENCH_THREADS, if set, fixes the torch thread count of the
module and model benchmarks; otherwise bench_threads.py's calibration chooses it (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SCRIPTS = ["threads", "cli", "bases", "verify", "modules", "revcol", "gsconv", "iou", "models"]
TORCH_SCRIPTS = {"modules", "revcol", "gsconv", "iou", "models"}
GROUP_TITLES = {
    "CLI": "CLI: start-up, apply, revert",
    "verify": "verify",
    "modules": "Modules",
    "trade": "What a user trades (ultralytics, 640x640, batch 1)",
    "machine": "Thread calibration",
}
IDLE_LOAD = 0.5  # 1-minute load average below which the machine counts as idle at the start
GROUP_ORDER = ["CLI", "verify", "modules", "trade", "machine"]

# Why a figure misses its target and what fixes the cause, shown under the table when that figure is a
# MISS in this run. Keys are substrings of the figure text. Written from the measurements (instrumented
# apply, -X importtime, verify's per-step seconds); see the notes column for this run's numbers.
CAUSES = {
    "`yolopatch apply": (
        "apply parses with libcst only the pieces of tasks.py it edits (yolopatch/edits/pieces.py finds the "
        "import block, `def parse_model` and the forward-loop methods with the stdlib `ast` in ~0.05 s; about "
        "a sixth of the 106,000 characters) and splices them back; the rest of its time is the interpreter, "
        "`import libcst` (~0.25 s, hundreds of dataclasses), click, rendering, the compile check and the "
        "writes. A miss is machine load (compare the CPU seconds in the note) or a regression that parses "
        "more: see the share-of-tasks.py figure and the split in the note."),
    "characters libcst parses": (
        "a piece was parsed twice or the whole-file fallback ran (yolopatch/edits/pieces.py `locate` returns "
        "None for files it cannot cut safely); check which pieces the instrumented run lists."),
    "`yolopatch revert": (
        "revert loads no source edits (no libcst, no jinja2): interpreter, click, yolopatch.api, hashing the "
        "recorded files and restoring the saved bytes with fsync. A miss here is machine load (compare the CPU "
        "seconds in the note with the wall time) or a regression that imports `yolopatch.plan` again: check "
        "the -X importtime figures in the note; `api._transition_to` must return before `from . import plan` "
        "when nothing stays applied."),
    "`yolopatch list": (
        "`list` imports yolopatch.api (engine, diffs -> difflib, manifest, runlock, targets) only to call "
        "`recipes.load_all`. Fix (yolopatch/cli.py, `list_cmd` and `show`): import `recipes` directly "
        "(`from . import recipes; recipes.load_all(...)` / `recipes.resolve(...)`) instead of `_api()`."),
    " vs timm ": (
        "no systematic gap is known between our MobileNets and timm's: same layers and parameter counts; two "
        "causes were found and fixed with this benchmark: out-of-place ReLU/ReLU6/Hardswish after every "
        "BatchNorm allocated a full-size tensor per layer (ours 10-35% slower at 640x640; in place since "
        "commit 9cda31a), and MobileNetV4's Mobile MQA materialised the N x M attention matrix (hybrid "
        "models up to 30% slower at batch 8; now torch's fused scaled_dot_product_attention, as timm). "
        "Single ratios of a few alternating runs on a shared machine spread by about +-10% (MobileNetV2 at "
        "batch 8 read 1.19 once and 0.94 when rerun on an idle machine): rerun to tell spread from a "
        "regression, and profile both with torch.profiler if it persists."),
    "construction (default arguments)": (
        "a module call ran while the backbone was being built (the note names the largest input): some "
        "__init__ probes its output shapes with a forward pass. The recipes' contract forbids it "
        "(recipes/README.md): compute feature_channels / feature_strides from the configuration instead."),
    "box loss, ": (
        "each variant is a chain of elementwise ops over the 134,400 pairs (no kernel fusion in eager CPU "
        "torch), so its time follows the number of full-size temporaries forward and backward: SIoU has the "
        "most (four exp, two powers, the angle cost), the plain IoU forms the fewest. A ratio above the "
        "target with the others unchanged is a regression in recipes/_shared/yolopatch_iou.py (profile the "
        "variant with torch.profiler); all ratios up together is machine load against the baseline's runs."),
    "`yolopatch verify": (
        "verify's wall time is the CPU work of three interpreters on two shared cores: each runner imports "
        "torch (~3 s of CPU apiece; the 'import' figure in the note is the verify runner's, under load), "
        "and the default ladder builds, checks shapes and counts FLOPs for all five yolov8 scales plus "
        "RT-DETR (the FLOP counter costs 1-3 s per model even on the meta device), then trains and reloads "
        "the first scale. The note gives the CPU seconds of all processes: when they exceed the wall-time "
        "budget the other jobs on the machine leave, no setting inside verify can meet 45 s. More torch "
        "threads do not help on a shared machine: the same run with YOLOPATCH_VERIFY_THREADS=2 took 106 s "
        "against 57.5 s (2026-11-22, load 3.8), so runner.env.set_threads' one thread per runner is right. "
        "What would cut the CPU work (yolopatch/verify): count FLOPs once per YAML at its first scale and "
        "only build + shape-check the other scales (or make `--one-scale` the default and the five-scale "
        "sweep opt-in), which removes about two thirds of the build/shapes/figures seconds in the note."),
}


def run_script(name: str, out: Path, env: dict, quick: bool) -> tuple[dict, float, str]:
    script = C.HERE / f"bench_{name}.py"
    cmd = [C.PYTHON, str(script), "--json", str(out)] + (["--quick"] if quick else [])
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    sys.stdout.write(done.stdout)
    if done.returncode or not out.is_file():
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        group = {"cli": "CLI", "verify": "verify", "models": "trade", "threads": "machine"}.get(name, "modules")
        return {"rows": [C.row(group, f"bench_{name}.py", "runs", "failed", "MISS", error[:500])],
                "details": {"stderr": done.stderr[-5000:]}}, elapsed, done.stderr
    return json.loads(out.read_text(encoding="utf-8")), elapsed, done.stderr


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def load_note(started: tuple) -> str:
    """What the load average says about the run (the benchmarks' own two threads keep it near 2)."""
    if started[0] < IDLE_LOAD:
        return ("the machine was otherwise idle when the run started; the load during the run is the "
                "benchmarks' own threads.")
    return ("other jobs shared the cores, so wall times are higher and noisier than on an idle machine; ratios "
            "measured side by side (ours vs timm, alternating runs in one process) are the most robust figures.")


def render(results: dict, durations: dict, machine: dict, threads_used: dict, quick: bool,
           started: tuple, finished: tuple, total: float) -> str:
    rows = [r for name in SCRIPTS if name in results for r in results[name]["rows"]]
    lines = ["# Benchmarks", "",
             "Generated by `python tests/benchmarks/run_all.py` (one run of every `tests/benchmarks/bench_*.py`; "
             "each script also runs alone and prints its figures). Do not edit by hand: rerun the command.", ""]
    if quick:
        lines += ["**Quick run (`--quick`): fewer repetitions and a subset of the models; not the reference "
                  "table.**", ""]
    libs = ", ".join(f"{k} {v}" for k, v in machine["libs"].items() if v)
    lines += [
        "## Machine and run", "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores (as seen by the process), RAM {machine['ram']}",
        f"- Python {machine['python']} ({machine['python_path']}), torch {machine['torch']}, {libs}",
        f"- Platform: {machine['platform']}",
        f"- Date: {machine['date']}; whole run {total / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in durations.items())})",
        f"- Load average (1/5/15 min) at the start {started[0]:.2f} / {started[1]:.2f} / {started[2]:.2f}, at the end "
        f"{finished[0]:.2f} / {finished[1]:.2f} / {finished[2]:.2f}: " + load_note(started),
        "- torch intra-op threads per benchmark: " + ", ".join(f"{k} **{v.split()[0]}**" for k, v in threads_used.items())
        + ". Chosen by a short calibration (last table) right before each script: 2 threads when a second "
        "thread speeds a forward up by at least 1.2x at that moment, else 1 - when other jobs keep the cores "
        "busy a 2-thread forward stalls at every OpenMP barrier and runs several times slower than 1 thread. "
        "verify's runners set their own threads (1 each, see its row).",
        "", "Reproduce: `python tests/benchmarks/run_all.py` (about 12 minutes on this machine when it is "
        "not shared; `YOLOPATCH_BENCH_THREADS=2` forces two threads everywhere). Methods are described in each script's docstring; "
        "in short:", "",
        "- CLI: wall time of the real entry point (`python -m yolopatch ...`, the interpreter binary itself, no "
        "shell shim), median of several runs after a warm-up, next to `python -c pass`; bytecode compiled once "
        "into a private PYTHONPYCACHEPREFIX as after `pip install` (the 'no cache' figure in the notes is with "
        "PYTHONDONTWRITEBYTECODE=1, this sandbox's default). apply/revert on a fresh copy of the newest "
        "ultralytics release per run.",
        "- Latency: `time.perf_counter()` around eval forwards under `torch.inference_mode()`, warm-up runs "
        "first, then the median of N.",
        "- Peak memory: resident set size, not tracemalloc (blind to torch's allocator). A fresh subprocess per "
        "measurement notes its RSS, resets the kernel's high-water mark (`/proc/self/clear_refs`), runs the "
        "step, and reads `VmHWM`: the peak RSS delta of that step. glibc's mmap threshold is pinned "
        "(`MALLOC_MMAP_THRESHOLD_=131072`) so freed tensors leave the RSS at once and the peak follows live "
        "tensor memory (with the default dynamic threshold the heap keeps freed blocks and the RevCol ratio "
        "read 2.1x instead of 4x).",
        "- Our modules are loaded straight from `recipes/` with importlib; timm models with "
        "`pretrained=False, features_only=True`.", ""]
    misses = []
    for group in GROUP_ORDER:
        group_rows = [r for r in rows if r["group"] == group]
        if not group_rows:
            continue
        lines += [f"## {GROUP_TITLES[group]}", ""]
        if group == "trade" and "models" in results and "models" in results["models"]["details"]:
            lines += trade_table(results["models"]["details"], group_rows)
        else:
            lines += ["| figure | target | measured | result | notes |", "|---|---|---|---|---|"]
            for r in group_rows:
                result = {"pass": "pass", "MISS": "**MISS**", "info": "-"}[r["status"]]
                lines.append(f"| {md_escape(r['figure'])} | {md_escape(r['target'])} | {md_escape(r['measured'])} | "
                             f"{result} | {md_escape(r['note'])} |")
        lines.append("")
        misses += [r for r in group_rows if r["status"] == "MISS"]
    lines += ["## Targets missed in this run", ""]
    if not misses:
        lines += ["None: every figure with a target is at or inside it.", ""]
    for r in misses:
        cause = next((text for key, text in CAUSES.items() if key in r["figure"]), None)
        lines += [f"- **{r['figure']}** (target {r['target']}, measured {r['measured']}): "
                  + (cause or f"see the notes: {r['note']}"), ""]
    return "\n".join(lines).rstrip() + "\n"


def trade_table(details: dict, rows: list[dict]) -> list[str]:
    stock = details["stock"]
    lines = ["Each generated YAML against the stock model of the same scale (yolov8-* built at scale n against "
             "yolov8n, rtdetr-* against rtdetr-l); no numeric target: the trade-off is the figure. GFLOPs "
             "for one 640x640 image by `torch.utils.flop_counter.FlopCounterMode` (meta device, shapes only); "
             f"latency: eval forward, no Conv+BN fusion, torch threads {details['threads']}, median of "
             f"{details['runs']} after {details['warmup']} "
             "warm-up; 'x stock' divides by the stock model timed right after it and its neighbours (same "
             "minutes of machine load); the stock rows give the median of all those stock runs.", "",
             "| model | params (M) | x stock | GFLOPs | x stock | CPU latency | x stock |", "|---|---|---|---|---|---|---|"]
    for name, s in stock.items():
        lines.append(f"| {name} (stock) | {s['params'] / 1e6:.2f} | 1.00 | {s['gflops']:.1f} | 1.00 | "
                     f"{s['latency'] * 1000:.0f} ms | 1.00 |")
    for m in details["models"]:
        if not m.get("ok"):
            lines.append(f"| {m['name']} | failed: {md_escape(m.get('error', ''))} | | | | | |")
            continue
        b = stock[m["baseline"]]
        lines.append(f"| {m['name']} | {m['params'] / 1e6:.2f} | {m['params'] / b['params']:.2f} | {m['gflops']:.1f} | "
                     f"{m['gflops'] / b['gflops']:.2f} | {m['latency'] * 1000:.0f} ms | {m['latency'] / m['reference']:.2f} |")
    extra = [r for r in rows if r["status"] == "MISS"]
    for r in extra:
        lines.append(f"| {md_escape(r['figure'])} | **MISS** {md_escape(r['note'])} | | | | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer repetitions (smoke run; marked in the file).")
    parser.add_argument("--out", type=Path, default=C.REPO / "BENCHMARKS.md")
    parser.add_argument("--only", help="Comma-separated subset of: " + ", ".join(SCRIPTS))
    args = parser.parse_args()
    names = [n for n in SCRIPTS if not args.only or n in args.only.split(",")]
    started, start = C.loadavg(), time.perf_counter()
    machine = C.machine()
    env = dict(os.environ)
    results, durations, threads_used = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="yolopatch-bench-") as tmp:
        fixed = env.get("YOLOPATCH_BENCH_THREADS")
        calibrations = []
        for name in names:
            if name == "threads":
                continue
            if name in TORCH_SCRIPTS:
                if fixed:
                    env["YOLOPATCH_BENCH_THREADS"] = fixed
                    threads_used[name] = f"{fixed} (YOLOPATCH_BENCH_THREADS)"
                elif "threads" in names:
                    # Calibrate right before each torch benchmark: the load other jobs put on the cores
                    # changes within minutes, and with it whether a second thread helps or stalls.
                    out = Path(tmp) / f"threads-{name}.json"
                    got, seconds, _ = run_script("threads", out, env, args.quick)
                    chosen = got["details"].get("chosen_threads", 1)
                    for r in got["rows"]:
                        r["figure"] = f"before bench_{name}.py: {r['figure']}"
                    calibrations += got["rows"]
                    durations["threads"] = durations.get("threads", 0.0) + seconds
                    env["YOLOPATCH_BENCH_THREADS"] = str(chosen)
                    threads_used[name] = f"{chosen} (calibrated just before)"
                else:
                    env["YOLOPATCH_BENCH_THREADS"] = "2"
                    threads_used[name] = "2 (default)"
            print(f"== bench_{name}.py", flush=True)
            results[name], durations[name], stderr = run_script(name, Path(tmp) / f"{name}.json", env, args.quick)
            print(f"   ({durations[name]:.0f} s)", flush=True)
        if calibrations:
            results["threads"] = {"rows": calibrations, "details": {}}
    total = time.perf_counter() - start
    text = render(results, durations, machine, threads_used, args.quick, started, C.loadavg(), total)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
