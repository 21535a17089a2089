"""`yolopatch verify` wall time: one recipe (mobilenetv4) on a fresh copy of the newest ultralytics.

The full default ladder (import, names, build, shapes, stock comparison, figures, train, reload) is timed
end to end through the real console entry; the JSON report gives the seconds of every step. While it
runs, the script watches the process tree to count the runner interpreters verify starts (one per
target: the checkout and its pristine copy, plus the fresh interpreter that reloads checkpoints) and how
many run at once. If `python -m yolopatch verify --help` does not work yet (verify being written), the
script polls for it for a few minutes before giving up on the figure.

usage: python tests/benchmarks/bench_verify.py [--json OUT] [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "verify"
RECIPE = "mobilenetv4"
TARGET_SECONDS = 45.0
POLL_SECONDS = 300
VERIFY_TIMEOUT = 600


def verify_available(deadline: float) -> bool:
    while True:
        done = subprocess.run([C.PYTHON, "-m", "yolopatch", "verify", "--help"], capture_output=True)
        if done.returncode == 0:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(20)


def runner_threads() -> str:
    """The torch thread count verify's runner sets (yolopatch/verify/runner/env.py), read by calling it."""
    sys.path.insert(0, str(C.REPO))
    try:
        from yolopatch.verify.runner import env as runner_env
    except ImportError:
        return "unknown"
    finally:
        sys.path.pop(0)

    class _Torch:
        threads = None

        def set_num_threads(self, n):
            self.threads = n

    fake = _Torch()
    runner_env.set_threads(fake)
    return str(fake.threads)


class TreeWatch(threading.Thread):
    """Poll the process tree of `pid`: every python child that runs verify's runner (runner/__main__.py)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.seen, self.max_concurrent, self.stop = pid, {}, 0, threading.Event()

    def run(self):
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.is_set():
            try:
                children = root.children(recursive=True)
            except psutil.Error:
                break
            live = 0
            for child in children:
                try:
                    cmd = child.cmdline()
                except psutil.Error:
                    continue
                if any(part.endswith(("runner/__main__.py", "runner.py")) for part in cmd):
                    live += 1
                    self.seen.setdefault(child.pid, " ".join(Path(p).name for p in cmd[1:3]))
            self.max_concurrent = max(self.max_concurrent, live)
            time.sleep(0.2)


def timed_verify(copy: Path, extra_env: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(extra_env or {})
    cmd = [C.PYTHON, "-m", "yolopatch", "verify", "--repo", str(copy), "--recipe", RECIPE, "--json"]
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=copy)
    watch = TreeWatch(proc.pid)
    watch.start()
    out, err = proc.communicate(timeout=VERIFY_TIMEOUT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    watch.stop.set()
    watch.join(timeout=5)
    try:
        report = json.loads(out)
    except ValueError:
        raise RuntimeError(f"verify exited {proc.returncode} without a JSON report: {err[-2000:]}") from None
    steps: dict = {}
    for model in report.get("models", []):
        for step, info in model.get("steps", {}).items():
            steps[step] = steps.get(step, 0.0) + float(info.get("seconds") or 0.0)
    builds = sum(1 for m in report.get("models", []) if m.get("steps", {}).get("build", {}).get("status") == "passed")
    return {"wall": wall, "cpu": cpu, "exit": proc.returncode, "passed": report.get("passed"), "models": len(report.get("models", [])),
            "builds": builds, "import_seconds": report.get("checks", {}).get("import", {}).get("seconds"),
            "step_seconds": steps, "runner_processes": len(watch.seen), "max_concurrent_runners": watch.max_concurrent,
            "reported_seconds": report.get("seconds"), "load": C.loadavg()}


def run(quick: bool = False) -> tuple[list[dict], dict]:
    details: dict = {"load_before": C.loadavg()}
    if not verify_available(time.monotonic() + POLL_SECONDS):
        note = f"`python -m yolopatch verify --help` still failed after polling {POLL_SECONDS} s"
        return [C.row(GROUP, f"`yolopatch verify` ({RECIPE}, ultralytics)", f"< {TARGET_SECONDS:.0f} s", "not measured",
                      "MISS", note)], details
    with tempfile.TemporaryDirectory(prefix="yolopatch-bench-verify-") as tmp:
        copy = C.fresh_ultralytics(Path(tmp) / "ultralytics")
        subprocess.run([C.PYTHON, "-m", "yolopatch", "apply", RECIPE, "--repo", str(copy)], check=True,
                       capture_output=True)
        result = timed_verify(copy)
        details["run"] = result
        threads = runner_threads()
        details["runner torch threads"] = threads
        ok = result["wall"] < TARGET_SECONDS and result["exit"] == 0
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(result["step_seconds"].items(), key=lambda kv: -kv[1])
                          if v >= 0.05)
        note = (f"CPU {result['cpu']:.0f} s (all processes); exit {result['exit']}; {result['models']} models, {result['builds']} builds passed; runner "
                f"interpreters {result['runner_processes']} (at most {result['max_concurrent_runners']} at once), torch "
                f"threads {threads} each; import {result['import_seconds']} s; summed steps: {steps}; "
                f"load average during the run {result['load'][0]:.2f}")
    rows = [C.row(GROUP, f"`yolopatch verify` ({RECIPE} on ultralytics {C.newest_ultralytics()[1]}, full ladder)",
                  f"< {TARGET_SECONDS:.0f} s ({os.cpu_count()}-core CPU)", C.fmt_s(result["wall"]), C.judge(ok), note)]
    details["load_after"] = C.loadavg()
    return rows, details


def main() -> None:
    C.script_main(__doc__, run)


if __name__ == "__main__":
    main()
