"""What differs between the target families, seen from inside the target interpreter: reading and
building a model YAML, resolving its names, the training loss, saving and loading checkpoints the
way the target does, and the target's ONNX exporter. Everything else in the runner is shared."""

from __future__ import annotations

import contextlib
import datetime
import importlib
import inspect
from copy import deepcopy
from pathlib import Path

import torch

from ..protocol import task_of_head

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


@contextlib.contextmanager
def torchscript_onnx_exporter():
    """torch >= 2.9 exports with dynamo (which needs onnxscript) unless told otherwise; exporters written
    before that expect the TorchScript exporter, so an export call that does not choose gets that one."""
    original = torch.onnx.export
    accepts = "dynamo" in inspect.signature(original).parameters

    def export(*args, **kwargs):
        if accepts:
            kwargs.setdefault("dynamo", False)
        return original(*args, **kwargs)

    torch.onnx.export = export
    try:
        yield
    finally:
        torch.onnx.export = original


class Adapter:
    family = ""

    def __init__(self, spec):
        self.spec = spec
        self.root = Path(spec.root)
        self.prefix = spec.package_prefix
        self.parser = importlib.import_module(spec.parser_module)

    # names ---------------------------------------------------------------------------------------
    def resolves(self, name) -> bool:
        """Does a YAML module name resolve the way the target's parse_model resolves it?"""
        if not isinstance(name, str):
            return True
        if name.startswith("nn."):
            return hasattr(torch.nn, name[3:])
        if name.startswith("torch.nn."):
            return hasattr(torch.nn, name[9:])
        if name.startswith("torchvision."):
            try:
                obj = importlib.import_module("torchvision")
            except ImportError:
                return False
            parts = name.split(".")[1:]
        else:
            obj, parts = vars(self.parser), name.split(".")
            if parts[0] not in obj:
                return False
            obj, parts = obj[parts[0]], parts[1:]
        for part in parts:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True

    @staticmethod
    def rows(d: dict) -> list:
        return list(d.get("backbone") or []) + list(d.get("head") or [])

    def task(self, d: dict) -> str:
        """The task of a model YAML: its last row's head module (protocol.HEAD_TASKS)."""
        rows = [row for row in self.rows(d) if isinstance(row, (list, tuple)) and len(row) == 4]
        return (task_of_head(rows[-1][2]) if rows else None) or "detect"

    # hooks for subclasses --------------------------------------------------------------------------
    def load_yaml(self, path: Path) -> dict:
        raise NotImplementedError

    def scales(self, d: dict) -> list:
        return [None]

    def build(self, d: dict, scale, kind: str):
        raise NotImplementedError

    def loss(self, model, imgs, labels):
        raise NotImplementedError

    def save_checkpoint(self, model, path: Path) -> None:
        raise NotImplementedError

    def load_checkpoint(self, path: Path):
        raise NotImplementedError

    def export_onnx(self, checkpoint: Path, imgsz: tuple, kind: str) -> Path:
        raise NotImplementedError


class Ultralytics(Adapter):
    family = "ultralytics"

    def load_yaml(self, path: Path) -> dict:
        loader = getattr(self.parser, "yaml_model_load", None)
        if loader is not None:
            return loader(str(path))
        import yaml

        with open(path, encoding="utf-8", errors="ignore") as f:
            return yaml.safe_load(f)

    def scales(self, d: dict) -> list:
        return list(d["scales"]) if isinstance(d.get("scales"), dict) and d["scales"] else [None]

    def build(self, d: dict, scale, kind: str):
        d = deepcopy(d)
        if scale is not None:
            d["scale"] = scale
        cls = self.parser.RTDETRDetectionModel if kind == "rtdetr" else self.parser.DetectionModel
        return cls(cfg=d, ch=3, verbose=False)

    def _args(self):
        get_cfg = import_first("ultralytics.cfg:get_cfg", "ultralytics.yolo.cfg:get_cfg")
        default = import_first("ultralytics.utils:DEFAULT_CFG", "ultralytics.yolo.utils:DEFAULT_CFG")
        return get_cfg(default)

    def loss(self, model, imgs, labels):
        # What the trainer's set_model_attributes gives a model before the first loss: the hyperparameters
        # (the detection loss reads its gains from model.args) and the class count (RT-DETR's loss reads it).
        model.args = self._args()
        if getattr(model, "nc", None) is None:
            model.nc = int(model.yaml["nc"])
        batch = {"img": imgs, "cls": labels[:, 1:2], "bboxes": labels[:, 2:], "batch_idx": labels[:, 0]}
        out = model.loss(batch)
        total = out[0] if isinstance(out, (tuple, list)) else out
        return total.sum()

    def save_checkpoint(self, model, path: Path) -> None:
        """Like the trainer: a half-precision deep copy of the model in a dict with the training args."""
        saved = deepcopy(model)
        saved.criterion = None  # the trainer saves an EMA copy that never computed a loss
        args = getattr(model, "args", None)
        version = getattr(importlib.import_module("ultralytics"), "__version__", "")
        ckpt = {"epoch": -1, "best_fitness": None, "model": saved.half(), "ema": None, "updates": 0,
                "optimizer": None, "train_args": dict(vars(args)) if args is not None and hasattr(args, "__dict__") else {},
                "date": datetime.datetime.now().isoformat(), "version": version}
        torch.save(ckpt, str(path))

    def load_checkpoint(self, path: Path):
        loader = getattr(self.parser, "load_checkpoint", None) or getattr(self.parser, "attempt_load_one_weight")
        model, _ = loader(str(path))
        return model.float().eval()

    def export_onnx(self, checkpoint: Path, imgsz: tuple, kind: str) -> Path:
        ultralytics = importlib.import_module("ultralytics")
        wrapper = getattr(ultralytics, "RTDETR") if kind == "rtdetr" else getattr(ultralytics, "YOLO")
        # RT-DETR's grid_sample needs opset 16; releases before 8.3 derive a lower default from torch.
        opset = {"opset": 17} if kind == "rtdetr" else {}
        with torchscript_onnx_exporter():
            out = wrapper(str(checkpoint)).export(format="onnx", imgsz=list(imgsz), simplify=False, dynamic=False,
                                                 device="cpu", **opset)
        return Path(out) if out else checkpoint.with_suffix(".onnx")


