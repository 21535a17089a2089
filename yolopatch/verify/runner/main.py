"""The runner's modes, in the target's interpreter (started by __main__.py with the path of a Spec):

  verify  the ladder on the (patched) checkout: import, names, build, shapes, figures, train, checkpoint
          (+ one fresh `reload` interpreter that also takes the stock fingerprints), export
  stock   only the stock fingerprints (run on the pristine scratch copy)
  reload  load checkpoints with the target's loader and compare outputs (the fresh interpreter)

The result (protocol.RunnerOutput) goes to the JSON file the spec names; progress goes to stderr.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..protocol import FAILED, PASSED, RunnerOutput, Spec, step_record
from . import env

ENTRY = Path(__file__).resolve().parent / "__main__.py"   # how a fresh interpreter of this runner starts


def _write(path: str, output: RunnerOutput) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(output.to_json())
    os.replace(tmp, path)


def _import_step(spec: Spec) -> tuple:
    """Step 1. Returns (check record, notes, whether the ladder can run)."""
    start = time.perf_counter()

    def record(status: str, message: str) -> dict:
        if spec.mode == "verify":
            env.progress(f"import  {status:<6} {message}")
        return step_record(status, message, time.perf_counter() - start)

    try:
        import torch
    except Exception as exc:
        return record(FAILED, f"cannot import torch in {sys.executable}: {type(exc).__name__}: {exc}"), [], False
    env.set_threads(torch)
    try:
        from . import fingerprints, fresh, imports, ladder  # noqa: F401  (torch-dependent: fail here, not later)
    except ImportError as exc:  # e.g. torch.utils.flop_counter arrived in torch 2.1
        return record(FAILED, f"the verify runner needs torch >= 2.1 (found {torch.__version__}): {exc}"), [], False
    check = imports.ImportCheck(spec)
    try:
        return record(PASSED, check.run()), check.notes, True
    except RuntimeError as exc:
        return record(FAILED, str(exc)), check.notes, False


def _reload_mode(spec: Spec, ready: bool, import_record: dict) -> RunnerOutput:
    """The fresh interpreter: the checkout's stock fingerprints first, then the checkpoints once they exist."""
    from . import fresh

    if not ready:
        items = fresh.wait_for_items(spec)
        return RunnerOutput(reload={item["name"]: step_record(FAILED, import_record["message"]) for item in items})
    from .adapters import make_adapter
    from .fingerprints import fingerprints

    adapter = make_adapter(spec)
    stock = {}
    if spec.stock:
        start = time.perf_counter()
        stock = fingerprints(adapter, spec)
        env.progress(f"stock   built {', '.join(stock)} in the checkout ({time.perf_counter() - start:.1f}s)")
    return RunnerOutput(stock=stock, reload=fresh.reload_mode(adapter, fresh.wait_for_items(spec)))


def _loss_check(adapter, spec: Spec) -> dict:
    """The `loss` step (runner/loss_step.py) as a check record."""
    from .loss_step import loss_step
    from .messages import describe
    from ..protocol import StepFailure

    start = time.perf_counter()
    try:
        status, message = PASSED, loss_step(adapter, spec)
    except StepFailure as exc:
        status, message = FAILED, str(exc)
    except Exception as exc:
        status, message = FAILED, describe(exc)
    env.progress(f"loss    {status:<6} {message}")
    return step_record(status, message, time.perf_counter() - start)


def main(spec_path: str) -> int:
    spec = Spec.from_json(Path(spec_path).read_text(encoding="utf-8"))
    env.block_network()  # first: before torch or the target is imported
    env.seed_fonts(os.environ.get("YOLO_CONFIG_DIR") or os.getcwd())
    import_record, notes, ready = _import_step(spec)
    runner = {"python": sys.executable, "version": sys.version.split()[0]}
    if "torch" in sys.modules:
        runner.update(torch=sys.modules["torch"].__version__, threads=sys.modules["torch"].get_num_threads())
    output = RunnerOutput(runner=runner, checks={"import": import_record}, notes=notes)
    if spec.mode == "reload":
        output = _reload_mode(spec, ready, import_record)
    elif spec.mode == "fit":
        from .fit import stage_main

        output.fit = stage_main(spec, ready, import_record)
    elif ready and spec.mode == "verify":
        from .ladder import Ladder

        ladder = Ladder(spec, ENTRY)
        if "loss" in spec.steps and spec.loss:
            output.checks["loss"] = _loss_check(ladder.adapter, spec)
        output.stock, output.models = ladder.run()
        output.notes.extend(ladder.notes)
    elif ready and spec.mode == "stock":
        from .adapters import make_adapter
        from .fingerprints import fingerprints

        output.stock = fingerprints(make_adapter(spec), spec)
    _write(spec.result, output)
    return 0
