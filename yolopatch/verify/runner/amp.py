"""Step `amp`: the model in mixed and in low precision, as the trainers and validators run it on a GPU.

1. The train step under torch.autocast (float16 on CUDA, bfloat16 on the CPU), on the first image of its
   synthetic batch (both for YOLOv5, whose loss builds its own targets): the loss must be finite and
   gradients must reach every parameter of every new module.
2. A forward of the model converted to that precision (ultralytics and YOLOv5 validate with
   `model.half()` on a GPU): it must run, and give finite outputs unless a module of the target itself is
   the first to lose them (torch's CPU kernels are not all sound in half precision). A module that creates a float32 tensor or
   buffer inside forward (torch.zeros(...) without a dtype, `.float()`, a float32 attribute that is not a
   registered buffer) breaks the next layer; hooks on every layer name the one that raised and the first
   one (preferably inside a new module) that turned a low-precision input into a float32 output.
"""

from __future__ import annotations

import math
from copy import deepcopy

import torch

from ..protocol import StepFailure
from .adapters import primary_tensor
from .layers import seeded_input, train_size, yaml_row
from .train import hold_stochastic_depth, synthetic_batch


def low_precision() -> tuple:
    """(device type, dtype) of the mixed-precision mode this machine trains with."""
    if torch.cuda.is_available():
        return "cuda", torch.float16
    return "cpu", torch.bfloat16


