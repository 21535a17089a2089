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

from runner_checkpoint import export_one, save_for_reload
from runner_env import progress
from runner_figures import gflops, parameter_count
from runner_fresh import FreshInterpreter
from runner_model import DeclaredChannels, new_modules
from runner_shapes import check_shapes
from runner_stock import fingerprints
from runner_target import make_adapter
from runner_train import StepFailure, train_step

MODEL_STEPS = ("names", "build", "shapes", "figures", "train", "reload", "export")
FIRST_SCALE_ONLY = ("train", "reload", "export")
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
    def __init__(self, yaml: dict, scale, first_scale, spec: dict):
        stem = Path(yaml["path"]).stem
        self.record = {"name": model_name(stem, scale), "yaml": yaml["path"], "scale": scale,
                       "kind": yaml.get("kind", "detect"), "source": yaml.get("source", ""),
                       "params": None, "gflops": None, "strides": None, "output_shapes": None,
                       "new_modules": [], "steps": {}}
        self.d = None
        wanted, reasons = set(spec["steps"]), spec.get("reasons") or {}
        for step in MODEL_STEPS:
            if step not in wanted:
                self._set(step, "not-run", reasons.get(step, "not requested"))
            elif step in FIRST_SCALE_ONLY and scale != first_scale:
                self._set(step, "not-run", f"runs at the first scale ({first_scale}) of this YAML only")
            else:
                self._set(step, "pending", "")

    @property
    def name(self) -> str:
        return self.record["name"]

    def _set(self, step: str, status: str, message: str, seconds: float = 0.0) -> None:
        self.record["steps"][step] = {"status": status, "message": message, "seconds": round(seconds, 2)}

    def pending(self, step: str) -> bool:
        return self.record["steps"][step]["status"] == "pending"

    def failed(self, step: str) -> bool:
        return self.record["steps"][step]["status"] == "failed"

    def finish(self, step: str, status: str, message: str, seconds: float = 0.0) -> None:
        self._set(step, status, message, seconds)
        progress(f"{step:<7} {status:<6} {self.name}: {message} ({seconds:.1f}s)")
        if status == "failed":
            self.skip_rest(f"{step} failed")

    def skip_rest(self, reason: str) -> None:
        for step in MODEL_STEPS:
            if self.pending(step):
                self._set(step, "skipped", reason)

    def attempt(self, step: str, action) -> None:
        """Run a pending step: passed with the message it returns, failed with the fault it raises."""
        if not self.pending(step):
            return
        start = time.perf_counter()
        try:
            status, message = "passed", action() or ""
        except StepFailure as exc:
            status, message = "failed", str(exc)
        except Exception as exc:
            status, message = "failed", describe(exc)
        self.finish(step, status, message, time.perf_counter() - start)


class Ladder:
    def __init__(self, spec: dict, runner_path: Path):
        self.spec = spec
        self.runner_path = runner_path
        self.work = Path(spec["work_dir"])
        self.adapter = make_adapter(spec)
        self.runs: list = []
        self.saved: dict = {}   # model name -> checkpoint and reference paths

    # step 2 ------------------------------------------------------------------------------------------
    def names(self) -> None:
        for yaml in self.spec["yamls"]:
            start = time.perf_counter()
            try:
                d = self.adapter.load_yaml(Path(yaml["path"]))
                unknown = [f"{row[2]} ({section} row {k})" for section in ("backbone", "head")
                           for k, row in enumerate(d.get(section) or [])
                           if isinstance(row, (list, tuple)) and len(row) == 4 and not self.adapter.resolves(row[2])]
                scales = self.adapter.scales(d)
                if self.spec.get("one_scale"):
                    scales = scales[:1]
                failure = "unknown module names: " + ", ".join(unknown) if unknown else None
            except Exception as exc:
                d, scales, failure = None, [None], f"cannot read the YAML: {describe(exc)}"
            for scale in scales:
                run = ModelRun(yaml, scale, scales[0], self.spec)
                run.d = d
                self.runs.append(run)
                seconds = time.perf_counter() - start
                if failure:
                    run.finish("names", "failed", failure, seconds)
                else:
                    count = len(self.adapter.rows(d))
                    run.finish("names", "passed", f"{count} rows, every module name resolves", seconds)

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
                                  run.record["kind"])
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
            return train_step(self.adapter, state["model"], state["news"])

        try:
            for step, action in (("build", build), ("shapes", shapes), ("figures", figures), ("train", train)):
                run.attempt(step, action)
                if run.failed(step):
                    return
            if run.pending("reload"):
                self._save(run, state, position)
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
            run.finish("reload", "failed", str(exc), time.perf_counter() - start)
        except Exception as exc:
            run.finish("reload", "failed", f"saving the checkpoint failed: {describe(exc)}", time.perf_counter() - start)

    # step 8: one fresh interpreter loads every checkpoint -----------------------------------------------
    def reload(self, fresh) -> dict:
        """Hand the checkpoints to the second interpreter; returns the stock fingerprints it took."""
        runs = [r for r in self.runs if r.pending("reload") and r.name in self.saved]
        start = time.perf_counter()
        returned, code = fresh.run([{"name": r.name, "kind": r.record["kind"], **self.saved[r.name]} for r in runs])
        results = returned.get("reload") or {}
        for run in runs:
            outcome = results.get(run.name) or {
                "status": "failed", "seconds": time.perf_counter() - start,
                "message": f"the fresh interpreter exited with code {code} before reporting"}
            run.finish("reload", outcome["status"], outcome["message"], outcome.get("seconds", 0.0))
        return returned.get("stock") or {}

    # step 9 --------------------------------------------------------------------------------------------
    def export(self) -> None:
        for run in self.runs:
            if run.name in self.saved:
                run.attempt("export", lambda: export_one(self.adapter, self.saved[run.name], run.record["kind"]))

    def run(self) -> dict:
        steps = self.spec["steps"]
        stock_items = (self.spec.get("stock") or []) if "stock" in steps else []
        fresh = FreshInterpreter(self.spec, self.runner_path, self.work, stock_items) if "reload" in steps else None
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
        for run in self.runs:
            run.skip_rest("not reached")
        return {"stock": stock, "models": [r.record for r in self.runs]}
