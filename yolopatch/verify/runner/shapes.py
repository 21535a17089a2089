"""Step 4: declared output channels and strides of every new module against a real forward, at a square
and a non-square input; the head's input strides against the model's stride."""

from __future__ import annotations

import torch

from .adapters import primary_tensor
from .layers import check_sizes, is_multi_output, seeded_input


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


def _record_outputs(layers: list, head) -> tuple:
    outputs: dict = {}
    head_inputs: list = []
    handles = [layer.register_forward_hook(lambda m, i, o, key=id(layer): outputs.__setitem__(key, o))
               for layer in layers]
    # a pre-hook: heads such as YOLOv5's Detect overwrite their input list in place
    handles.append(head.register_forward_pre_hook(
        lambda m, args: head_inputs.append(list(args[0]) if args and isinstance(args[0], (list, tuple))
                                           else (args[0] if args else None))))
    return outputs, head_inputs, handles


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


def _check_backbone(new, out, size, declared_ch, report) -> None:
    layer, label = new.layer, new.label
    strides = [int(s) for s in layer.feature_strides]
    channels = [int(c) for c in layer.feature_channels]
    if not isinstance(out, (list, tuple)) or len(out) != len(strides):
        count = len(out) if isinstance(out, (list, tuple)) else 1
        report.problems.append(f"{label}: returns {count} output(s) at input {size[0]}x{size[1]}, declares {len(strides)}")
        return
    first_row = new.index - (strides[-1].bit_length() - 2)
    for k, (tensor, c, s) in enumerate(zip(out, channels, strides)):
        where = f"{label} output {k} (stride {s})"
        if tensor.shape[1] != c:
            report.problems.append(f"{where}: declares {c} channels, forward produces {tensor.shape[1]}")
        row = first_row + s.bit_length() - 2
        if 0 <= row < len(declared_ch) and declared_ch[row] not in (tensor.shape[1], c):
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
    if 0 <= new.index < len(declared_ch) and declared_ch[new.index] != out.shape[1]:
        report.problems.append(f"{label}: parse_model recorded {declared_ch[new.index]} output channels, "
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


def check_shapes(model, news: list, declared_ch: list, yaml_rows: list, kind: str) -> ShapeReport:
    report = ShapeReport()
    for new in news:
        if is_multi_output(new.layer):
            args = yaml_rows[new.position][3] if new.position < len(yaml_rows) else []
            _check_recipe_declaration(new, args, report)
    head = model.model[-1]
    outputs, head_inputs, handles = _record_outputs([n.layer for n in news], head)
    per_size = []
    model.eval()
    try:
        for size in check_sizes(model):
            outputs.clear()
            head_inputs.clear()
            with torch.no_grad():
                result = model(seeded_input(size))
            for new in news:
                out = outputs.get(id(new.layer))
                if is_multi_output(new.layer):
                    _check_backbone(new, out, size, declared_ch, report)
                else:
                    _check_layer(new, out, size, declared_ch, report)
            features = head_inputs[0] if head_inputs else []
            features = features if isinstance(features, (list, tuple)) else [features]
            per_size.append(_head_strides(features, size, report))
            if not report.output_shapes:
                report.output_shapes = {"input": [1, 3, size[0], size[1]],
                                        "output": list(primary_tensor(result).shape),
                                        "features": [list(f.shape) for f in features if isinstance(f, torch.Tensor)]}
    finally:
        for handle in handles:
            handle.remove()
    _check_model_strides(model, per_size, kind, report)
    report.problems = list(dict.fromkeys(report.problems))  # the same fault seen at both sizes: say it once
    return report


def _check_model_strides(model, per_size: list, kind: str, report) -> None:
    if not per_size:
        return
    first = per_size[0]
    if any(s != first for s in per_size[1:]):
        report.problems.append("the head's input strides change with the input size: "
                               + " vs ".join(_fmt_all(s) for s in per_size))
    if any(b <= a for a, b in zip(first, first[1:])) or any(int(s) & (int(s) - 1) or s != int(s) for s in first):
        report.problems.append(f"the head's input strides {_fmt_all(first)} are not increasing powers of two")
    report.strides = [int(s) for s in first]
    if kind == "rtdetr":
        return  # RT-DETR keeps a placeholder model.stride; its decoder takes the strides from the features
    stride = getattr(model, "stride", None)
    declared = [float(s) for s in stride] if stride is not None else []
    if declared and declared != [float(s) for s in first]:
        report.problems.append(f"model.stride is {_fmt_all(declared)} but the head's inputs have strides "
                               f"{_fmt_all(first)}")
