"""Shared helpers of the benchmark scripts (tests/benchmarks/bench_*.py).

Every bench script prints its figures as a table and, with ``--json PATH``, writes them as a list of rows
for run_all.py. A row is one figure: ``{"group", "figure", "target", "measured", "status", "note"}`` where
status is "pass", "MISS" or "info" (no numeric target). Measurements that need a clean process run in a
fresh subprocess: the script calls itself with ``--worker SPEC_JSON`` and reads one JSON line back.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TESTS = REPO / "tests"
RECIPES = REPO / "recipes"
PYTHON = sys.executable
BENCH_CACHE = Path(os.environ.get("YOLOPATCH_BENCH_CACHE", Path.home() / ".cache" / "yolopatch-bench"))
RESULT_PREFIX = "@bench-result "

# torch intra-op threads of every module / model benchmark: two (the machine's two cores) unless
# YOLOPATCH_BENCH_THREADS says otherwise. run_all.py sets it from bench_threads.py's calibration: on a
# machine whose cores other processes keep busy, a 2-thread forward stalls at every OpenMP barrier until
# the descheduled thread runs again, and the figures measure the scheduler instead of the model.
TORCH_THREADS = int(os.environ.get("YOLOPATCH_BENCH_THREADS", "2"))

# glibc raises its mmap threshold dynamically after large frees, after which freed tensors stay in the
# heap and the RSS high-water mark overstates live memory. A fixed threshold keeps every large tensor in
# its own mapping, returned to the OS on free, so peak RSS tracks peak live tensor memory.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


# ---------------------------------------------------------------------------------------------------------
# Rows and output
# ---------------------------------------------------------------------------------------------------------
def row(group: str, figure: str, target: str, measured: str, status: str, note: str = "") -> dict:
    return {"group": group, "figure": figure, "target": target, "measured": measured, "status": status, "note": note}


def judge(ok: bool | None) -> str:
    return "info" if ok is None else ("pass" if ok else "MISS")


def print_rows(rows: list[dict]) -> None:
    widths = [max(len(str(r[k])) for r in rows + [{"figure": "figure", "target": "target", "measured": "measured",
                                                      "status": "status"}]) for k in ("figure", "target", "measured", "status")]
    for r in rows:
        cells = [str(r[k]).ljust(w) for k, w in zip(("figure", "target", "measured", "status"), widths)]
        print("  ".join(cells) + (f"  {r['note']}" if r.get("note") else ""), flush=True)


def main_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, help="Also write the rows (and details) as JSON here.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="Fewer repetitions (a smoke run, not for the table).")
    return parser.parse_args()


def script_main(doc: str, run, worker=None) -> None:
    """Every benchmark script's entry: `--worker SPEC` runs one measurement in this process (the worker
    reports its result, or returns it to be reported); otherwise `run(quick)` prints the rows and writes
    the JSON."""
    args = main_args(doc.splitlines()[0])
    if args.worker:
        result = worker(json.loads(args.worker))
        if result is not None:
            report(result)
        return
    rows, details = run(args.quick)
    print_rows(rows)
    write_json(args.json, rows, details)


def write_json(path: Path | None, rows: list[dict], details: dict | None = None) -> None:
    if path is not None:
        path.write_text(json.dumps({"rows": rows, "details": details or {}}, indent=1), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------
# Timing and statistics
# ---------------------------------------------------------------------------------------------------------
def median(values) -> float:
    return statistics.median(values)


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def run_timed(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds user+sys of the child, CompletedProcess) of one run, output captured."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def time_command(cmd: list[str], env: dict | None = None, cwd: Path | None = None, runs: int = 7,
                 warmup: int = 1, check: bool = True) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of `runs` executions (after `warmup` untimed ones)."""
    walls, cpus = [], []
    for i in range(warmup + runs):
        wall, cpu, done = run_timed(cmd, env, cwd)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
        if i >= warmup:
            walls.append(wall)
            cpus.append(cpu)
    return walls, cpus


def loadavg() -> tuple[float, float, float]:
    try:
        return tuple(float(x) for x in Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return os.getloadavg()


# ---------------------------------------------------------------------------------------------------------
# Worker subprocesses
# ---------------------------------------------------------------------------------------------------------
def run_worker(script: Path, spec: dict, extra_env: dict | None = None, timeout: float = 900.0,
               env: dict | None = None) -> dict:
    """Run `python script --worker SPEC` in a fresh interpreter; return the JSON it reports."""
    full_env = dict(os.environ if env is None else env)
    full_env.update(extra_env or {})
    full_env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    done = subprocess.run([PYTHON, str(script), "--worker", json.dumps(spec)], env=full_env, capture_output=True,
                          text=True, timeout=timeout, cwd=str(REPO))
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"worker {spec} exited {done.returncode} without a result:\n{done.stderr[-3000:]}")


