"""The targets' own trainers and predictors, called the way a user calls them, with their phases hooked.

ultralytics 8.0-8.4:  YOLO(yaml, task=...).train(data=..., epochs=1, ...) (RTDETR(yaml) for RT-DETR), then
                      YOLO(best.pt).predict(image) in a fresh interpreter.
YOLOv5 6.0-7.0:       train.run(cfg=yaml, data=..., weights="", epochs=1, ...) (segment/train.py for
                      segmentation), then detect.run(weights=best.pt, source=image) (segment/predict.py).

Only arguments the release knows are passed (8.0.x has no `amp`, YOLOv5 6.0 no `noplots`): the rest keep
the release's defaults, as in a user's run. Training runs on the CPU, so neither family's AMP check runs
(it would download yolov8n.pt / yolov5n.pt); the runner's network block makes any other download fail at
once instead of hanging. Nothing of the target is replaced: what fails here fails in the user's own run.
"""

from __future__ import annotations

import importlib
import inspect
import math
from pathlib import Path

import torch

from .adapters import import_first
from .phases import EMA, EPOCH, FINAL_EVAL, SAVE, SETUP, VALIDATION, Phases

BATCH = 4
EPOCHS = 1


def image_size(task: str, max_stride: int) -> int:
    """Training size: 64 px, at least two cells of the coarsest level; RT-DETR needs 128 (at 64 px its three
    levels have 84 anchor cells, fewer than the 300 queries its decoder selects)."""
    size = max(64, 2 * max_stride)
    return max(size, 128) if task == "rtdetr" else size


def finite(value) -> bool:
    """Every number in a loss value (tensor, dict of tensors or floats, sequence) is finite."""
    if value is None:
        return True
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(finite(v) for v in value)
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach().float()).all())
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


class UltralyticsTrainer:
    def __init__(self, spec):
        self.spec = spec

    def model_yaml(self, source: Path, d: dict, scale, name: str, folder: Path) -> Path:
        """The YAML the user would train: a copy holding only the scale to train, named like a per-scale
        file (yolov8n-x.yaml), so that every release picks that scale whether it reads `scale` from the
        file name or falls back to the first one."""
        import yaml

        d = {k: v for k, v in d.items() if k not in ("scale", "yaml_file", "ch")}
        if scale is not None and isinstance(d.get("scales"), dict):
            d["scales"] = {scale: d["scales"][scale]}
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(d, sort_keys=False), encoding="utf-8")
        return path

    def _wrapper(self, task: str):
        ultralytics = importlib.import_module("ultralytics")
        return getattr(ultralytics, "RTDETR") if task == "rtdetr" else getattr(ultralytics, "YOLO")

    def _known(self, arguments: dict) -> dict:
        """Only the arguments this release's default configuration declares."""
        defaults = import_first("ultralytics.utils:DEFAULT_CFG_DICT", "ultralytics.yolo.utils:DEFAULT_CFG_DICT")
        return {k: v for k, v in arguments.items() if k in defaults}

    def hook(self, phases: Phases) -> None:
        trainer = import_first("ultralytics.engine.trainer:BaseTrainer", "ultralytics.yolo.engine.trainer:BaseTrainer")
        phases.patch_class_tree(trainer, "_setup_train", SETUP, then=EPOCH)
        phases.patch_class_tree(trainer, "validate", VALIDATION)
        phases.patch_class_tree(trainer, "save_model", SAVE)
        phases.patch_class_tree(trainer, "final_eval", FINAL_EVAL)
        ema = import_first("ultralytics.utils.torch_utils:ModelEMA", "ultralytics.yolo.utils.torch_utils:ModelEMA")
        for name in ("__init__", "update", "update_attr"):
            phases.patch(ema, name, EMA)

    def train(self, yaml_path: Path, task: str, data: str, imgsz: int, folder: Path, phases: Phases) -> dict:
        model = self._wrapper(task)(str(yaml_path)) if task == "rtdetr" else \
            self._wrapper(task)(str(yaml_path), task=task)
        self.hook(phases)   # after the wrapper exists: every task trainer class is imported by now
        arguments = self._known({
            "data": data, "epochs": EPOCHS, "imgsz": imgsz, "batch": BATCH, "workers": 0, "device": "cpu",
            "plots": False, "amp": False, "val": True, "project": str(folder / "runs"), "name": "train",
            "exist_ok": True, "verbose": False})
        model.train(**arguments)
        trainer = model.trainer
        return {"best": str(trainer.best), "last": str(trainer.last), "loss_finite": finite(trainer.tloss),
                "metrics": {k: float(v) for k, v in (getattr(trainer, "metrics", None) or {}).items()
                            if isinstance(v, (int, float))}}

    def predict(self, best: Path, task: str, image: str, imgsz: int) -> str:
        model = self._wrapper(task)(str(best))
        arguments = self._known({"imgsz": imgsz, "device": "cpu", "save": False, "verbose": False})
        results = model.predict(source=image, **arguments)
        if len(results) != 1:
            raise RuntimeError(f"predict returned {len(results)} results for one image")
        result = results[0]
        found = next((getattr(result, key) for key in ("boxes", "obb", "probs") if getattr(result, key, None) is not None),
                     None)
        what = {"classify": "class probabilities"}.get(task, "detections")
        count = len(found) if found is not None and task != "classify" else None
        return f"{type(model).__name__}(best.pt).predict: " + (f"{count} {what}" if count is not None else what)


