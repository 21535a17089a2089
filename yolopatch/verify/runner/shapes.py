"""Step 4: YAML row i is layer i; declared output channels and strides of every new module against a real
forward, at a square and a non-square input; the head's input strides against the model's stride; the
model's output against what its task's head must give (tasks.output_problems)."""

from __future__ import annotations

import torch

from .adapters import primary_tensor
from .layers import alignment_problem, check_sizes, is_multi_output, seeded_input
from .tasks import head, output_problems


class ShapeReport:
    def __init__(self):
        self.problems: list = []
        self.output_shapes: dict = {}
        self.strides: list = []


def _stride(size: tuple, tensor) -> tuple:
    return size[0] / tensor.shape[-2], size[1] / tensor.shape[-1]


def _fmt(value: float) -> str:
    return f"{value:g}"


def _fmt_all(values) -> str:
    return ",".join(_fmt(v) for v in values)


class _Recorder:
    """Forward hooks on the new modules and the mask prototypes, a pre-hook on the head (heads such as
    YOLOv5's Detect overwrite their input list in place, so it is copied before they run)."""

    def __init__(self, layers: list, model):
        self.outputs: dict = {}
        self.head_inputs: list = []
        self.proto = None
        last = head(model)
        self.handles = [layer.register_forward_hook(lambda m, i, o, key=id(layer): self.outputs.__setitem__(key, o))
                        for layer in layers]
        self.handles.append(last.register_forward_pre_hook(self._head_input))
        if isinstance(getattr(last, "proto", None), torch.nn.Module):
            self.handles.append(last.proto.register_forward_hook(self._proto))

    def _head_input(self, _module, args):
        first = args[0] if args else None
        self.head_inputs.append(list(first) if isinstance(first, (list, tuple)) else first)

    def _proto(self, _module, _args, out):
        self.proto = out if isinstance(out, torch.Tensor) else None

    def clear(self) -> None:
        self.outputs.clear()
        self.head_inputs.clear()
        self.proto = None

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _check_recipe_declaration(new, yaml_args, report) -> None:
    """recipe.toml's channels/strides describe the module built with its default arguments."""
    declared = new.declared
    if declared is None or declared.role != "backbone" or yaml_args:
        return
    layer = new.layer
    want = (list(declared.channels), list(declared.strides))
    have = ([int(c) for c in layer.feature_channels], [int(s) for s in layer.feature_strides])
    if want != have:
        report.problems.append(f"{new.label}: recipe.toml declares channels {want[0]} strides {want[1]}, the module "
                               f"declares channels {have[0]} strides {have[1]}")


def _recorded(declared_ch: list, row: int):
    """The channels parse_model recorded for a row; None when it recorded none (or not a number)."""
    return declared_ch[row] if 0 <= row < len(declared_ch) else None


def _check_backbone(new, out, size, declared_ch, report) -> None:
    layer, label = new.layer, new.label
    strides = [int(s) for s in layer.feature_strides]
    channels = [int(c) for c in layer.feature_channels]
    if not isinstance(out, (list, tuple)) or len(out) != len(strides):
        count = len(out) if isinstance(out, (list, tuple)) else 1
        report.problems.append(f"{label}: returns {count} output(s) at input {size[0]}x{size[1]}, declares {len(strides)}")
        return
    for k, (tensor, c, s) in enumerate(zip(out, channels, strides)):
        where = f"{label} output {k} (stride {s})"
        if tensor.shape[1] != c:
            report.problems.append(f"{where}: declares {c} channels, forward produces {tensor.shape[1]}")
        row = new.row + s.bit_length() - 2   # the row that holds stride s: 2**(k + 1) at row k of the group
        if _recorded(declared_ch, row) not in (None, tensor.shape[1], c):
            report.problems.append(f"{where}: parse_model recorded {declared_ch[row]} channels for row {row}, "
                                   f"forward produces {tensor.shape[1]}")
        sh, sw = _stride(size, tensor)
        if (sh, sw) != (s, s):
            report.problems.append(f"{where}: declares stride {s}, forward gives {_fmt(sh)}x{_fmt(sw)} "
                                   f"at input {size[0]}x{size[1]}")


