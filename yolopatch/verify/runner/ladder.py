"""The verification ladder inside the target interpreter: every model climbs the steps cheapest first
and stops at its first failure. Names and rows are checked for every YAML before anything is built. The
stock fingerprints of the checkout are taken by the second interpreter, which never builds a recipe model
(a YAML may change process-wide state), and which then reloads the checkpoints of all models. When a step
fails, the stock model of that task climbs the same steps (blame.py) to tell the environment from the
patch."""

from __future__ import annotations

import gc
import re
import time
from pathlib import Path

import torch

from ..protocol import FAILED, FIRST_SCALE_ONLY, HEAD_TASKS, MODEL_STEPS, NOT_RUN, PASSED, SKIPPED, StepFailure, \
    model_record, step_record
from .adapters import make_adapter
from .amp import amp_step
from .checkpoint import export_one, save_for_reload
from .env import progress
from .figures import gflops, parameter_count
from .fit import Fitter
from .fingerprints import fingerprints
from .fuse import fuse_step
from .fresh import FreshInterpreter
from .layers import ParseWatch, loaded_weights, new_modules
from .messages import describe
from .rows import analyse
from .rowtrace import RowTrace
from .shapes import check_shapes
from .train import optimizer_for, train_step

PENDING = "pending"   # inside the runner only: a step not yet run


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
    def __init__(self, yaml, kind: str, scale, first_scale, steps, reasons: dict, quiet: bool = False):
        self.record = model_record(model_name(Path(yaml.path).stem, scale), yaml.path, scale, kind, yaml.source)
        self.d = None
        self.quiet = quiet        # a stock run taken to tell environment from patch: no progress lines
        self.unverified = None    # why verify does not build this model's task, if it does not
        wanted = set(steps)
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
        if not self.quiet:
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

    def attempt(self, step: str, action, explain=None) -> None:
        """Run a pending step: passed with the message it returns, failed with the fault it raises.
        `explain(exc)` may name where the fault happened (the failing YAML row)."""
        if not self.pending(step):
            return
        start = time.perf_counter()
        try:
            status, message = PASSED, action() or ""
        except StepFailure as exc:
            status, message = FAILED, str(exc)
        except Exception as exc:
            status, message = FAILED, (explain(exc) if explain else None) or describe(exc)
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
        self.heads = set(HEAD_TASKS)
        self.fresh_count = 0

    # step 2 ------------------------------------------------------------------------------------------
    def read(self, yaml, steps, reasons: dict, first_only: bool = False, scale=None) -> list:
        """The models of one YAML (one per scale; only the first with first_only, only `scale` if given)
        with their `names` step done, quietly: every module name resolves and every row passes the static
        row checks (rows.py)."""
        start = time.perf_counter()
        kind, d = "detect", None
        try:
            d = self.adapter.load_yaml(Path(yaml.path))
            kind = self.adapter.task(d)
            failure = self._names_problem(d)
            scales = self.adapter.scales(d)
            chosen = [scale] if scale in scales else scales[:1] if first_only or scale is not None else scales
        except Exception as exc:
            scales, chosen, failure = [None], [None], f"cannot read the YAML: {describe(exc)}"
        unverified = self.adapter.unverified(kind)
        runs = []
        for one in chosen:
            run = ModelRun(yaml, kind, one, scales[0], steps, reasons, quiet=True)
            run.d = d if not failure else None
            runs.append(run)
            seconds = time.perf_counter() - start
            if failure:
                run.finish("names", FAILED, failure, seconds)
                continue
            run.finish("names", PASSED, f"{len(self.adapter.rows(d))} rows: every module name resolves, every "
                                        "`from` row holds a tensor, strides agree where the rows tell them", seconds)
            if unverified:
                run.leave_out(f"not verified: {unverified}")
                run.unverified = unverified
        return runs

    def _names_problem(self, d: dict) -> str | None:
        rows = self.adapter.rows(d)
        table, problems = analyse(rows, self.spec.modules, self.heads)
        offset = len(table) - len(rows) if table else 0   # rows a multi-output backbone fills beyond its own
        unknown = [f"{row[2]} (row {position + offset if position else 0})" for position, row in enumerate(rows)
                   if isinstance(row, (list, tuple)) and len(row) == 4 and not self.adapter.resolves(row[2])]
        if unknown:
            return "unknown module names: " + ", ".join(unknown)
        return "; ".join(problems) if problems else None

    def names(self) -> None:
        """Step 2 for every YAML before anything is built; then the shard's models are kept."""
        runs = []
        for yaml in self.spec.yamls:
            runs.extend(self.read(yaml, self.spec.steps, self.spec.reasons, first_only=self.spec.one_scale))
        self.runs = shard(runs, self.spec.shard)
        notes = {}
        for run in self.runs:
            run.quiet = False
            entry = run.record["steps"]["names"]
            progress(f"names   {entry['status']:<6} {run.name}: {entry['message']} ({entry['seconds']:.1f}s)")
            if run.unverified:
                notes[Path(run.record["yaml"]).name] = run.unverified
        self.notes.extend(f"{name} is not verified beyond its names: {why}" for name, why in notes.items())

    # steps 3, 4, 6, 7 and the saving half of 8 ---------------------------------------------------------
    def climb(self, run: ModelRun, position: int) -> None:
        state: dict = {}

        def build():
            with ParseWatch(self.adapter.parser) as watch, RowTrace(watch) as trace:
                state["trace"] = trace
                torch.manual_seed(0)
                state["model"] = self.adapter.build(run.d, run.record["scale"], run.record["kind"])
            state["declared"] = watch.channels
            state["news"] = news = new_modules(state["model"], self.spec)
            run.record["new_modules"] = [n.label for n in news]
            run.record["params"] = parameter_count(state["model"])
            names = ", ".join(n.label for n in news) if news else "none"
            weights = loaded_weights(news)
            if weights:
                self.notes.append(f"{run.name}: reference weights loaded: {weights}")
                return f"{run.record['params']:,} parameters; new modules: {names}; weights: {weights}"
            return f"{run.record['params']:,} parameters; new modules: {names}"

        def shapes():
            with RowTrace(layers=state["model"].model) as trace:
                state["trace"] = trace
                report = check_shapes(state["model"], state["news"], state["declared"], self.adapter.rows(run.d),
                                      run.record["kind"], self.adapter.family)
            run.record["output_shapes"] = report.output_shapes
            run.record["strides"] = report.strides
            if report.problems:
                raise StepFailure("; ".join(report.problems))
            checked = f"{len(state['news'])} new module(s) match their declarations" if state["news"] else \
                "outputs as the task's head gives them"
            return f"{checked}; strides {report.strides}"

        def figures():
            model = state["model"]
            run.record["params"] = parameter_count(model)
            run.record["gflops"] = round(gflops(model), 3)
            if run.record["strides"] is None:
                run.record["strides"] = [int(s) for s in getattr(model, "stride", [])]
            return f"{run.record['params']:,} parameters, {run.record['gflops']:.1f} GFLOPs at 640"

        def train():
            state["optimizer"] = optimizer_for(state["model"])
            return train_step(self.adapter, state["model"], run.record["kind"], state["news"], state["optimizer"])

        def explain(exc):
            trace = state.get("trace")
            return trace.explain(exc, describe) if trace is not None else None

        try:
            for step, action in (("build", build), ("shapes", shapes), ("figures", figures), ("train", train)):
                run.attempt(step, action, explain if step in ("build", "shapes") else None)
                state.pop("trace", None)
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
            self.saved[run.name] = save_for_reload(self.adapter, state["model"], state.get("optimizer"),
                                                   state["news"], stem, self.work / "checkpoints", describe)
        except StepFailure as exc:
            run.finish("reload", FAILED, str(exc), time.perf_counter() - start)
        except Exception as exc:
            run.finish("reload", FAILED, f"saving the checkpoint failed: {describe(exc)}", time.perf_counter() - start)

    # step 8: one fresh interpreter loads every checkpoint -----------------------------------------------
    def reload(self, runs: list, fresh) -> dict:
        """Hand the checkpoints to a fresh interpreter; returns the stock fingerprints it took."""
        runs = [r for r in runs if r.pending("reload") and r.name in self.saved]
        start = time.perf_counter()
        returned, code = fresh.run([{"name": r.name, "kind": r.record["kind"], **self.saved[r.name]} for r in runs])
        for run in runs:
            outcome = returned.reload.get(run.name) or step_record(
                FAILED, f"the fresh interpreter exited with code {code} before reporting", time.perf_counter() - start)
            run.finish("reload", outcome["status"], outcome["message"], outcome.get("seconds", 0.0))
        return returned.stock

    # step 9 --------------------------------------------------------------------------------------------
    def export(self, runs: list) -> None:
        for run in runs:
            if run.name in self.saved:
                run.attempt("export", lambda: export_one(self.adapter, self.saved[run.name], run.record["kind"]))

    # --fit: the target's own trainer, one model at a time ---------------------------------------------------
    def fit(self, runs: list, start: int = 0) -> None:
        fitter = Fitter(self.spec, self.entry, self.work)
        for position, run in enumerate(runs):
            if run.pending("fit"):
                if not run.quiet:
                    progress(f"fit     {run.name}: training one epoch with the target's trainer ...")
                run.attempt("fit", lambda: fitter.fit(run, start + position))

    def climb_all(self, runs: list, stock_items=()) -> dict:
        """Steps 3-9 for `runs`; returns the stock fingerprints the fresh interpreter took (if asked)."""
        wanted = {step for run in runs for step, entry in run.record["steps"].items() if entry["status"] == PENDING}
        fresh = None
        if "reload" in wanted or stock_items:
            self.fresh_count += 1
            fresh = FreshInterpreter(self.spec, self.entry, self.work, tuple(stock_items), tag=self.fresh_count)
        stock = {}
        try:
            start = len(self.saved)
            for position, run in enumerate(runs):
                if run.d is not None:
                    self.climb(run, start + position)
            if fresh is not None:
                stock = self.reload(runs, fresh)
        finally:
            if fresh is not None:
                fresh.cancel()
        self.export(runs)
        self.fit(runs, start)
        for run in runs:
            run.skip_rest("not reached")
        return stock

    def run(self) -> tuple:
        """(stock fingerprints of the checkout, model records)."""
        from .blame import attribute_causes

        stock_items = self.spec.stock if "stock" in self.spec.steps else ()
        self.names()
        if stock_items and "reload" not in self.spec.steps:
            stock = fingerprints(self.adapter, self.spec)
            self.climb_all(self.runs)
        else:
            stock = self.climb_all(self.runs, stock_items)
        attribute_causes(self)
        return stock, [r.record for r in self.runs]


def shard(runs: list, spec_shard) -> list:
    """Models K, K + N, K + 2N, ... (1-based) of the ordered list, for `verify --shard K/N`."""
    k, n = (int(x) for x in spec_shard)
    return runs[k - 1::n]
