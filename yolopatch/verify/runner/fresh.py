"""The second interpreter on the checkout. It starts with the ladder so that its work overlaps the other
steps: it takes the stock fingerprints of step 5 (in a process that never builds a recipe model), then
waits for the list of checkpoints the ladder saved, and for step 8 loads each in this fresh interpreter
with the target's loader and compares its output with the reference the saving process wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..protocol import FAILED, PASSED, RunnerOutput, StepFailure, step_record
from .checkpoint import reload_one

_POLL = 0.05


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"


class FreshInterpreter:
    """The parent's handle: start() at once, run(items) when the checkpoints are saved."""

    def __init__(self, spec, entry: Path, work: Path, stock: tuple, tag=0):
        self.items_file, self.result_file = work / f"reload-{tag}-items.json", work / f"reload-{tag}-result.json"
        child = spec.but(mode="reload", items_file=str(self.items_file), result=str(self.result_file), stock=stock,
                         yamls=(), shadow_check=False, parent_pid=os.getpid())
        spec_path = work / f"reload-{tag}-spec.json"
        spec_path.write_text(child.to_json(), encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, str(entry), str(spec_path)], cwd=os.getcwd(),
                                     stdin=subprocess.DEVNULL)

    def _release(self, items: list) -> None:
        tmp = self.items_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(items), encoding="utf-8")
        os.replace(tmp, self.items_file)

    def run(self, items: list, timeout: float = 1200.0) -> tuple:
        """(the child's RunnerOutput: stock fingerprints and reload results by model name, exit code)."""
        self._release(items)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if not self.result_file.exists():
            return RunnerOutput(), code
        return RunnerOutput.from_json(self.result_file.read_text(encoding="utf-8")), code

    def cancel(self) -> None:
        if self.proc.poll() is None and not self.items_file.exists():
            self.run([])


def wait_for_items(spec) -> list:
    """In the child: the checkpoints to load, once the parent has saved them ([] if it went away)."""
    path = Path(spec.items_file)
    while not path.exists():
        if spec.parent_pid and os.getppid() != spec.parent_pid:
            return []
        time.sleep(_POLL)
    return json.loads(path.read_text(encoding="utf-8"))


def reload_mode(adapter, items: list) -> dict:
    results = {}
    for item in items:
        start = time.perf_counter()
        try:
            status, message = PASSED, reload_one(adapter, item, item.get("kind", "detect"))
        except StepFailure as exc:
            status, message = FAILED, str(exc)
        except Exception as exc:
            status, message = FAILED, f"loading with the target's loader failed: {_describe(exc)}"
        results[item["name"]] = step_record(status, message, time.perf_counter() - start)
    return results
