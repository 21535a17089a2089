"""`verify --fit`: the target's own trainer trains each model (its first scale) for one epoch on a small
synthetic dataset of the model's task, validates and saves best.pt; then a fresh interpreter loads best.pt
through the target's user API and predicts an image.

Both halves run in interpreters of their own (runner mode "fit", one per stage): a trainer changes
process-wide state (deterministic algorithms, logging, seeds, callbacks) that must not leak into the
ladder or into the next model, and predicting from a fresh interpreter is what proves best.pt unpickles
there. A failure names the trainer phase it happened in (phases.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..protocol import FAILED, PASSED, RunnerOutput, StepFailure
from .datasets import LABELS, TRAIN_IMAGES, VAL_IMAGES, write_dataset
from .phases import EPOCH, PREDICT, SAVE, SETUP, Phases

STAGE_TIMEOUT = 900.0   # seconds for one stage of one model (an n-scale model takes well under a minute)
_INTERNET = (socket.AF_INET, socket.AF_INET6)


# the ladder's side ----------------------------------------------------------------------------------------
class Fitter:
    """Runs the two stages of one model's fit, each in a fresh interpreter of this runner."""

    def __init__(self, spec, entry: Path, work: Path):
        self.spec, self.entry, self.root = spec, entry, work / "fit"

    def fit(self, run, position: int) -> str:
        folder = self.root / f"{position:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', run.name)}"
        folder.mkdir(parents=True, exist_ok=True)
        strides = run.record.get("strides") or [32]
        job = {"name": run.name, "yaml": run.record["yaml"], "scale": run.record["scale"], "task": run.record["kind"],
               "folder": str(folder), "max_stride": int(max(strides))}
        trained = self._stage(dict(job, stage="train"), folder)
        if trained["status"] != PASSED:
            raise StepFailure(f"{trained['phase']} phase: {trained['message']}")
        predicted = self._stage(dict(job, stage="predict", best=trained["best"], image=trained["image"],
                                     imgsz=trained["imgsz"]), folder)
        if predicted["status"] != PASSED:
            raise StepFailure(f"{PREDICT} phase: {predicted['message']}")
        cpu = trained["cpu_seconds"] + predicted["cpu_seconds"]
        attempts = list(dict.fromkeys(trained.get("network", []) + predicted.get("network", [])))
        return f"{trained['message']}; {predicted['message']} in a fresh interpreter ({trained['seconds']:.1f}s " \
               f"training, {predicted['seconds']:.1f}s predicting; the two interpreters used {cpu:.1f}s of CPU " \
               f"time){_refused(attempts)}"

    def _stage(self, job: dict, folder: Path) -> dict:
        stage = job["stage"]
        job_path, result = folder / f"{stage}-job.json", folder / f"{stage}-result.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        spec = self.spec.but(mode="fit", items_file=str(job_path), result=str(result), yamls=(), stock=(),
                             task_stock=(), shadow_check=False, parent_pid=0)
        spec_path = folder / f"{stage}-spec.json"
        spec_path.write_text(spec.to_json(), encoding="utf-8")
        log = folder / f"{stage}.log"
        phase = SETUP if stage == "train" else PREDICT
        before = _children_cpu()
        with open(log, "wb") as out:
            try:
                code = subprocess.run([sys.executable, str(self.entry), str(spec_path)], cwd=folder,
                                      stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=STAGE_TIMEOUT).returncode
            except subprocess.TimeoutExpired:
                return _failed(phase, f"no result after {STAGE_TIMEOUT:.0f}s", 0.0)
        if result.is_file():
            outcome = RunnerOutput.from_json(result.read_text(encoding="utf-8")).fit
            if outcome:
                # the interpreter's whole CPU time (start-up and imports too): on one thread, about the wall
                # time the stage takes on an idle machine
                return dict(outcome, cpu_seconds=round(_children_cpu() - before, 2))
        return _failed(phase, f"its interpreter exited with code {code} without a result; last output: {_tail(log)}",
                       0.0)


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (0 where the platform has no `resource`: Windows)."""
    try:
        import resource
    except ImportError:
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tail(log: Path, lines: int = 6) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def _failed(phase: str, message: str, seconds: float) -> dict:
    return {"status": FAILED, "phase": phase, "message": message, "seconds": round(seconds, 2)}


# the stage interpreters ------------------------------------------------------------------------------------
@contextlib.contextmanager
def network_attempts():
    """Record every connection attempt (the runner refuses them all: env.block_network), so that a stage can
    say what the target tried to reach: a download the user's own run would make."""
    attempts: list = []
    saved = [(owner, name, getattr(owner, name)) for owner, name in (
        (socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
        (socket, "getaddrinfo"))]

    def recording(original, name):
        def call(*args, **kwargs):
            if name in ("connect", "connect_ex") and getattr(args[0], "family", None) not in _INTERNET:
                return original(*args, **kwargs)   # a local (unix) socket
            target = args[1] if name in ("connect", "connect_ex") and len(args) > 1 else args[0] if args else "?"
            entry = f"{target[0]}:{target[1]}" if isinstance(target, tuple) and len(target) > 1 else str(target)
            if entry not in attempts:
                attempts.append(entry)
            return original(*args, **kwargs)
        return call

    for owner, name, original in saved:
        setattr(owner, name, recording(original, name))
    try:
        yield attempts
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _refused(attempts: list) -> str:
    if not attempts:
        return ""
    return f"; it tried to reach the network ({', '.join(attempts[:4])}{' ...' if len(attempts) > 4 else ''}): " \
           "refused, as every connection is while verify runs"


def stage_main(spec, ready: bool, import_record: dict) -> dict:
    """Runner mode "fit": one stage of one model's fit, described by the job file `spec.items_file`."""
    job = json.loads(Path(spec.items_file).read_text(encoding="utf-8"))
    if not ready:
        return _failed(SETUP if job["stage"] == "train" else PREDICT, import_record["message"], 0.0)
    from .adapters import make_adapter
    from .trainers import make_trainer

    adapter = make_adapter(spec)
    trainer = make_trainer(spec)
    if job["stage"] == "train":
        return _train(adapter, trainer, job)
    return _predict(trainer, job)


def _train(adapter, trainer, job: dict) -> dict:
    from .messages import describe
    from .trainers import image_size

    folder, task = Path(job["folder"]), job["task"]
    phases = Phases(SETUP)
    start = time.perf_counter()
    imgsz = image_size(task, job["max_stride"])
    with network_attempts() as attempts:
        try:
            d = adapter.load_yaml(Path(job["yaml"]))
            dataset = write_dataset(folder / "dataset", task, d.get("kpt_shape"))
            yaml_path = trainer.model_yaml(Path(job["yaml"]), d, job["scale"], job["name"], folder)
            outcome = trainer.train(yaml_path, task, dataset.data, imgsz, folder, phases)
        except BaseException as exc:  # SystemExit too: YOLOv5's scripts exit on some errors
            return _failed(phases.where_failed(), describe(exc) + _refused(attempts), time.perf_counter() - start)
        finally:
            phases.restore()
    seconds = time.perf_counter() - start
    best = Path(outcome["best"])
    if not best.is_file():
        return _failed(SAVE, f"training finished without writing {best.name} ({best})", seconds)
    if not outcome["loss_finite"]:
        return _failed(EPOCH, "the training loss is not finite after one epoch", seconds)
    size = best.stat().st_size / 1e6
    return {"status": PASSED, "phase": "", "best": str(best), "image": dataset.sample_image, "imgsz": imgsz,
            "seconds": round(seconds, 2),
            "message": f"one epoch on {TRAIN_IMAGES} images ({LABELS.get(task, task)}) at {imgsz} px, validated on "
                       f"{VAL_IMAGES}, best.pt saved ({size:.1f} MB)", "network": attempts}


def _predict(trainer, job: dict) -> dict:
    from .messages import describe

    start = time.perf_counter()
    with network_attempts() as attempts:
        try:
            message = trainer.predict(Path(job["best"]), job["task"], job["image"], int(job["imgsz"]))
        except BaseException as exc:
            return _failed(PREDICT, describe(exc) + _refused(attempts), time.perf_counter() - start)
    return {"status": PASSED, "phase": "", "message": message, "network": attempts,
            "seconds": round(time.perf_counter() - start, 2)}
