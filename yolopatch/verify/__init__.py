"""`yolopatch verify`: prove a patched checkout builds, runs, trains a step, reloads and exports.

This side never imports torch or the target. It decides what to check (selection), prepares a pristine
scratch copy for the stock comparison (scratch), runs the runner package in the target's interpreter, one
process for the checkout and one for the pristine copy, in parallel (process), and assembles the report
(report). What crosses the process boundary is defined in protocol.py, which both sides import.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from .. import manifest, targets
from ..engine import edited_files
from ..errors import RefusedError, UsageError
from ..ddp import worker_note
from ..run_hint import import_hint
from . import stock
from .process import Runner, runner_env
from .protocol import FAILED, MODEL_STEPS, ON_REQUEST, QUICK_STEPS, SKIPPED, STEPS, Spec, model_record, step_record
from .report import VerifyReport
from .runner.causes import ENVIRONMENT, PATCH, cause_record, same_failure
from .scratch import pristine_copy
from .selection import Selection, model_task, select, stock_models, task_stock_models

__all__ = ["run_verify", "parse_shard", "VerifyReport", "STEPS"]

EXPORT_FORMATS = ("onnx",)
FIT_SECONDS_PER_YAML = 1800.0


def plan_steps(quick: bool, export: str | None, has_state: bool, with_stock: bool = False, fit: bool = False,
               loss: bool = False) -> tuple:
    """(steps to run, reason for each step left out); with_stock keeps the stock check in a quick run; fit adds
    the trainer's epoch (`--fit`), with or without --quick; loss: an IoU-loss recipe is applied (its step runs
    with or without --quick)."""
    reasons = {}
    quick_steps = QUICK_STEPS + (("stock",) if with_stock else ())
    steps = [s for s in STEPS if s in quick_steps] if quick else [s for s in STEPS if s not in ON_REQUEST]
    for step in STEPS:
        if quick and step not in quick_steps:
            reasons[step] = "not run with --quick"
    if export and not quick:
        steps.append("export")
    elif not quick:
        reasons["export"] = "not requested (--export onnx)"
    if fit:
        steps.append("fit")
    else:
        reasons["fit"] = "not requested (--fit)"
    if not has_state and "stock" in steps:
        steps.remove("stock")
        reasons["stock"] = "no .yolopatch/ state: the pristine files are unknown (checkout patched by hand?)"
    if not loss:
        steps.remove("loss")
        reasons["loss"] = "no IoU-loss recipe is applied"
    return steps, reasons


def _python(python: str | None) -> str:
    if not python:
        return sys.executable
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise UsageError(f"--python {python}: not an executable file")
    return python


def parse_shard(text: str) -> tuple:
    """`K/N` (1 <= K <= N): the K-th of N shards, 1-based; UsageError (exit 2) otherwise."""
    k, slash, n = str(text).partition("/")
    if not (slash and k.strip().isdigit() and n.strip().isdigit() and 1 <= int(k) <= int(n)):
        raise UsageError(f"--shard {text}: expected K/N with 1 <= K <= N (e.g. 1/4 ... 4/4)")
    return int(k), int(n)


def _base_spec(target, selection: Selection, steps: list, reasons: dict, one_scale: bool, shard: tuple) -> Spec:
    parser_module = target.parser_file[:-3].replace("/", ".")
    prefix = "yolov5." if target.flavour == "yolov5-pypi" else ""
    hyp = None
    if target.family == "yolov5":
        base = target.root / ("yolov5" if prefix else "")
        for name in ("data/hyps/hyp.scratch-low.yaml", "data/hyps/hyp.scratch.yaml", "data/hyp.scratch.yaml"):
            if (base / name).is_file():
                hyp = str(base / name)
                break
    return Spec(mode="verify", root=str(target.root), family=target.family, flavour=target.flavour,
                version=target.version, package=parser_module.split(".")[0], parser_module=parser_module,
                package_prefix=prefix, import_hint=import_hint(target), ddp_note=worker_note(target), hyp_file=hyp,
                steps=tuple(steps), reasons=dict(reasons), yamls=tuple(selection.yamls), modules=dict(selection.modules),
                new_module_files=tuple(selection.new_module_files), loss=dict(selection.loss), task_stock=tuple(task_stock_models(target)),
                shadow_check=target.flavour != "yolov5-upstream", one_scale=one_scale, shard=tuple(shard))


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def _skipped_models(selection: Selection, reason: str) -> list:
    models = []
    for y in selection.yamls:
        record = model_record(Path(y.path).stem, y.path, None, model_task(Path(y.path)), y.source)
        record["steps"] = {s: step_record(SKIPPED, reason) for s in MODEL_STEPS}
        models.append(record)
    return models


def run_verify(repo: Path, recipes=(), yamls=(), quick: bool = False, export: str | None = None,
               python: str | None = None, recipe_dirs=(), progress: Callable[[str], None] | None = None,
               timeout: float = 1800.0, one_scale: bool = False, with_stock: bool = False,
               shard: tuple = (1, 1), fit: bool = False) -> VerifyReport:
    """Verify the checkout at `repo`; raises RefusedError (exit 3) when there is nothing to verify.
    shard (K, N): only models K, K + N, K + 2N, ... (1-based, in the order verify lists them)."""
    started = time.perf_counter()
    target = targets.detect(Path(repo))
    if manifest.journal_path(target.root).exists():
        raise RefusedError("an earlier yolopatch run on this checkout was interrupted; run `yolopatch revert` first")
    if export is not None and export not in EXPORT_FORMATS:
        raise UsageError(f"--export {export}: supported formats are {', '.join(EXPORT_FORMATS)}")
    state = manifest.load(target.root)
    selection = select(target, state, list(recipes), [Path(y) for y in yamls], tuple(Path(d) for d in recipe_dirs))
    interpreter = _python(python)
    steps, reasons = plan_steps(quick, export, state is not None, with_stock, fit, loss=bool(selection.loss))
    if fit:   # two trainer stages per YAML (first scale), each allowed its own time limit (runner/fit.py)
        timeout += FIT_SECONDS_PER_YAML * len(selection.yamls)
    notes = list(selection.notes)
    if state is not None and edited_files(target.root, state):
        notes.append(f"files changed since yolopatch wrote them: {', '.join(sorted(edited_files(target.root, state)))}"
                     " (verified as they are now)")
    stock_items = stock_models(target, {model_task(Path(y.path)) for y in selection.yamls}) if "stock" in steps else []

    with tempfile.TemporaryDirectory(prefix="yolopatch-verify-") as tmp:
        work = Path(tmp)
        base = _base_spec(target, selection, steps, reasons, one_scale, parse_shard(f"{shard[0]}/{shard[1]}"))
        runners = []

        def pristine_runner(items) -> Runner:
            """The stock fingerprints (and the import) of the pristine files, rebuilt in a scratch copy."""
            copy = pristine_copy(target, state, work / "pristine")
            spec = base.but(mode="stock", root=str(copy), shadow_check=False, yamls=(), stock=tuple(items),
                            work_dir=str(work / "pristine-work"), result=str(work / "pristine-result.json"))
            runner = Runner(interpreter, spec, runner_env(copy, work), work, "pristine")
            runners.append(runner.start())
            return runner

        try:
            pristine = pristine_runner(stock_items) if "stock" in steps else None
            spec = base.but(stock=tuple(stock_items), work_dir=str(work / "verify-work"),
                            result=str(work / "verify-result.json"))
            (work / "verify-work").mkdir()
            main = Runner(interpreter, spec, runner_env(target.root, work), work, "verify", progress)
            runners.append(main.start())
            outcome = main.wait(timeout)
            if pristine is None and state is not None and _import_failed(outcome):
                pristine = pristine_runner(())   # does the stock checkout fail to import the same way?
            left = max(60.0, timeout - (time.perf_counter() - started))
            pristine_outcome = pristine.wait(left) if pristine else None
        finally:
            for runner in runners:
                runner.stop()
        report = _assemble(target, interpreter, selection, steps, reasons, stock_items, outcome, pristine_outcome,
                           notes, timeout)
    report.seconds = time.perf_counter() - started
    return report


def _import_failed(outcome) -> bool:
    return outcome.result is not None and outcome.result.checks.get("import", {}).get("status") == FAILED


def _import_cause(message: str, pristine_outcome) -> dict:
    """The import failed: does the pristine copy of the checkout fail to import the same way?"""
    pristine = pristine_outcome.result if pristine_outcome is not None else None
    if pristine is None:
        why = "no pristine copy to compare with (no .yolopatch/ state)" if pristine_outcome is None else \
            "the pristine copy's runner ended without a result"
        return cause_record(PATCH, why, message)
    theirs = pristine.checks.get("import", {})
    if theirs.get("status") == FAILED and same_failure(message, theirs.get("message", "")):
        return cause_record(ENVIRONMENT, f"the pristine files fail to import the same way: {theirs['message']}",
                            message)
    return cause_record(PATCH, "the pristine files import in this interpreter", message)


def _assemble(target, interpreter, selection, steps, reasons, stock_items, outcome, pristine_outcome, notes,
              timeout) -> VerifyReport:
    result = outcome.result
    info = {"flavour": target.flavour, "family": target.family, "version": target.version, "root": str(target.root),
            "python": interpreter, "python_version": None, "torch": None}
    checks: dict = {}
    if result is None:
        why = f"timed out after {timeout:.0f}s" if outcome.timed_out else f"exited with code {outcome.returncode}"
        checks["runner"] = {"status": "failed", "seconds": 0.0,
                            "message": f"the verify runner in {interpreter} {why} without a result; last output: "
                                       f"{outcome.tail()}"}
        models, imported = _skipped_models(selection, "the runner did not report"), False
    else:
        info.update(python_version=result.runner.get("version"), torch=result.runner.get("torch"))
        checks["import"] = result.checks["import"]
        if checks["import"]["status"] == FAILED:
            checks["import"]["cause"] = _import_cause(checks["import"]["message"], pristine_outcome)
        notes = notes + list(result.notes)
        imported = checks["import"]["status"] == "passed"
        models = result.models if imported else _skipped_models(selection, "the checkout could not be imported")
    if "stock" not in steps:
        checks["stock"] = {"status": "not-run", "message": reasons.get("stock", "not requested"), "models": []}
    elif not imported:
        checks["stock"] = {"status": "skipped", "message": "the checkout could not be imported", "models": []}
    else:
        pristine = pristine_outcome.result
        problem = ""
        if pristine is None:
            problem = f"its runner exited with code {pristine_outcome.returncode}; last output: {pristine_outcome.tail()}"
        elif pristine.checks["import"]["status"] != "passed":
            problem = pristine.checks["import"]["message"]
        checks["stock"] = stock.compare(stock_items, result.stock, pristine.stock if pristine else {}, problem)
    if "loss" not in steps:
        checks["loss"] = {"status": "not-run", "message": reasons.get("loss", "not requested")}
    elif not imported:
        checks["loss"] = {"status": "skipped", "message": "the checkout could not be imported"}
    else:
        checks["loss"] = result.checks.get("loss") or step_record(FAILED, "the runner did not report the loss step")
    for model in models:
        model["yaml"] = _relative(model["yaml"], target.root)
    return VerifyReport(target=info, steps=list(steps), checks=checks, models=models,
                        recipes=list(selection.recipes), notes=notes)


def lock_figures(repo: Path, recipe_dirs=(), progress=None) -> list[dict]:
    """Per generated YAML and scale: parameters, GFLOPs at 640 and strides, for yolopatch.lock."""
    from ..errors import VerifyError

    report = run_verify(repo, quick=True, recipe_dirs=recipe_dirs, progress=progress)
    if not report.passed:
        raise VerifyError(f"cannot lock figures: {report.failure_summary()}")
    return [{"yaml": m["yaml"], "scale": m["scale"] or "", "params": m["params"], "gflops": round(m["gflops"], 2),
             "strides": list(m["strides"])} for m in report.models]


def lock_mismatches(report: VerifyReport, pinned: list[dict]) -> list[str]:
    """How the measured figures differ from yolopatch.lock: parameters, GFLOPs (> 0.1), strides."""
    locked = {(m["yaml"], m.get("scale", "")): m for m in pinned}
    problems = []
    for model in report.models:
        key = (model["yaml"], model["scale"] or "")
        if key not in locked:
            problems.append(f"{model['name']}: not pinned in yolopatch.lock")
            continue
        if model.get("params") is None:  # not measured (its verify failed earlier)
            continue
        want = locked[key]
        if model["params"] != want["params"]:
            problems.append(f"{model['name']}: {model['params']:,} parameters, the lock pins {want['params']:,}")
        if model.get("gflops") is not None and abs(model["gflops"] - want["gflops"]) > 0.1:
            problems.append(f"{model['name']}: {model['gflops']:.2f} GFLOPs, the lock pins {want['gflops']:.2f}")
        if list(model["strides"]) != list(want["strides"]):
            problems.append(f"{model['name']}: strides {model['strides']}, the lock pins {want['strides']}")
    return problems