class Yolov5(Adapter):
    family = "yolov5"

    def load_yaml(self, path: Path) -> dict:
        import yaml

        with open(path, encoding="ascii", errors="ignore") as f:  # as yolov5's Model reads it
            return yaml.safe_load(f)

    def build(self, d: dict, scale, kind: str):
        cls = getattr(self.parser, "DetectionModel", None) or self.parser.Model
        return cls(cfg=deepcopy(d), ch=3)

    def _hyp(self) -> dict:
        hyp = dict(_YOLOV5_HYP)
        if self.spec.hyp_file:
            import yaml

            with open(self.spec.hyp_file, encoding="utf-8", errors="ignore") as f:
                hyp.update(yaml.safe_load(f) or {})
        return hyp

    def loss(self, model, imgs, labels):
        compute_loss = importlib.import_module(f"{self.prefix}utils.loss").ComputeLoss
        # as train.py sets them: ComputeLoss reads model.hyp, and export.py of some releases reads model.nc
        model.hyp, model.gr = self._hyp(), 1.0
        if getattr(model, "nc", None) is None:
            model.nc = int(model.yaml["nc"])
        preds = model(imgs)
        total, _ = compute_loss(model)(preds, labels)
        return total.sum()

    def save_checkpoint(self, model, path: Path) -> None:
        """Like train.py: a half-precision deep copy of the model in a dict."""
        ckpt = {"epoch": -1, "best_fitness": None, "model": deepcopy(model).half(), "ema": None, "updates": None,
                "optimizer": None, "opt": {}, "date": datetime.datetime.now().isoformat()}
        torch.save(ckpt, str(path))

    @contextlib.contextmanager
    def local_files_only(self):
        """attempt_download() of some releases asks the Hugging Face hub about every path, even a local
        file (and the yolov5 7.0.x package imports a huggingface_hub module newer releases removed): for a
        file that exists it returns the path unchanged, which is what it would do offline anyway."""
        modules = [importlib.import_module(f"{self.prefix}{name}") for name in ("utils.downloads", "models.experimental")]
        saved = [(m, m.attempt_download) for m in modules if hasattr(m, "attempt_download")]

        def attempt_download(file, *args, **kwargs):
            if Path(str(file)).is_file():
                return str(file)
            return saved[0][1](file, *args, **kwargs)

        for module, _ in saved:
            module.attempt_download = attempt_download
        try:
            yield
        finally:
            for module, original in saved:
                module.attempt_download = original

    def load_checkpoint(self, path: Path):
        attempt_load = importlib.import_module(f"{self.prefix}models.experimental").attempt_load
        kwargs = {"fuse": False} if "fuse" in inspect.signature(attempt_load).parameters else {}
        with self.local_files_only():
            return attempt_load(str(path), **kwargs).float().eval()

    def export_onnx(self, checkpoint: Path, imgsz: tuple, kind: str) -> Path:
        try:
            exporter = importlib.import_module(f"{self.prefix}export")
        except ModuleNotFoundError:  # a checkout without export.py: plain torch.onnx, as export.py would do it
            return self._torch_onnx(checkpoint, imgsz)
        with torchscript_onnx_exporter(), self.local_files_only():
            exporter.run(weights=str(checkpoint), imgsz=list(imgsz), include=("onnx",), device="cpu")
        return checkpoint.with_suffix(".onnx")

    def _torch_onnx(self, checkpoint: Path, imgsz: tuple) -> Path:
        model = self.load_checkpoint(checkpoint)
        for module in model.modules():
            if hasattr(module, "export") and type(module).__name__ in ("Detect", "Segment"):
                module.export = True  # outputs the decoded boxes only
        path = checkpoint.with_suffix(".onnx")
        with torchscript_onnx_exporter():
            torch.onnx.export(model, torch.zeros(1, 3, *imgsz), str(path), opset_version=12, input_names=["images"],
                              output_names=["output0"])
        return path


def make_adapter(spec) -> Adapter:
    return {"ultralytics": Ultralytics, "yolov5": Yolov5}[spec.family](spec)