class Yolov5Trainer:
    def __init__(self, spec):
        self.spec = spec
        self.prefix = spec.package_prefix
        self.epoch_values = None

    def model_yaml(self, source: Path, d: dict, scale, name: str, folder: Path) -> Path:
        """YOLOv5 YAMLs hold one scale each: train.py gets the file itself (--cfg)."""
        return source

    def _module(self, task: str, script: str):
        folder = "segment." if task == "segment" else ""
        return importlib.import_module(f"{self.prefix}{folder}{script}")

    def hook(self, phases: Phases, task: str, train_module) -> None:
        ema = importlib.import_module(f"{self.prefix}utils.torch_utils").ModelEMA
        for name in ("__init__", "update", "update_attr"):
            phases.patch(ema, name, EMA)
        callbacks = importlib.import_module(f"{self.prefix}utils.callbacks").Callbacks
        # YOLOv5's train() announces its stages through callback hooks; the save block follows
        # on_fit_epoch_end, and the next epoch (or the end of training) follows on_model_save.
        moves = {"on_pretrain_routine_end": EPOCH, "on_train_start": EPOCH, "on_train_epoch_start": EPOCH,
                 "on_train_epoch_end": VALIDATION, "on_fit_epoch_end": SAVE, "on_model_save": EPOCH}

        def announce(_callbacks, hook, *args, **kwargs):
            if hook == "on_fit_epoch_end" and args:
                self.epoch_values = args[0]   # the epoch's mean losses, validation metrics and learning rates
            if hook in moves and phases.base != FINAL_EVAL:
                phases.move_to(moves[hook])

        phases.observe(callbacks, "run", announce)
        validator = self._module(task, "val")
        phases.patch(validator, "run", lambda: FINAL_EVAL if phases.base == FINAL_EVAL else VALIDATION)
        phases.patch(train_module, "strip_optimizer", FINAL_EVAL, then=FINAL_EVAL)

    def train(self, yaml_path: Path, task: str, data: str, imgsz: int, folder: Path, phases: Phases) -> dict:
        train_module = self._module(task, "train")
        self.hook(phases, task, train_module)
        known = vars(train_module.parse_opt(True))
        arguments = {"cfg": str(yaml_path), "data": data, "weights": "", "imgsz": imgsz, "batch_size": BATCH,
                     "epochs": EPOCHS, "device": "cpu", "workers": 0, "project": str(folder / "runs"),
                     "name": "train", "exist_ok": True, "noplots": True}
        train_module.run(**{k: v for k, v in arguments.items() if k in known})
        weights = folder / "runs" / "train" / "weights"
        return {"best": str(weights / "best.pt"), "last": str(weights / "last.pt"),
                "loss_finite": finite([float(v) for v in self.epoch_values or ()]), "metrics": {}}

    def predict(self, best: Path, task: str, image: str, imgsz: int) -> str:
        script = "predict" if task == "segment" else "detect"
        module = self._module(task, script)
        known = set(inspect.signature(module.run).parameters)
        arguments = {"weights": str(best), "source": image, "imgsz": [imgsz, imgsz], "device": "cpu",
                     "nosave": True, "project": str(best.parent.parent / "predict"), "name": "exp", "exist_ok": True}
        module.run(**{k: v for k, v in arguments.items() if k in known})
        where = "segment/predict.py" if task == "segment" else "detect.py"
        return f"{where} run(weights=best.pt, source=<image>)"


def make_trainer(spec):
    return Yolov5Trainer(spec) if spec.family == "yolov5" else UltralyticsTrainer(spec)