def _forked_child(fn, spec, conn, malloc_fixed):
    try:
        if malloc_fixed:
            pin_mmap_threshold()
        conn.send(("ok", fn(spec)))
    except BaseException as exc:  # noqa: BLE001 - hand any failure to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_forked(fn, spec: dict, malloc_fixed: bool = True, timeout: float = 900.0) -> dict:
    """Run fn(spec) in a new process forked from this one (which must have imported torch but run no torch
    operation, so no OpenMP pool exists to break across fork): a fresh address space per measurement
    without paying for the torch import again."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_forked_child, args=(fn, spec, child, malloc_fixed))
    proc.start()
    child.close()
    if not parent.poll(timeout):
        proc.kill()
        raise RuntimeError(f"forked measurement {spec} timed out")
    status, payload = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"forked measurement {spec} failed: {payload}")
    return payload


def pin_mmap_threshold() -> None:
    """mallopt(M_MMAP_THRESHOLD, 128 KiB) in this process: the same effect as MEMORY_ENV, after start-up."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt(-3, 131072)  # M_MMAP_THRESHOLD; also turns off glibc's dynamic threshold


def report(result: dict) -> None:
    """Called by a worker: hand the result back to the parent."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------------
# Memory: peak RSS of this process, resettable (Linux /proc/self/clear_refs), else ru_maxrss
# ---------------------------------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def rss_mib() -> float:
    kib = _status_kib("VmRSS")
    if kib is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kib / 1024


def reset_peak() -> str:
    """Reset the RSS high-water mark; returns the method the peak will be read with."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "VmHWM after /proc/self/clear_refs"
    except OSError:
        return "ru_maxrss (not resettable)"


def peak_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kib / 1024


# ---------------------------------------------------------------------------------------------------------
# Recipes and real targets
# ---------------------------------------------------------------------------------------------------------
def load_recipe_module(recipe: str, filename: str):
    """recipes/<recipe>/<filename> imported standalone, as tests/recipes/recipe_loader.py does."""
    sys.path.insert(0, str(TESTS / "recipes"))
    try:
        from recipe_loader import load_recipe_module as load
    finally:
        sys.path.remove(str(TESTS / "recipes"))
    return load(recipe, filename)


def upstream():
    sys.path.insert(0, str(TESTS))
    try:
        import upstream as module
    finally:
        sys.path.remove(str(TESTS))
    return module


def newest_ultralytics() -> tuple[Path, str]:
    up = upstream()
    return up.pristine("ultralytics", up.NEWEST_ULTRALYTICS), up.NEWEST_ULTRALYTICS


def fresh_ultralytics(dest: Path) -> Path:
    """A fresh copy of the newest ultralytics release (tests/upstream.py) at dest (replaced if present)."""
    source, _ = newest_ultralytics()
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return upstream().fresh_copy(source, dest)


def cached_env(base: dict | None = None) -> dict:
    """The environment of a CLI timing: compiled bytecode available, as after `pip install` (written once
    into a private PYTHONPYCACHEPREFIX under BENCH_CACHE, never into the repository)."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(BENCH_CACHE / "pycache")
    return env


def yolopatch_cmd(*args) -> list[str]:
    """The real console entry in a new interpreter (sys.executable directly, no shell shim)."""
    return [PYTHON, "-m", "yolopatch", *map(str, args)]


def cli_supports(command: str, option: str) -> bool:
    """Whether the yolopatch this benchmark runs has `option` on `command` (read from its --help), for
    figures of capabilities merged on other branches."""
    import tempfile

    # not run from the repository: `python -m` puts the working folder first on sys.path
    done = subprocess.run(yolopatch_cmd(command, "--help"), capture_output=True, text=True, cwd=tempfile.gettempdir())
    return done.returncode == 0 and option in done.stdout


def set_torch_threads():
    import torch

    torch.set_num_threads(TORCH_THREADS)
    return torch


# ---------------------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    versions = subprocess.run([PYTHON, "-c", "import torch, sys; print(torch.__version__)"], capture_output=True,
                              text=True).stdout.strip()
    libs = {}
    for name in ("timm", "libcst", "click", "jinja2", "ultralytics"):
        try:
            from importlib.metadata import version

            libs[name] = version(name)
        except Exception:  # noqa: BLE001 - not installed
            libs[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram": ram, "python": platform.python_version(),
            "python_path": PYTHON, "torch": versions, "libs": libs, "platform": platform.platform(),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "loadavg": loadavg()}
