"""What differs between the target families, seen from inside the target interpreter: reading and
building a model YAML, resolving its names, the training loss, saving and loading checkpoints the
way the target does, and the target's ONNX exporter. Everything else in the runner is shared."""

from __future__ import annotations

import contextlib
import datetime
import importlib
import inspect
import types
from copy import deepcopy
from pathlib import Path

import torch

from ..protocol import UNVERIFIED_TASKS, StepFailure, task_of_head
from .tasks import task_of_class, yolov5_targets

# YOLOv5's hyp.scratch-low.yaml values the loss reads, used only when a checkout lacks the file.
_YOLOV5_HYP = {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "iou_t": 0.2,
               "anchor_t": 4.0, "fl_gamma": 0.0, "label_smoothing": 0.0}


def import_first(*candidates: str):
    """The first importable "module:attribute" (or module) of several release-dependent locations."""
    failures = []
    for candidate in candidates:
        module_name, _, attribute = candidate.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            failures.append(f"{module_name} ({exc})")
            continue
        if not attribute:
            return module
        if hasattr(module, attribute):
            return getattr(module, attribute)
        failures.append(f"{module_name} has no {attribute}")
    raise ImportError("; ".join(failures))


def primary_tensor(output):
    """The main output of a model call: the first tensor in (nested) tuples, lists and dicts."""
    while not isinstance(output, torch.Tensor):
        if isinstance(output, dict):
            output = next(iter(output.values()))
        elif isinstance(output, (list, tuple)) and output:
            output = output[0]
        else:
            raise TypeError(f"model output of type {type(output).__name__} holds no tensor")
    return output


_MISSING = object()


@contextlib.contextmanager
def class_state(parser):
    """Undo, after a build, what parse_model changes on classes for the whole process: the default activation
    of Conv (a YAML's `activation:` key; ultralytics restores it itself since 8.4, older releases and YOLOv5
    do not) and the `legacy` flag ultralytics (8.3.17+) sets on Detect and its subclasses (False when C3k2,
    A2C2f or C2fCIB appear). Without this the first model built changes the next one in the same process."""
    conv, detect = getattr(parser, "Conv", None), getattr(parser, "Detect", None)
    act = conv.__dict__.get("default_act", _MISSING) if isinstance(conv, type) else _MISSING
    heads = _with_subclasses(detect) if isinstance(detect, type) else []
    flags = {cls: cls.__dict__.get("legacy", _MISSING) for cls in heads}
    try:
        yield
    finally:
        if act is not _MISSING:
            conv.default_act = act
        for cls, value in flags.items():
            if value is _MISSING:
                if "legacy" in cls.__dict__:
                    delattr(cls, "legacy")
            else:
                cls.legacy = value


def _with_subclasses(cls) -> list:
    found, todo = [], [cls]
    while todo:
        klass = todo.pop()
        if klass not in found:
            found.append(klass)
            todo.extend(klass.__subclasses__())
    return found


