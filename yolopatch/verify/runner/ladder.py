"""The verification ladder inside the target interpreter: every model climbs the steps cheapest first
and stops at its first failure. Names are checked for every YAML before anything is built. The stock
fingerprints of the checkout are taken by the second interpreter, which never builds a recipe model (a
YAML may change process-wide state such as the default activation), and which then reloads the
checkpoints of all models."""

from __future__ import annotations

import gc
import os
import re
import time
import traceback
from pathlib import Path

import torch

from ..protocol import FAILED, FIRST_SCALE_ONLY, MODEL_STEPS, NOT_RUN, PASSED, SKIPPED, StepFailure, model_record, \
    step_record
from .adapters import make_adapter
from .amp import amp_step
from .checkpoint import export_one, save_for_reload
from .env import progress
from .figures import gflops, parameter_count
from .fit import Fitter
from .fingerprints import fingerprints
from .fuse import fuse_step
from .fresh import FreshInterpreter
from .layers import DeclaredChannels, new_modules
from .shapes import check_shapes
from .train import train_step

PENDING = "pending"   # inside the runner only: a step not yet run
_TORCH_DIR = os.path.dirname(torch.__file__)


def describe(exc: BaseException) -> str:
    """One line: the exception and where it was raised (the innermost frame outside torch)."""
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > 400:
        text = text[:400] + " ..."
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not frame.filename.startswith(_TORCH_DIR):
            where = f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"
            break
    return f"{type(exc).__name__}: {text}{where}"


def model_name(stem: str, scale) -> str:
    if not scale:
        return stem
    match = re.match(r"^(yolo[a-z]*\d+)(.*)$", stem)
    if match:
        return f"{match.group(1)}{scale}{match.group(2)}"
    if stem.startswith("rtdetr"):
        return f"rtdetr-{scale}{stem[len('rtdetr'):]}"
    return f"{stem}-{scale}"


class ModelRun:
    def __init__(self, yaml, kind: str, scale, first_scale, spec):
        self.record = model_record(model_name(Path(yaml.path).stem, scale), yaml.path, scale, kind, yaml.source)
        self.d = None
        wanted, reasons = set(spec.steps), spec.reasons
        for step in MODEL_STEPS:
            if step not in wanted:
                self._set(step, NOT_RUN, reasons.get(step, "not requested"))
            elif step in FIRST_SCALE_ONLY and scale != first_scale:
                self._set(step, NOT_RUN, f"runs at the first scale ({first_scale}) of this YAML only")
            else:
                self._set(step, PENDING, "")

    @property
    def name(self) -> str:
        return self.record["name"]

    def _set(self, step: str, status: str, message: str, seconds: float = 0.0) -> None:
        self.record["steps"][step] = step_record(status, message, seconds)

    def pending(self, step: str) -> bool:
        return self.record["steps"][step]["status"] == PENDING

    def failed(self, step: str) -> bool:
        return self.record["steps"][step]["status"] == FAILED

    def finish(self, step: str, status: str, message: str, seconds: float = 0.0) -> None:
        self._set(step, status, message, seconds)
        progress(f"{step:<7} {status:<6} {self.name}: {message} ({seconds:.1f}s)")
        if status == FAILED:
            self.skip_rest(f"{step} failed")

    def skip_rest(self, reason: str) -> None:
        for step in MODEL_STEPS:
            if self.pending(step):
                self._set(step, SKIPPED, reason)

    def leave_out(self, reason: str) -> None:
        """Every step still pending is not run, for the reason given (a task verify does not build)."""
        for step in MODEL_STEPS:
            if self.pending(step):
                self._set(step, NOT_RUN, reason)

    def attempt(self, step: str, action) -> None:
        """Run a pending step: passed with the message it returns, failed with the fault it raises."""
        if not self.pending(step):
            return
        start = time.perf_counter()
        try:
            status, message = PASSED, action() or ""
        except StepFailure as exc:
            status, message = FAILED, str(exc)
        except Exception as exc:
            status, message = FAILED, describe(exc)
        self.finish(step, status, message, time.perf_counter() - start)


