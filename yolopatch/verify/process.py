"""Launch the runner (runner/__main__.py) in the target's interpreter: the environment it gets, progress streamed back, the
JSON result read from a file, a time limit."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .protocol import PROGRESS_PREFIX, RunnerOutput, Spec

RUNNER = Path(__file__).resolve().parent / "runner" / "__main__.py"


def runner_env(import_root: Path, work: Path, base: dict | None = None) -> dict:
    """The user's environment with the checkout first on PYTHONPATH, no bytecode written into it, every
    config and settings folder the targets write to moved into the scratch folder, no network installs or
    downloads."""
    env = dict(os.environ if base is None else base)
    user_path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join([str(import_root)] + ([user_path] if user_path else []))
    config = work / "config"
    env.update({
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
        "YOLO_OFFLINE": "1",              # ultralytics: no hub events or online checks
        "YOLO_AUTOINSTALL": "false",      # ultralytics: never pip-install a missing requirement
        "PIP_NO_INDEX": "1",              # and any pip a target spawns stays offline
        "YOLO_VERBOSE": "False",
        "YOLO_CONFIG_DIR": str(config),   # ultralytics settings.json, fonts
        "YOLOV5_CONFIG_DIR": str(config),  # yolov5 fonts and settings
        "MPLCONFIGDIR": str(work / "matplotlib"),
    })
    # Nothing that changes how torch or the target behaves is set here (no TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD,
    # no exporter choice): every step runs as the user's own command runs, with the user's own environment.
    env.pop("PYTHONSTARTUP", None)
    return env


@dataclass
class RunnerResult:
    result: RunnerOutput | None     # None: the runner exited without writing one
    returncode: int
    log: Path
    timed_out: bool = False

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:] if line.strip())


class Runner:
    """One runner subprocess; start() returns at once, wait() collects the result."""

    def __init__(self, python: str, spec: Spec, env: dict, work: Path, name: str,
                 on_progress: Callable[[str], None] | None = None):
        self.spec_path = work / f"{name}-spec.json"
        self.result_path = Path(spec.result)
        self.log = work / f"{name}.log"
        self.spec_path.write_text(spec.to_json(), encoding="utf-8")
        self.cmd = [python, str(RUNNER), str(self.spec_path)]
        self.env, self.cwd = env, work / f"{name}-cwd"
        self.on_progress = on_progress
        self.proc: subprocess.Popen | None = None
        self.reader: threading.Thread | None = None

    def start(self) -> "Runner":
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()
        return self

    def _pump(self) -> None:
        """Drain the runner's output into the log (a full pipe would block it), passing progress lines on."""
        prefix = PROGRESS_PREFIX.encode()
        with open(self.log, "wb") as log:
            for line in self.proc.stdout:
                log.write(line)
                if line.startswith(prefix) and self.on_progress is not None:
                    try:
                        self.on_progress(line[len(prefix):].decode("utf-8", "replace").rstrip())
                    except Exception:  # a closed terminal must not stop the draining
                        self.on_progress = None

    def stop(self) -> None:
        """End the runner and its children (its own session) if it still runs, e.g. after Ctrl-C."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait(self, timeout: float) -> RunnerResult:
        timed_out = False
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.stop()
        self.reader.join(timeout=10)
        result = None
        if self.result_path.is_file():
            try:
                result = RunnerOutput.from_json(self.result_path.read_text(encoding="utf-8"))
            except (ValueError, TypeError):
                result = None
        return RunnerResult(result, self.proc.returncode, self.log, timed_out)