def _check_layer(new, out, size, declared_ch, report) -> None:
    label = new.label
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        return  # not a feature map (several tensors, tokens): nothing declared to compare with
    if _recorded(declared_ch, new.row) not in (None, out.shape[1]):
        report.problems.append(f"{label}: parse_model recorded {declared_ch[new.row]} output channels, "
                               f"forward produces {out.shape[1]}")
    sh, sw = _stride(size, out)
    if sh != sw or sh != int(sh):
        report.problems.append(f"{label}: output {tuple(out.shape)} at input {size[0]}x{size[1]} is not an "
                               f"integer stride in both directions ({_fmt(sh)}x{_fmt(sw)})")


def _head_strides(features, size, report) -> list:
    strides = []
    for k, f in enumerate(features or []):
        if not isinstance(f, torch.Tensor) or f.dim() != 4:
            continue
        sh, sw = _stride(size, f)
        if sh != sw:
            report.problems.append(f"head input {k}: stride {_fmt(sh)}x{_fmt(sw)} at input {size[0]}x{size[1]}")
        strides.append(sh)
    return strides


def check_shapes(model, news: list, declared_ch: list, yaml_rows: list, task: str, family: str) -> ShapeReport:
    report = ShapeReport()
    misaligned = alignment_problem(model, yaml_rows)
    if misaligned:
        report.problems.append(misaligned)
    for new in news:
        if is_multi_output(new.layer):
            args = yaml_rows[new.row][3] if new.row < len(yaml_rows) else []
            _check_recipe_declaration(new, args, report)
    recorder = _Recorder([n.layer for n in news], model)
    per_size = []
    model.eval()
    try:
        for size in check_sizes(model):
            recorder.clear()
            with torch.no_grad():
                result = model(seeded_input(size))
            for new in news:
                out = recorder.outputs.get(id(new.layer))
                if is_multi_output(new.layer):
                    _check_backbone(new, out, size, declared_ch, report)
                else:
                    _check_layer(new, out, size, declared_ch, report)
            features = recorder.head_inputs[0] if recorder.head_inputs else []
            features = features if isinstance(features, (list, tuple)) else [features]
            per_size.append(_head_strides(features, size, report))
            output = primary_tensor(result)
            report.problems.extend(output_problems(task, family, model, output, features, size, recorder.proto))
            if not report.output_shapes:
                report.output_shapes = {"input": [1, 3, size[0], size[1]], "output": list(output.shape),
                                        "features": [list(f.shape) for f in features if isinstance(f, torch.Tensor)]}
                if recorder.proto is not None:
                    report.output_shapes["proto"] = list(recorder.proto.shape)
    finally:
        recorder.remove()
    _check_model_strides(model, per_size, task, report)
    report.problems = list(dict.fromkeys(report.problems))  # the same fault seen at both sizes: say it once
    return report


def _check_model_strides(model, per_size: list, task: str, report) -> None:
    if not per_size:
        return
    first = per_size[0]
    if any(s != first for s in per_size[1:]):
        report.problems.append("the head's input strides change with the input size: "
                               + " vs ".join(_fmt_all(s) for s in per_size))
    if any(b <= a for a, b in zip(first, first[1:])) or any(int(s) & (int(s) - 1) or s != int(s) for s in first):
        report.problems.append(f"the head's input strides {_fmt_all(first)} are not increasing powers of two")
    report.strides = [int(s) for s in first]
    if task in ("rtdetr", "classify"):
        return  # RT-DETR keeps a placeholder model.stride (its decoder reads the features); a classifier has none
    stride = getattr(model, "stride", None)
    declared = [float(s) for s in stride] if stride is not None else []
    if declared and declared != [float(s) for s in first]:
        report.problems.append(f"model.stride is {_fmt_all(declared)} but the head's inputs have strides "
                               f"{_fmt_all(first)}")