class Ladder:
    def __init__(self, spec, entry: Path):
        self.spec = spec
        self.entry = entry
        self.work = Path(spec.work_dir)
        self.adapter = make_adapter(spec)
        self.runs: list = []
        self.saved: dict = {}   # model name -> checkpoint and reference paths
        self.notes: list = []

    # step 2 ------------------------------------------------------------------------------------------
    def names(self) -> None:
        for yaml in self.spec.yamls:
            start = time.perf_counter()
            kind = "detect"
            try:
                d = self.adapter.load_yaml(Path(yaml.path))
                kind = self.adapter.task(d)
                unknown = [f"{row[2]} ({section} row {k})" for section in ("backbone", "head")
                           for k, row in enumerate(d.get(section) or [])
                           if isinstance(row, (list, tuple)) and len(row) == 4 and not self.adapter.resolves(row[2])]
                scales = self.adapter.scales(d)
                if self.spec.one_scale:
                    scales = scales[:1]
                failure = "unknown module names: " + ", ".join(unknown) if unknown else None
            except Exception as exc:
                d, scales, failure = None, [None], f"cannot read the YAML: {describe(exc)}"
            unverified = self.adapter.unverified(kind)
            if unverified and not failure:
                self.notes.append(f"{Path(yaml.path).name} is not verified beyond its names: {unverified}")
            for scale in scales:
                run = ModelRun(yaml, kind, scale, scales[0], self.spec)
                run.d = d
                self.runs.append(run)
                seconds = time.perf_counter() - start
                if failure:
                    run.finish("names", FAILED, failure, seconds)
                    continue
                count = len(self.adapter.rows(d))
                run.finish("names", PASSED, f"{count} rows, every module name resolves", seconds)
                if unverified:
                    run.leave_out(f"not verified: {unverified}")

    # steps 3, 4, 6, 7 and the saving half of 8 ---------------------------------------------------------
    def climb(self, run: ModelRun, position: int) -> None:
        state: dict = {}

        def build():
            with DeclaredChannels(self.adapter.parser) as declared:
                torch.manual_seed(0)
                state["model"] = self.adapter.build(run.d, run.record["scale"], run.record["kind"])
            state["declared"] = declared.channels
            state["news"] = news = new_modules(state["model"], self.spec)
            run.record["new_modules"] = [n.label for n in news]
            run.record["params"] = parameter_count(state["model"])
            names = ", ".join(n.label for n in news) if news else "none"
            return f"{run.record['params']:,} parameters; new modules: {names}"

        def shapes():
            report = check_shapes(state["model"], state["news"], state["declared"], self.adapter.rows(run.d),
                                  run.record["kind"], self.adapter.family)
            run.record["output_shapes"] = report.output_shapes
            run.record["strides"] = report.strides
            if report.problems:
                raise StepFailure("; ".join(report.problems))
            checked = f"{len(state['news'])} new module(s)" if state["news"] else "no new modules"
            return f"{checked} match their declarations; strides {report.strides}"

        def figures():
            model = state["model"]
            run.record["params"] = parameter_count(model)
            run.record["gflops"] = round(gflops(model), 3)
            if run.record["strides"] is None:
                run.record["strides"] = [int(s) for s in getattr(model, "stride", [])]
            return f"{run.record['params']:,} parameters, {run.record['gflops']:.1f} GFLOPs at 640"

        def train():
            return train_step(self.adapter, state["model"], run.record["kind"], state["news"])

        try:
            for step, action in (("build", build), ("shapes", shapes), ("figures", figures), ("train", train)):
                run.attempt(step, action)
                if run.failed(step):
                    return
            if run.pending("reload"):
                self._save(run, state, position)
            # after the reload checkpoint is saved: amp leaves BatchNorm statistics moved, fuse folds the model
            run.attempt("amp", lambda: amp_step(self.adapter, state["model"], run.record["kind"], state["news"]))
            run.attempt("fuse", lambda: fuse_step(state["model"], state["news"], run.record["kind"]))
        finally:
            state.clear()
            gc.collect()

    def _save(self, run: ModelRun, state: dict, position: int) -> None:
        stem = f"{position:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', run.name)}"
        start = time.perf_counter()
        try:
            self.saved[run.name] = save_for_reload(self.adapter, state["model"], state["news"], stem,
                                                   self.work / "checkpoints")
        except StepFailure as exc:
            run.finish("reload", FAILED, str(exc), time.perf_counter() - start)
        except Exception as exc:
            run.finish("reload", FAILED, f"saving the checkpoint failed: {describe(exc)}", time.perf_counter() - start)

    # step 8: one fresh interpreter loads every checkpoint -----------------------------------------------
    def reload(self, fresh) -> dict:
        """Hand the checkpoints to the second interpreter; returns the stock fingerprints it took."""
        runs = [r for r in self.runs if r.pending("reload") and r.name in self.saved]
        start = time.perf_counter()
        returned, code = fresh.run([{"name": r.name, "kind": r.record["kind"], **self.saved[r.name]} for r in runs])
        for run in runs:
            outcome = returned.reload.get(run.name) or step_record(
                FAILED, f"the fresh interpreter exited with code {code} before reporting", time.perf_counter() - start)
            run.finish("reload", outcome["status"], outcome["message"], outcome.get("seconds", 0.0))
        return returned.stock

    # step 9 --------------------------------------------------------------------------------------------
    def export(self) -> None:
        for run in self.runs:
            if run.name in self.saved:
                run.attempt("export", lambda: export_one(self.adapter, self.saved[run.name], run.record["kind"]))

    # --fit: the target's own trainer, one model at a time ---------------------------------------------------
    def fit(self) -> None:
        fitter = Fitter(self.spec, self.entry, self.work)
        for position, run in enumerate(self.runs):
            if run.pending("fit"):
                progress(f"fit     {run.name}: training one epoch with the target's trainer ...")
                run.attempt("fit", lambda: fitter.fit(run, position))

    def run(self) -> tuple:
        """(stock fingerprints of the checkout, model records)."""
        steps = self.spec.steps
        stock_items = self.spec.stock if "stock" in steps else ()
        fresh = FreshInterpreter(self.spec, self.entry, self.work, stock_items) if "reload" in steps else None
        stock = {}
        try:
            self.names()
            if stock_items and fresh is None:
                stock = fingerprints(self.adapter, self.spec)
            for position, run in enumerate(self.runs):
                if run.d is not None:
                    self.climb(run, position)
            if fresh is not None:
                stock = self.reload(fresh) or stock
        finally:
            if fresh is not None:
                fresh.cancel()
        self.export()
        self.fit()
        for run in self.runs:
            run.skip_rest("not reached")
        return stock, [r.record for r in self.runs]
