"""Multi-output backbone support for parse_model and the forward loops.

Written into this package by yolopatch; `yolopatch revert` removes it.

A multi-output backbone returns one feature map per output stride. It sits at one YAML row and fills one
row per stride level after it: row k of the group holds the output of stride 2**(k + 1) (P1 .. P5 for a
stride-32 backbone); a level it does not output is empty (a tensor of 0 channels). The backbone is the layer of the
group's first row; every further row is a `BackboneLevel` placeholder, so YAML row i is `model.model[i]`
and its `.i` (ultralytics' `freeze=5` freezes exactly rows 0-4, the layer table matches the YAML).

Channels and strides come from the backbone's `feature_channels` and `feature_strides` when it declares
them, else from one forward of a 256x256 input at construction (eval mode, no gradient).

Nothing is kept on any module between forwards: the outputs travel in the forward loop's own `y` list.
"""

import torch
from torch import nn

PROBE_SIZE = 256


class BackboneLevel(nn.Module):
    """Row `level` of a multi-output backbone's group: returns that level's output. No parameters; the
    backbone is referenced, not owned (its parameters stay under the backbone's own row)."""

    def __init__(self, backbone, level, last):
        super().__init__()
        object.__setattr__(self, "backbone", backbone)  # not a submodule: no second copy in state_dict
        self.level = level
        self.last = last  # the group's last row: the forward loop then settles the group's first row

    def forward(self, levels):
        return levels[self.level]

    def extra_repr(self):
        return f"level={self.level}, stride={2 ** (self.level + 1)}, backbone={type(self.backbone).__name__}"


def measure_outputs(module, c1, size=PROBE_SIZE):
    """(channels, strides) of a backbone's outputs, from one forward of a size x size input."""
    was_training = module.training
    try:
        parameter = next(module.parameters(), None)
        sample = torch.zeros(1, c1, size, size, dtype=parameter.dtype if parameter is not None else torch.float32,
                             device=parameter.device if parameter is not None else "cpu")
        module.eval()
        with torch.no_grad():
            outputs = module(sample)
    finally:
        module.train(was_training)
    if not isinstance(outputs, (list, tuple)) or not all(isinstance(o, torch.Tensor) and o.dim() == 4 for o in outputs):
        raise TypeError(f"{type(module).__name__} is registered as a multi-output backbone but does not return "
                        "a list of feature maps")
    channels = tuple(int(o.shape[1]) for o in outputs)
    strides = tuple(size // int(o.shape[-1]) for o in outputs)
    return channels, strides


def row_channels(channels, strides):
    """Channels of each row the backbone fills, in row order; 0 for a level it does not output."""
    strides = [int(s) for s in strides]
    if any(s < 2 or s & (s - 1) for s in strides) or strides != sorted(set(strides)):
        raise ValueError(f"output strides {strides} are not increasing powers of two")
    rows = [0] * (strides[-1].bit_length() - 1)
    for c, s in zip(channels, strides):
        rows[s.bit_length() - 2] = int(c)
    return rows


def claim_backbone_rows(module, ch, layers, args):
    """parse_model, after `ch.append(c2)`: a row of the backbone branch (it leaves c2 = None) takes one
    row per output stride. Its single entry at the end of `ch` becomes one entry per row, a placeholder
    per row after its own joins `layers`, and the count of those extra rows is returned so later rows are
    numbered after them. Any other row: nothing to do, 0."""
    if not ch or ch[-1] is not None:
        return 0
    if not (hasattr(module, "feature_channels") and hasattr(module, "feature_strides")):
        module.feature_channels, module.feature_strides = measure_outputs(module, int(args[0]))
    rows = row_channels(module.feature_channels, module.feature_strides)
    module.backbone_rows = len(rows)
    ch[-1:] = rows
    type_name = f"{BackboneLevel.__module__}.{BackboneLevel.__name__}"
    for level in range(1, len(rows)):
        placeholder = BackboneLevel(module, level, last=level == len(rows) - 1)
        placeholder.i, placeholder.f, placeholder.type, placeholder.np = module.i + level, module.i, type_name, 0
        layers.append(placeholder)
    return len(rows) - 1


def route_backbone_levels(module, x, y, save):
    """Forward loops, after the save step `y.append(...)`.

    A backbone's row: its outputs become one entry per row, kept in the loop's `y` at the backbone's row
    (where its placeholders read them), and the loop goes on with the first row's level. The group's
    last placeholder then leaves in that entry the first row's own level (kept only when a later row
    reads it). Every other layer: x unchanged.
    """
    rows = getattr(module, "backbone_rows", None)
    if rows is not None and isinstance(x, (list, tuple)):
        strides = [int(s) for s in module.feature_strides]
        if len(x) != len(strides):
            raise ValueError(f"{type(module).__name__} returned {len(x)} outputs but declares {len(strides)}")
        empty = x[0].new_zeros((x[0].shape[0], 0, 1, 1))  # a level not output: 0 channels, nothing to show
        levels = [empty] * rows
        for out, s in zip(x, strides):
            levels[s.bit_length() - 2] = out
        if rows == 1:
            y[-1] = levels[0] if module.i in save else None
        else:
            y[-1] = levels
        return levels[0]
    if isinstance(module, BackboneLevel) and module.last:
        first = module.f
        y[first] = y[first][0] if first in save else None
    return x
