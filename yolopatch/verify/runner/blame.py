"""Environment or patch? When a model's step fails, the stock model of the same task (the spec's
task_stock: a pristine config of the release, with a one-to-one head when the model has one) climbs the
same steps in this interpreter, and its checkpoint is reloaded in a fresh one. If it fails the same step
the same way, the environment is the cause (the patch is fine: the stock model fails too); otherwise the
patch is. Every failed step gets a `cause` record (causes.cause_record). Stock runs are taken only when
something failed, once per stock model."""

from __future__ import annotations

from pathlib import Path

from ..protocol import FAILED, MODEL_STEPS, ModelYaml
from .causes import ENVIRONMENT, NETWORK_BLOCKED, PATCH, cause_record, recognise, same_failure
from .env import progress

# Steps a stock model cannot fail in a way that tells anything about the environment: names are resolved
# in the patched parser file itself.
_NOT_COMPARED = ("names",)


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[:limit] + " ..."


def stock_for(spec, run):
    """The stock model to compare a model with: its task's, with a one-to-one head if the model's YAML
    asks for one (YOLO26's end2end key), else any of its task; None when the release has none."""
    end2end = bool((run.d or {}).get("end2end"))
    candidates = [s for s in spec.task_stock if s.task == run.record["kind"]]
    matching = [s for s in candidates if s.end2end == end2end]
    return (matching or candidates or [None])[0]


def _stock_runs(ladder, wanted: dict) -> dict:
    """Climb each stock model through the steps up to the furthest one a model failed; name -> ModelRun."""
    runs = {}
    for name, (stock, last) in wanted.items():
        steps = [s for s in ladder.spec.steps if s not in MODEL_STEPS or MODEL_STEPS.index(s) <= MODEL_STEPS.index(last)]
        yaml = ModelYaml(str(Path(ladder.spec.root) / stock.yaml), "stock")
        run = ladder.read(yaml, steps, {}, scale=stock.scale)[0]
        run.record["name"] = f"{name} (stock)"   # never the same name as a model verified
        runs[name] = run
    progress(f"blame   building {', '.join(runs)} to compare a failure with the stock model of its task")
    ladder.climb_all(list(runs.values()))
    return runs


def _verdict(run, step: str, stock_run) -> dict:
    message = run.record["steps"][step]["message"]
    if NETWORK_BLOCKED in message:   # verify's own environment: the user's run would download the file
        return cause_record(ENVIRONMENT, "the step needs the network, which verify turns off", message)
    if stock_run is None:
        return cause_record(PATCH, "no stock model of this task to compare with in this release", message)
    entry = stock_run.record["steps"][step]
    name = stock_run.name.replace(" (stock)", "")
    if entry["status"] == FAILED:
        if same_failure(message, entry["message"], (run.name, name)):
            known = recognise(message) is not None   # then the message says it already
            return cause_record(ENVIRONMENT, f"the stock {name} fails {step} the same way"
                                + ("" if known else f": {_short(entry['message'])}"), message)
        return cause_record(PATCH, f"the stock {name} fails {step} differently: {_short(entry['message'])}", message)
    earlier = next((s for s in MODEL_STEPS if stock_run.record["steps"][s]["status"] == FAILED), None)
    if earlier:
        detail = stock_run.record["steps"][earlier]["message"]
        return cause_record(PATCH, f"the stock {name} fails earlier, at {earlier}: {_short(detail)}", message)
    return cause_record(PATCH, f"the stock {name} passes {step} in this environment", message)


def attribute_causes(ladder) -> None:
    failures = [(run, step) for run in ladder.runs for step in MODEL_STEPS if run.failed(step)]
    if not failures:
        return
    wanted = {}
    for run, step in failures:
        stock = stock_for(ladder.spec, run) if step not in _NOT_COMPARED else None
        if stock is not None:
            _, last = wanted.get(stock.name, (stock, step))
            wanted[stock.name] = (stock, max(last, step, key=MODEL_STEPS.index))
    stock_runs = _stock_runs(ladder, wanted) if wanted else {}
    for run, step in failures:
        if step in _NOT_COMPARED:
            cause = cause_record(PATCH, "names are resolved in the patched checkout itself",
                                 run.record["steps"][step]["message"])
        else:
            stock = stock_for(ladder.spec, run)
            cause = _verdict(run, step, stock_runs.get(stock.name) if stock is not None else None)
        run.record["steps"][step]["cause"] = cause
        progress(f"blame   {run.name} {step}: the {cause['origin']}"
                 + (f" ({cause['name']})" if cause["name"] else "") + f"; {cause['evidence']}")