def tensors_in(value) -> list:
    """The tensors in a module's inputs or outputs (nested tuples, lists and dicts), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    return []


def _floating(value) -> list:
    return [t for t in tensors_in(value) if t.is_floating_point()]


def layer_label(model, path: str) -> str:
    """`model.0.stem.1` -> `MobileNetV4ConvSmall (row 0): stem.1 (BatchNorm2d)` (the YAML's own row numbering)."""
    parts = path.split(".")
    if len(parts) >= 2 and parts[0] == "model" and parts[1].isdigit():
        layer = model.model[int(parts[1])]
        inner = ".".join(parts[2:])
        where = f"{type(layer).__name__} (row {yaml_row(model, layer)})"
        if not inner:
            return where
        return f"{where}: {inner} ({type(layer.get_submodule(inner)).__name__})"
    return f"{path or 'the model'} ({type(model.get_submodule(path)).__name__ if path else type(model).__name__})"


class DtypeTrace:
    """Forward hooks on every submodule: which ones are running (innermost last); the first one whose
    floating inputs were all `dtype` but which returned a float32 tensor, overall and inside new modules
    (`new_prefixes`: their paths); and the first one that returned non-finite values from finite inputs.
    Stock heads may return float32 harmlessly (RT-DETR's decoder does); a new module doing it is the
    likely cause when a later layer raises."""

    def __init__(self, model, dtype, new_prefixes=()):
        self.dtype, self.active = dtype, []
        self.first_fp32, self.first_new_fp32, self.first_non_finite = None, None, None
        self.new_prefixes = tuple(new_prefixes)
        self.handles = []
        for name, module in model.named_modules():
            if name:
                self.handles.append(module.register_forward_pre_hook(self._enter(name)))
                self.handles.append(module.register_forward_hook(self._leave(name)))

    def _enter(self, name):
        def hook(_module, args):
            inputs = _floating(args)
            self.active.append((name, bool(inputs) and all(t.dtype == self.dtype for t in inputs),
                                all(bool(torch.isfinite(t).all()) for t in inputs)))
        return hook

    def _leave(self, name):
        def hook(_module, _args, output):
            _, low_inputs, finite_inputs = self.active.pop()
            if self.first_non_finite is None and finite_inputs and \
                    not all(bool(torch.isfinite(t).all()) for t in _floating(output)):
                self.first_non_finite = name
            if low_inputs and any(t.dtype == torch.float32 for t in _floating(output)):
                self.first_fp32 = self.first_fp32 or name
                if self.first_new_fp32 is None and self.inside_new(name):
                    self.first_new_fp32 = name
        return hook

    def inside_new(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.new_prefixes)

    @property
    def suspect(self):
        return self.first_new_fp32 or self.first_fp32

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def first_image(imgs, labels):
    """The train step's synthetic batch cut to its first image (low-precision kernels on a CPU without native
    support are an order of magnitude slower than float32; one image checks the same code). Labels are a
    (rows, 6) tensor whose first column is the image index, or a dict of tensors: per-object ones as long
    as its `batch_idx`, per-image ones as long as the batch."""
    batch = imgs.shape[0]
    if isinstance(labels, torch.Tensor):
        return imgs[:1], labels[labels[:, 0] == 0]
    index = labels.get("batch_idx")
    objects = None if index is None else index == 0
    cut = {}
    for key, value in labels.items():
        if isinstance(value, torch.Tensor) and objects is not None and value.dim() and value.shape[0] == len(index):
            cut[key] = value[objects]
        elif isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch:
            cut[key] = value[:1]
        else:
            cut[key] = value
    return imgs[:1], cut


def _to(labels, device):
    if isinstance(labels, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in labels.items()}
    return labels.to(device)


def _autocast_backward(adapter, model, task: str, news: list, device: str, dtype) -> float:
    model.train()
    hold_stochastic_depth(model)   # a branch it drops gets no gradient, which is not a fault
    model.zero_grad(set_to_none=True)
    imgs, labels = synthetic_batch(task, model)
    if adapter.family != "yolov5":   # YOLOv5's loss makes its own targets, for both images
        imgs, labels = first_image(imgs, labels)
    with torch.autocast(device_type=device, dtype=dtype):
        loss = adapter.loss(model, task, imgs.to(device), _to(labels, device))
    value = float(loss.detach().float())
    if not math.isfinite(value):
        raise StepFailure(f"the loss under torch.autocast({device}, {str(dtype)[6:]}) is {value} (not finite)")
    loss.backward()
    problems = []
    for new in news:
        params = [(n, p) for n, p in new.layer.named_parameters() if p.requires_grad]
        missing = [n for n, p in params if p.grad is None]
        bad = [n for n, p in params if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        if missing:
            problems.append(f"{new.label}: no gradient reaches {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if bad:
            problems.append(f"{new.label}: non-finite gradients in {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")
        if params and not missing and not any(bool(p.grad.any()) for _, p in params):
            problems.append(f"{new.label}: every gradient is zero")
    model.zero_grad(set_to_none=True)
    if problems:
        raise StepFailure(f"under torch.autocast({device}, {str(dtype)[6:]}): " + "; ".join(problems))
    return value


def _low_precision_forward(model, news: list, device: str, dtype) -> str:
    twin = deepcopy(model).to(device=device, dtype=dtype).eval()
    x = seeded_input(train_size(model), seed=5).to(device=device, dtype=dtype)
    try:  # the common case, without hooks (they check every layer's tensors); a failure is run again traced
        with torch.no_grad():
            if bool(torch.isfinite(primary_tensor(twin(x)).float()).all()):
                return f"{str(dtype)[6:]} forward runs, finite outputs"
    except Exception:  # noqa: BLE001 - the traced run below raises it again and names the layer
        pass
    return _traced_forward(twin, x, news, dtype)


def _traced_forward(twin, x, news: list, dtype) -> str:
    """The same forward with a DtypeTrace: which layer raised, or first turned finite values non-finite."""
    name = str(dtype)[6:]
    trace = DtypeTrace(twin, dtype, [f"model.{new.position}" for new in news])
    try:
        with torch.no_grad():
            output = primary_tensor(twin(x))
    except Exception as exc:
        where = layer_label(twin, trace.active[-1][0]) if trace.active else "the model"
        hint = f"; first float32 output from {name} input: {layer_label(twin, trace.suspect)}" if trace.suspect else ""
        raise StepFailure(f"the model converted to {name} (as validation runs it with half=True) fails in {where}: "
                          f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}{hint}") from None
    finally:
        trace.remove()
    if not bool(torch.isfinite(output.float()).all()):
        first = trace.first_non_finite
        if first is None or trace.inside_new(first):
            where = f": {layer_label(twin, first)} is the first to return them from finite inputs" if first else ""
            raise StepFailure(f"the model converted to {name} gives non-finite outputs{where}")
        # e.g. torch's CPU grid_sample returns NaN for non-contiguous half inputs (RT-DETR's deformable
        # attention): the target's own module, on this device, whatever the patch
        return (f"{name} forward runs; its output turns non-finite in {layer_label(twin, first)}, a module of the "
                f"target itself, from finite inputs (not caused by the new modules)")
    return f"{name} forward runs, finite outputs"


def amp_step(adapter, model, task: str, news: list) -> str:
    device, dtype = low_precision()
    work = model if device == "cpu" else deepcopy(model).to(device)
    value = _autocast_backward(adapter, work, task, news, device, dtype)
    forward = _low_precision_forward(work, news, device, dtype)
    reached = f"gradients reach all {len(news)} new module(s)" if news else "no new modules"
    return f"autocast({device}, {str(dtype)[6:]}) loss {value:.4g}, {reached}; {forward}"
