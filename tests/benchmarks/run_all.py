"""Run every benchmark script (tests/benchmarks/bench_*.py) once and write BENCHMARKS.md.

usage: python tests/benchmarks/run_all.py [--quick] [--out BENCHMARKS.md] [--only cli,verify,...]

Each script runs in its own subprocess and hands its figures back as JSON; this file only orders them,
adds the machine description and writes the Markdown. A script that fails is reported as a MISS with its
error instead of stopping the run. YOLOPATCH_BENCH_THREADS, if set, fixes the torch thread count of the
module and model benchmarks; otherwise bench_threads.py's calibration chooses it (see BENCHMARKS.md).

Every script's figures are also kept in BENCHMARKS.json beside the Markdown (written after each script,
so an interrupted run keeps what it measured). `--only a,b` reruns those scripts and keeps the others'
figures from that file; the Markdown then says when each section was run, under which load and on which
yolopatch. `--render` rewrites the Markdown from the file alone; `--only a,b --take-from OTHER.json` copies
those scripts' figures from another run's file (one measured with another yolopatch, say).
A script named in SCRIPTS whose file is absent (written on another branch) is skipped and listed as such.

The yolopatch measured is the one `python -m yolopatch` imports outside the repository: PYTHONPATH first (run
`PYTHONPATH=$PWD python tests/benchmarks/run_all.py` from a worktree), else the installed package.
BENCHMARKS.md names its folder and commit.
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

SCRIPTS = ["threads", "cli", "bases", "edits", "add", "verify", "verify_scale", "fit", "modules", "revcol", "gsconv",
           "iou", "fuse", "models"]
TORCH_SCRIPTS = {"modules", "revcol", "gsconv", "iou", "models"}   # torch threads chosen by calibration (bench_fuse: 1)
GROUP_TITLES = {
    "CLI": "CLI: start-up, apply, revert, add, bases",
    "verify": "verify",
    "modules": "Modules",
    "iou": "IoU losses",
    "fuse": "Fused inference (one thread)",
    "trade": "What a user trades (ultralytics, 640x640, batch 1)",
    "machine": "Thread calibration",
}
SCRIPT_GROUPS = {"cli": "CLI", "bases": "CLI", "edits": "CLI", "add": "CLI", "verify": "verify",
                 "verify_scale": "verify", "fit": "verify", "models": "trade", "threads": "machine", "iou": "iou",
                 "fuse": "fuse"}
IDLE_LOAD = 0.5  # 1-minute load average below which the machine counts as idle at the start
OWN_LOAD = 2.0   # what the benchmarks' own two torch threads leave in the 1-minute average for the next script
GROUP_ORDER = ["CLI", "verify", "modules", "iou", "fuse", "trade", "machine"]

# Why a figure misses its target and what fixes the cause, shown under the table when that figure is a
# MISS in this run. Keys are substrings of the figure text. Written from the measurements (instrumented
# apply, -X importtime, verify's per-step seconds); see the notes column for this run's numbers.
CAUSES = {
    "`yolopatch apply": (
        "on an idle machine the CPU seconds equal the wall time: the figure is apply's own work, not load. "
        "Where it goes (instrumented, idle, 2026-11-30): the interpreter ~0.12 s, `import libcst` ~0.35 s "
        "(hundreds of frozen dataclasses created at import; libcst is the product's editor), jinja2 0.06 s, click "
        "and yolopatch ~0.1 s: about 0.65 s before the first edit; then the libcst parse of the 7 pieces of "
        "tasks.py it edits (~0.2 s: yolopatch/edits/pieces.py cuts the import block, `def parse_model` and the "
        "forward-loop methods with the stdlib `ast`, one parse of tasks.py shared by every reader), their code "
        "generation, the compile check and the writes with fsync (~0.1 s). What would meet 1 s: parse fewer "
        "pieces (the forward-loop methods take one small edit each and could be spliced from the `ast` "
        "positions without libcst), or run apply's edits in a process that already has libcst imported; no "
        "further cut is possible while each apply imports libcst."),
    "characters libcst parses": (
        "a piece was parsed twice or the whole-file fallback ran (yolopatch/edits/pieces.py `locate` returns "
        "None for files it cannot cut safely); check which pieces the instrumented run lists."),
    "`yolopatch revert": (
        "revert loads no source edits (no libcst, no jinja2): interpreter, click, yolopatch.api, hashing the "
        "recorded files and restoring the saved bytes with fsync. A miss here is machine load (compare the CPU "
        "seconds in the note with the wall time) or a regression that imports `yolopatch.plan` again: check "
        "the -X importtime figures in the note; `api._transition_to` must return before `from . import plan` "
        "when nothing stays applied."),
    "`yolopatch --help": (
        "`--help` imports only click and yolopatch.cli (the import-torch row checks what stays out). Compare it "
        "with `python -c pass` measured in the same run, the floor no command goes below: when the floor itself "
        "reads several times its idle 0.08 s, the miss is the machine's load; the note's -X importtime list "
        "names the imports to cut otherwise."),
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
        "regression, and profile both with torch.profiler if it persists. On the idle run of 2026-11-30 (two "
        "torch threads) MobileNetV3Small at batch 8 read 1.15 while its batch-1 ratio was 1.00 and every other "
        "pair 0.95-1.06: the smallest model has the shortest kernels, where two threads' synchronisation weighs "
        "most; not yet profiled."),
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
        "sweep opt-in), which removes about two thirds of the build/shapes/figures seconds in the note. Since "
        "the `amp` and `fuse` steps joined the default ladder (the --fit work), `amp` is the largest summed "
        "step (see the note): a bfloat16 autocast train step and a bfloat16 forward on a CPU without AVX-512 or "
        "bf16 instructions (this one: /proc/cpuinfo lists neither), where bfloat16 runs far slower than float32. "
        "`amp` already runs at the first scale only, on one image; its low-precision forward now runs without "
        "the per-layer dtype hooks unless it fails (the hooks check every layer's tensors and are only needed "
        "to name the layer at fault), which did not move the figure: bfloat16 itself is the cost. Measured "
        "(idle, one thread, 96x160): RT-DETR-mobilenetv4 under bfloat16 autocast 2.8 s forward + 6.0 s backward "
        "and 2.6 s for the bfloat16 eval forward, against 0.9 + 0.7 s in float32; yolov8n-mobilenetv4 about 1 s "
        "in all. At 64x64 the RT-DETR part drops to 3.3 s. What would meet 45 s: run `amp` at a 2x-stride "
        "input (once every recipe module is shown to run with a 2-pixel P5), or make the five-scale sweep "
        "opt-in (`--one-scale` the default), which removes four of the six builds, shape checks and FLOP "
        "counts."),
    "`yolopatch bases --json`": (
        "`bases` reads every stock config of the release and classifies it for every recipe; its CPU time (in "
        "the note) is the part yolopatch controls. When the wall time is well above the CPU "
        "time the process waited for a core: other jobs on the two cores (see the load average). If the CPU time "
        "itself is above 0.5 s, profile `python -X importtime -m yolopatch bases --json` and "
        "`cProfile`: the interpreter floor is ~0.08 s."),
    "--base all`": (
        "the apply writes one YAML per (base, recipe) pair, over 150 files, each saved with fsync (crash safety of "
        "the journal) - the note gives the fsync calls and seconds of the instrumented run "
        "and libcst's small share (only the pieces of tasks.py are parsed). On a shared disk and shared cores "
        "the fsyncs and the waits for a core dominate (compare CPU with wall time). What would cut it: one "
        "fsync of the folder after writing the derived YAMLs (they are new files, recreated by a rerun) instead "
        "of one per file."),
    "`yolopatch add": (
        "`add` reads the module file with libcst (roles, imports) and applies it like `apply`: interpreter, "
        "`import libcst`, the parse of the pieces of tasks.py, the writes with fsync. A miss with CPU time well "
        "under the wall time is machine load; with CPU time near the wall time, see the split of `apply` in the "
        "CLI rows, which add shares."),
    "three-way merge": (
        "the merge adds merge3 over tasks.py and a compile of the merged file to the work of a plain apply / "
        "revert; compare with the plain apply measured in the same rounds (its row) and the CPU seconds: when both "
        "miss alike, the cause is the apply's (see its cause) or the machine's load, not the merge."),
    "`yolopatch apply mobilenetv4` (plain)": (
        "the same work as the CLI apply above with one recipe; compare its CPU time with the wall time to tell "
        "machine load from a regression."),
    "seconds per model once warm": (
        "the marginal model costs the build, the shape check at 128 px and the FLOP count at 640 px on the meta "
        "device, on one torch thread; the large derived models (RT-DETR-x, YOLOv9-e, the P6 models) take several "
        "seconds each for the FLOP count alone (the slowest models are listed in the next rows; a trial at load "
        "2.4 on 2026-11-29 gave rtdetr-l 7.3 s, of which the figures step 5.4 s, and yolov8n 1.1 s). What would meet 2 s: "
        "count FLOPs only when a figure is asked for (`--quick` without figures), or count them from the layer "
        "shapes the shape step already records instead of a second traced forward; under load, the CPU seconds "
        "in the note divided by the model count give the cost without the waits."),
    "`verify --fit`": (
        "a fit is two fresh interpreters (the trainer's and best.pt's predictor), each importing torch and the "
        "target (verify's own `import` step took 5.4 s on an idle machine, 2026-11-22), plus the target trainer's own fixed costs per epoch (dataset scan and "
        "cache, validation, checkpoint save, final evaluation of best.pt); the stock yolov8n row is the same "
        "work without a patch and shows that this floor is the trainer's, not the recipe's. The CPU seconds of "
        "the two interpreters (in each note) are the work itself, to compare with the 30 s budget; on a shared "
        "machine the wait for a core adds to every part, and the wall time follows the load. What would cut it: run the predictor in the trainer's "
        "interpreter when `--fit` runs without `--python` isolation, saving one torch import (~5 s)."),
    "with every conv+BN folded by hand": (
        "fuse() left a conv + BatchNorm pair unfolded that the hand fold found (compare the BatchNorm counts in "
        "the note), or, with equal counts, the difference is timing spread on a shared machine: the three "
        "copies run alternately in one process on one thread, so the ratio is robust to slow load changes but "
        "not to bursts; rerun, and if it persists, list the modules whose BatchNorm survives fuse() "
        "(verify's fuse step names them). Measured so far: with 0 BatchNorm left by both copies the ratio of one "
        "model has moved between runs by more than the 3% margin (mobilenetv4 1.22 at load 3.7 on 2026-11-29, "
        "1.02 on the idle machine the next day; a per-layer timing of the two copies, idle, gave the fused one "
        "0.86-1.03x the hand-folded one at every row). A single model at 1.03-1.04 with equal counts is that "
        "spread: the target needs more rounds (or a quieter timer) to tell 3% apart, not a change to fuse()."),
}


def run_script(name: str, out: Path, env: dict, quick: bool) -> tuple[dict, float, str]:
    script = C.HERE / f"bench_{name}.py"
    cmd = [C.PYTHON, str(script), "--json", str(out)] + (["--quick"] if quick else [])
    start = time.perf_counter()
    # From a neutral folder: `python -m yolopatch` in the scripts then imports the yolopatch PYTHONPATH (or the
    # installation) names, never one found through the working folder.
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    elapsed = time.perf_counter() - start
    sys.stdout.write(done.stdout)
    if done.returncode or not out.is_file():
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        group = SCRIPT_GROUPS.get(name, "modules")
        return {"rows": [C.row(group, f"bench_{name}.py", "runs", "failed", "MISS", error[:500])],
                "details": {"stderr": done.stderr[-5000:]}}, elapsed, done.stderr
    return json.loads(out.read_text(encoding="utf-8")), elapsed, done.stderr


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def load_note(started: tuple, lowest: tuple) -> str:
    """What the load average says about the run (the benchmarks' own two threads keep it near 2); `started`
    is the highest load average any script started at, `lowest` the lowest (an invocation's first script
    starts at the machine's own load; the next ones at what the previous script's threads left)."""
    if started[0] < IDLE_LOAD or (lowest[0] < IDLE_LOAD and started[0] <= OWN_LOAD):
        return (f"the machine was otherwise idle when the run started (load average {lowest[0]:.2f}); the load "
                f"during the run, up to {started[0]:.1f} at a script's start, is the benchmarks' own processes and "
                "torch threads.")
    return (f"other jobs shared the cores (a load average up to {started[0]:.1f} at a script's start, on "
            f"{os.cpu_count()} cores), so wall times are higher and noisier than on an idle machine: a process "
            "waits for a core a good part of its wall time, which the CPU seconds in the notes leave out. Ratios "
            "measured side by side (ours vs timm, fuse() vs by hand: alternating runs in one process) are the most "
            "robust figures.")


def span(entry: dict) -> tuple[float, float]:
    """(start, end) of a stored script run in seconds since the epoch (its date has minute resolution)."""
    import calendar

    start = calendar.timegm(time.strptime(entry["date"], "%Y-%m-%d %H:%M UTC"))
    return start, start + entry["seconds"]


def render(entries: dict, machine: dict, invocation: dict) -> str:
    """The Markdown of every script's stored figures (entries: script name -> what run_entry stored)."""
    results = {name: entries[name] for name in SCRIPTS if name in entries}
    rows = [r for name in SCRIPTS if name in results for r in results[name]["rows"]]
    rows += [r for name in SCRIPTS if name in results for r in results[name].get("calibration", [])]
    quick = any(e.get("quick") for e in results.values())
    lines = ["# Benchmarks", "",
             "Generated by `python tests/benchmarks/run_all.py` (one run of every `tests/benchmarks/bench_*.py`; "
             "each script also runs alone and prints its figures). Do not edit by hand: rerun the command.", ""]
    if quick:
        lines += ["**Quick run (`--quick`): fewer repetitions and a subset of the models; not the reference "
                  "table.**", ""]
    libs = ", ".join(f"{k} {v}" for k, v in machine["libs"].items() if v)
    threads_used = {name: e["threads"] for name, e in results.items() if e.get("threads")}
    starts = [tuple(e["load_start"]) for e in results.values()]
    total = sum(e["seconds"] for e in results.values())
    lines += [
        "## Machine and run", "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores (as seen by the process), RAM {machine['ram']}",
        f"- Python {machine['python']} ({machine['python_path']}), torch {machine['torch']}, {libs}",
        f"- Platform: {machine['platform']}",
        f"- yolopatch measured (the last invocation's; a section run with another says so below): "
        f"{machine.get('yolopatch', 'unknown')}",
        f"- Last invocation: {invocation['date']}, `run_all.py{invocation['args']}`, {invocation['minutes']:.1f} min, "
        f"reran: {', '.join(invocation['ran']) or 'nothing'}{invocation['copied']}"
        + (f"; skipped (no such script on this branch): {', '.join(invocation['absent'])}" if invocation["absent"] else ""),
        f"- All sections: {total / 60:.1f} min of benchmark time. When each script ran, how long, and the load "
        "average (1 min) at its start and end - a section not rerun by the last invocation keeps the figures "
        "and the date of the run that measured them:", ""]
    spans = {name: span(e) for name, e in results.items()}
    for name, e in results.items():
        alongside = [f"bench_{o}.py" for o in results if o != name and spans[o][0] < spans[name][1] - 60
                     and spans[name][0] < spans[o][1] - 60]
        lines.append(f"  - `bench_{name}.py`: {e['date']}, {e['seconds']:.0f} s, load {e['load_start'][0]:.2f} -> "
                     f"{e['load_end'][0]:.2f}" + (f", torch threads {e['threads']}" if e.get("threads") else "")
                     + (f", ran alongside {', '.join(alongside)} (separate invocations)" if alongside else "")
                     + (f", yolopatch measured: {e.get('yolopatch', 'unknown')}" if e.get("yolopatch", "unknown") != machine["yolopatch"] else ""))
    for name in SCRIPTS:
        if name not in results and name != "threads":
            lines.append(f"  - `bench_{name}.py`: no figures stored (not run to the end, or absent on this branch)")
    lines += ["", "- Load: " + (load_note(max(starts), min(starts)) if starts else "-") + " Wall times of the CLI and verify "
              "figures come with their CPU seconds in the notes: CPU close to wall means the figure is the work "
              "itself; wall well above CPU means the process waited for a core or the disk.",
              "- torch intra-op threads per benchmark: " + (", ".join(f"{k} **{str(v).split()[0]}**" for k, v in threads_used.items()) or "-")
              + ". Chosen by a short calibration (last table) right before each script: 2 threads when a second "
              "thread speeds a forward up by at least 1.2x at that moment, else 1 - when other jobs keep the cores "
              "busy a 2-thread forward stalls at every OpenMP barrier and runs several times slower than 1 thread. "
              "verify's runners set their own threads (1 each, see its row); the fused-inference figures use 1 "
              "thread by definition.",
              "", "Reproduce: `python tests/benchmarks/run_all.py` (all scripts; `--only fuse,fit` reruns some and "
              "keeps the rest from BENCHMARKS.json; `YOLOPATCH_BENCH_THREADS=2` forces two threads everywhere). "
              "Methods are described in each script's docstring; in short:", "",
        "- CLI: wall time of the real entry point (`python -m yolopatch ...`, the interpreter binary itself, no "
        "shell shim), median of several runs after a warm-up, next to `python -c pass`; bytecode compiled once "
        "into a private PYTHONPYCACHEPREFIX as after `pip install` (the 'no cache' figure in the notes is with "
        "PYTHONDONTWRITEBYTECODE=1, this sandbox's default). apply/revert/add on a fresh copy of the newest "
        "ultralytics release per run.",
        "- verify: the real console entry with `--json`; per-step seconds from its report.",
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
    groups = GROUP_ORDER + sorted({r["group"] for r in rows} - set(GROUP_ORDER))
    for group in groups:
        group_rows = [r for r in rows if r["group"] == group]
        if not group_rows:
            continue
        lines += [f"## {GROUP_TITLES.get(group, group)}", ""]
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
        # later CAUSES entries are the more specific ones (e.g. "three-way merge" within "`yolopatch apply"): they win
        cause = next((text for key, text in reversed(CAUSES.items()) if key in r["figure"]), None)
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


def yolopatch_measured() -> str:
    """Which yolopatch the scripts run (`python -m yolopatch` outside the repository) and its git commit."""
    probe = "import yolopatch, os; print(os.path.dirname(os.path.dirname(os.path.abspath(yolopatch.__file__))))"
    done = subprocess.run([C.PYTHON, "-c", probe], capture_output=True, text=True, cwd=tempfile.gettempdir())
    root = done.stdout.strip() or "unknown"
    commit = subprocess.run(["git", "-C", root, "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    head = commit.stdout.strip()
    return f"{root}" + (f" at `{head[:90]}`" if head else "")


def load_entries(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["scripts"]
    except (OSError, ValueError, KeyError):
        return {}


def save_entries(path: Path, entries: dict) -> None:
    path.write_text(json.dumps({"schema": "yolopatch-benchmarks/1", "scripts": entries}, indent=1) + "\n",
                    encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer repetitions (smoke run; marked in the file).")
    parser.add_argument("--out", type=Path, default=C.REPO / "BENCHMARKS.md")
    parser.add_argument("--only", help="Comma-separated subset of: " + ", ".join(SCRIPTS))
    parser.add_argument("--render", action="store_true", help="Run nothing: rewrite the Markdown from BENCHMARKS.json.")
    parser.add_argument("--take-from", type=Path, metavar="JSON",
                        help="Run nothing: copy the --only scripts' stored figures (with their date, load and the "
                             "yolopatch they measured) from another run's BENCHMARKS.json, then rewrite the Markdown.")
    args = parser.parse_args()
    if args.take_from:
        if not args.only:
            parser.error("--take-from needs --only (the scripts to copy)")
        taken = load_entries(args.take_from)
        missing = [n for n in args.only.split(",") if n not in taken]
        if missing:
            parser.error(f"{args.take_from} holds no figures of: {', '.join(missing)}")
        entries = load_entries(args.out.with_suffix(".json"))
        entries.update({n: taken[n] for n in args.only.split(",")})
        save_entries(args.out.with_suffix(".json"), entries)
        copied = f"; copied {args.only} from {args.take_from}"
        args.only, args.render = "", True
    else:
        copied = ""
    if args.render:
        args.only = ""
    wanted = args.only.split(",") if args.only else ([] if args.render else SCRIPTS)
    unknown = sorted(set(wanted) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown script(s): {', '.join(unknown)}")
    absent = [n for n in SCRIPTS if n in wanted and not (C.HERE / f"bench_{n}.py").is_file()]
    names = [n for n in SCRIPTS if n in wanted and n not in absent]
    store = args.out.with_suffix(".json")
    # a partial run keeps the other scripts' stored figures; a full run replaces them all
    entries = load_entries(store) if args.only or args.render else {}
    start = time.perf_counter()
    machine = C.machine()
    machine["yolopatch"] = yolopatch_measured()
    env = dict(os.environ)
    ran = []
    with tempfile.TemporaryDirectory(prefix="yolopatch-bench-") as tmp:
        fixed = env.get("YOLOPATCH_BENCH_THREADS")
        for name in names:
            if name == "threads":
                continue
            entry = {"load_start": C.loadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "quick": args.quick, "yolopatch": machine["yolopatch"]}
            calibration_seconds = 0.0
            if name in TORCH_SCRIPTS:
                if fixed:
                    env["YOLOPATCH_BENCH_THREADS"] = fixed
                    entry["threads"] = f"{fixed} (YOLOPATCH_BENCH_THREADS)"
                else:
                    # Calibrate right before each torch benchmark: the load other jobs put on the cores
                    # changes within minutes, and with it whether a second thread helps or stalls.
                    out = Path(tmp) / f"threads-{name}.json"
                    got, calibration_seconds, _ = run_script("threads", out, env, args.quick)
                    chosen = got["details"].get("chosen_threads", 1)
                    for r in got["rows"]:
                        r["figure"] = f"before bench_{name}.py: {r['figure']}"
                    entry["calibration"] = got["rows"]
                    env["YOLOPATCH_BENCH_THREADS"] = str(chosen)
                    entry["threads"] = f"{chosen} (calibrated just before)"
            print(f"== bench_{name}.py", flush=True)
            result, seconds, _ = run_script(name, Path(tmp) / f"{name}.json", env, args.quick)
            print(f"   ({seconds:.0f} s)", flush=True)
            entry.update(rows=result["rows"], seconds=seconds + calibration_seconds, load_end=C.loadavg(),
                         details=result.get("details", {}) if name == "models" else {})
            entries[name] = entry
            ran.append(name)
            save_entries(store, entries)  # after every script: an interrupted run keeps what it measured
    invocation = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "ran": ran, "absent": absent,
                  "args": "".join(f" {a}" for a in sys.argv[1:]), "copied": copied, "minutes": (time.perf_counter() - start) / 60}
    text = render(entries, machine, invocation)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} and {store.name} ({invocation['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