class Adapter:
    family = ""
    model_classes: dict = {}     # task -> names of the parser module's model classes that build it, first found
    absent: dict = {}            # task -> why this family has no model class for it

    def __init__(self, spec):
        self.spec = spec
        self.root = Path(spec.root)
        self.prefix = spec.package_prefix
        self.parser = importlib.import_module(spec.parser_module)

    # names ---------------------------------------------------------------------------------------
    def resolve(self, name):
        """The object a YAML module name resolves to the way the target's parse_model resolves it, or None."""
        if not isinstance(name, str):
            return name
        if name.startswith("nn."):
            return getattr(torch.nn, name[3:], None)
        if name.startswith("torch.nn."):
            return getattr(torch.nn, name[9:], None)
        if name.startswith("torchvision."):
            try:
                obj = importlib.import_module("torchvision")
            except ImportError:
                return None
            parts = name.split(".")[1:]
        else:
            obj, parts = vars(self.parser), name.split(".")
            if parts[0] not in obj:
                return None
            obj, parts = obj[parts[0]], parts[1:]
        for part in parts:
            if not hasattr(obj, part):
                return None
            obj = getattr(obj, part)
        return obj

    def resolves(self, name) -> bool:
        return self.resolve(name) is not None

    @staticmethod
    def rows(d: dict) -> list:
        return list(d.get("backbone") or []) + list(d.get("head") or [])

    def task(self, d: dict) -> str:
        """The task of a model YAML: its head (last row) class or the nearest base class verify knows."""
        rows = [row for row in self.rows(d) if isinstance(row, (list, tuple)) and len(row) == 4]
        if not rows:
            return "detect"
        name = rows[-1][2]
        return task_of_class(self.resolve(name)) or task_of_head(name) or "detect"

    def unverified(self, task: str) -> str | None:
        """Why verify does not build models of this task here (None: it does)."""
        return UNVERIFIED_TASKS.get(task) or self.absent.get(task)

    def model_class(self, task: str):
        """The target's model class for a task; StepFailure when this release has none."""
        for name in self.model_classes.get(task, ()):
            cls = getattr(self.parser, name, None)
            if cls is not None:
                return cls
        if task in self.absent:
            raise StepFailure(self.absent[task])
        names = " / ".join(self.model_classes.get(task, ())) or "a model class"
        raise StepFailure(f"{self.spec.flavour} {self.spec.version} has no {names} for {task} models")

    def build(self, d: dict, scale, task: str):
        cls = self.model_class(task)
        with class_state(self.parser):
            return self._construct(cls, deepcopy(d), scale)

    # hooks for subclasses --------------------------------------------------------------------------
    def load_yaml(self, path: Path) -> dict:
        raise NotImplementedError

    def scales(self, d: dict) -> list:
        return [None]

    def _construct(self, cls, d: dict, scale):
        raise NotImplementedError

    def loss(self, model, task: str, imgs, labels: dict):
        return self.loss_with_items(model, task, imgs, labels)[0]

    def loss_with_items(self, model, task: str, imgs, labels: dict):
        """(total loss to backpropagate, the detached per-term losses the target reports, box term first)."""
        raise NotImplementedError

    def save_checkpoint(self, model, optimizer, path: Path) -> None:
        """Write the checkpoint the target's trainer writes after an epoch."""
        raise NotImplementedError

    def finish_training(self, path: Path) -> None:
        """What the target's trainer does with its checkpoints when training ends."""
        raise NotImplementedError

    def load_checkpoint(self, path: Path):
        raise NotImplementedError

    def export_onnx(self, checkpoint: Path, imgsz: tuple, kind: str) -> Path:
        raise NotImplementedError


# releases before model.loss: the trainer class whose criterion() computes each task's loss
_OLD_TRAINERS = {"detect": ("detect", "DetectionTrainer"), "segment": ("segment", "SegmentationTrainer"),
                 "pose": ("pose", "PoseTrainer"), "classify": ("classify", "ClassificationTrainer")}


class Ultralytics(Adapter):
    family = "ultralytics"
    model_classes = {"detect": ("DetectionModel",), "segment": ("SegmentationModel",), "pose": ("PoseModel",),
                     "obb": ("OBBModel",), "classify": ("ClassificationModel",),
                     "rtdetr": ("RTDETRDetectionModel",)}

    def load_yaml(self, path: Path) -> dict:
        loader = getattr(self.parser, "yaml_model_load", None)
        if loader is not None:
            return loader(str(path))
        import yaml

        with open(path, encoding="utf-8", errors="ignore") as f:
            return yaml.safe_load(f)

    def scales(self, d: dict) -> list:
        return list(d["scales"]) if isinstance(d.get("scales"), dict) and d["scales"] else [None]

    def _construct(self, cls, d: dict, scale):
        if scale is not None:
            d["scale"] = scale
        return cls(cfg=d, ch=3, verbose=False)

    def _args(self):
        get_cfg = import_first("ultralytics.cfg:get_cfg", "ultralytics.yolo.cfg:get_cfg")
        default = import_first("ultralytics.utils:DEFAULT_CFG", "ultralytics.yolo.utils:DEFAULT_CFG")
        return get_cfg(default)

    def loss_with_items(self, model, task: str, imgs, labels: dict):
        # What the trainer's set_model_attributes gives a model before the first loss: the hyperparameters
        # (the losses read their gains from model.args) and the class count (RT-DETR's loss reads it).
        model.args = self._args()
        if getattr(model, "nc", None) is None:
            model.nc = int(model.yaml["nc"])
        batch = {"img": imgs, **labels}
        if callable(getattr(model, "loss", None)):   # model.loss / init_criterion: 8.0.1xx and later
            out = model.loss(batch)
        else:                                        # earlier: the task trainer's criterion(preds, batch)
            out = self._trainer_criterion(model, task)(model(imgs), batch)
        total, items = out if isinstance(out, (tuple, list)) else (out, out.detach())
        if isinstance(items, dict):   # 8.4: {"box": ..., "cls": ..., "dfl": ...}
            items = list(items.values())
        return total.sum(), items

    def _trainer_criterion(self, model, task: str):
        """The criterion method of the release's own trainer for the task, bound to a stand-in holding
        exactly what it reads (the model and the training arguments)."""
        if task not in _OLD_TRAINERS:
            raise StepFailure(f"ultralytics {self.spec.version} has no model.loss and no trainer for {task} models")
        folder, name = _OLD_TRAINERS[task]
        trainer = import_first(f"ultralytics.yolo.v8.{folder}.train:{name}")
        holder = types.SimpleNamespace(model=model, args=model.args)
        return lambda preds, batch: trainer.criterion(holder, preds, batch)

    def save_checkpoint(self, model, optimizer, path: Path) -> None:
        """Like the trainer's save_model: half-precision copies of the model and of its EMA (the model itself
        after one step), the optimizer state and the training arguments."""
        ema = deepcopy(model)
        ema.criterion = None  # the trainer strips the loss from what it saves
        args = getattr(model, "args", None)
        version = getattr(importlib.import_module("ultralytics"), "__version__", "")
        ckpt = {"epoch": 0, "best_fitness": None, "model": deepcopy(ema).half(), "ema": ema.half(), "updates": 1,
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "train_args": dict(vars(args)) if args is not None and hasattr(args, "__dict__") else {},
                "date": datetime.datetime.now().isoformat(), "version": version}
        torch.save(ckpt, str(path))   # the target's torch.save where it replaces it (8.1-8.2)

    def finish_training(self, path: Path) -> None:
        """The trainer's final_eval: strip_optimizer on the checkpoint (the EMA becomes the model, half
        precision, no optimizer), with the release's own torch.load."""
        strip = import_first("ultralytics.utils.torch_utils:strip_optimizer",
                             "ultralytics.yolo.utils.torch_utils:strip_optimizer")
        strip(str(path))

    def load_checkpoint(self, path: Path):
        loader = getattr(self.parser, "load_checkpoint", None) or getattr(self.parser, "attempt_load_one_weight")
        model, _ = loader(str(path))
        return model.float().eval()

    def export_onnx(self, checkpoint: Path, imgsz: tuple, kind: str) -> Path:
        """`YOLO(best.pt).export(format="onnx")` (RTDETR for RT-DETR) with the release's own defaults: its
        opset, its choice of exporter, its loader."""
        ultralytics = importlib.import_module("ultralytics")
        wrapper = getattr(ultralytics, "RTDETR") if kind == "rtdetr" else getattr(ultralytics, "YOLO")
        out = wrapper(str(checkpoint)).export(format="onnx", imgsz=list(imgsz), simplify=False, dynamic=False,
                                             device="cpu")
        return Path(out) if out else checkpoint.with_suffix(".onnx")


class Yolov5(Adapter):
    family = "yolov5"
    model_classes = {"detect": ("DetectionModel", "Model"), "segment": ("SegmentationModel",)}
    absent = {"classify": "YOLOv5 builds a classifier from a trained detection checkpoint (ClassificationModel("
                          "model=..., cutoff=...) in classify/train.py), never from a model YAML: verify the detection "
                          "YAML instead"}

    def load_yaml(self, path: Path) -> dict:
        import yaml

        with open(path, encoding="ascii", errors="ignore") as f:  # as yolov5's Model reads it
            return yaml.safe_load(f)

    def _construct(self, cls, d: dict, scale):
        return cls(cfg=d, ch=3)

    def _hyp(self) -> dict:
        hyp = dict(_YOLOV5_HYP)
        if self.spec.hyp_file:
            import yaml

            with open(self.spec.hyp_file, encoding="utf-8", errors="ignore") as f:
                hyp.update(yaml.safe_load(f) or {})
        return hyp

    def loss_with_items(self, model, task: str, imgs, labels: dict):
        # as train.py sets them: ComputeLoss reads model.hyp, and export.py of some releases reads model.nc
        model.hyp, model.gr = self._hyp(), 1.0
        if getattr(model, "nc", None) is None:
            model.nc = int(model.yaml["nc"])
        targets = yolov5_targets(model)
        preds = model(imgs)
        if task == "segment":   # segment/train.py: overlapping masks (its default), at a quarter of the image size
            compute_loss = importlib.import_module(f"{self.prefix}utils.segment.loss").ComputeLoss(model, overlap=True)
            total, items = compute_loss(preds, targets, masks=labels["masks"])
        else:
            total, items = importlib.import_module(f"{self.prefix}utils.loss").ComputeLoss(model)(preds, targets)
        return total.sum(), items

    def save_checkpoint(self, model, optimizer, path: Path) -> None:
        """Like train.py after an epoch: half-precision copies of the model and of its EMA (the model itself
        after one step), the optimizer state, the options."""
        ckpt = {"epoch": 0, "best_fitness": None, "model": deepcopy(model).half(), "ema": deepcopy(model).half(),
                "updates": 1, "optimizer": optimizer.state_dict() if optimizer is not None else None, "opt": {},
                "date": datetime.datetime.now().isoformat()}
        torch.save(ckpt, str(path))

    def finish_training(self, path: Path) -> None:
        """The end of train.py: strip_optimizer on the checkpoint, with the release's own torch.load."""
        importlib.import_module(f"{self.prefix}utils.general").strip_optimizer(str(path))

    def load_checkpoint(self, path: Path):
        attempt_load = importlib.import_module(f"{self.prefix}models.experimental").attempt_load
        kwargs = {"fuse": False} if "fuse" in inspect.signature(attempt_load).parameters else {}
        return attempt_load(str(path), **kwargs).float().eval()

    def export_onnx(self, checkpoint: Path, imgsz: tuple, kind: str) -> Path:
        try:
            exporter = importlib.import_module(f"{self.prefix}export")
        except ModuleNotFoundError:  # a checkout without export.py: plain torch.onnx, as export.py would do it
            return self._torch_onnx(checkpoint, imgsz)
        exporter.run(weights=str(checkpoint), imgsz=list(imgsz), include=("onnx",), device="cpu")
        return checkpoint.with_suffix(".onnx")

    def _torch_onnx(self, checkpoint: Path, imgsz: tuple) -> Path:
        model = self.load_checkpoint(checkpoint)
        for module in model.modules():
            if hasattr(module, "export") and type(module).__name__ in ("Detect", "Segment"):
                module.export = True  # outputs the decoded boxes only
        path = checkpoint.with_suffix(".onnx")
        torch.onnx.export(model, torch.zeros(1, 3, *imgsz), str(path), opset_version=12, input_names=["images"],
                          output_names=["output0"])
        return path


def make_adapter(spec) -> Adapter:
    return {"ultralytics": Ultralytics, "yolov5": Yolov5}[spec.family](spec)
