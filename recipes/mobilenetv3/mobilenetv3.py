"""MobileNetV3-Small and -Large backbones (Howard et al., arXiv:1905.02244) returning a feature pyramid.

Blocks are MobileNetV2 inverted residuals with optional squeeze-and-excitation (gated by a hard
sigmoid, squeezed to a quarter of the expanded width) after the depthwise conv, and either ReLU or
hard-swish as the nonlinearity. Both networks end with the 1x1 conv (576 / 960 channels) that
precedes global pooling in the classifier; it is the stride-32 output.
"""

import torch
from torch import nn

# Per block: (kernel, expanded channels, output channels, use SE, use hard-swish, stride).
# Tables 1 and 2 of the paper.
LARGE_BLOCKS = (
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
)
SMALL_BLOCKS = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)
STEM_CHANNELS = 16


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def init_weights(model: nn.Module) -> None:
    """torchvision's initialisation of its MobileNets: conv weights Kaiming normal (fan_out = out_channels * k * k,
    ReLU gain), conv biases 0, BatchNorm weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn(c1: int, c2: int, k: int = 1, s: int = 1, groups: int = 1, act=None) -> nn.Sequential:
    """Conv (no bias) + BatchNorm, followed by `act(inplace=True)` when an activation class is given.

    In place, as in torchvision/timm: BatchNorm's backward needs its input, not the output the activation
    overwrites, and an out-of-place activation allocates a full-size tensor per layer (about 15% slower at
    640x640 on CPU, see tests/benchmarks/bench_modules.py).
    """
    layers = [nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c2)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention: global average pool -> 1x1 reduce + ReLU -> 1x1 expand -> hard sigmoid gate."""

    def __init__(self, c: int):
        super().__init__()
        squeezed = make_divisible(c // 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c, squeezed, 1)
        self.act = nn.ReLU(inplace=True)  # on the reduce conv's own output
        self.expand = nn.Conv2d(squeezed, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """[1x1 expand] -> kxk depthwise (stride s) -> [SE] -> linear 1x1 project, identity shortcut if shapes match."""

    def __init__(self, c1: int, k: int, hidden: int, c2: int, se: bool, hswish: bool, s: int):
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        # The expansion conv is omitted when it would not change the width (first block of each net).
        layers = [conv_bn(c1, hidden, act=act)] if hidden != c1 else []
        layers.append(conv_bn(hidden, hidden, k, s, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(conv_bn(hidden, c2))
        self.conv = nn.Sequential(*layers)
        self.shortcut = s == 1 and c1 == c2

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.shortcut else y


class _MobileNetV3(nn.Module):
    """Shared body: stem, inverted residual blocks, final 1x1 conv; one output per resolution (strides 2..32).

    Each output is the last layer at its resolution (the stem itself when the first block already
    downsamples, as in the Small model). `weights`: a checkpoint of timm's mobilenetv3_*_100 or torchvision's
    mobilenet_v3_* (a .pth / .pt / .safetensors file, or a timm tag in the local cache) to load; what was
    loaded is recorded in `loaded_weights`.
    """

    blocks: tuple = ()
    last_channels: int = 0

    def __init__(self, c1: int = 3, weights=None):
        super().__init__()
        c_in = STEM_CHANNELS
        # A new stage starts at every stride-2 layer, so each stage ends at the last layer of one resolution.
        stages = [[conv_bn(c1, c_in, 3, 2, act=nn.Hardswish)]]
        channels, strides = [c_in], [2]
        for k, hidden, c_out, se, hswish, s in self.blocks:
            if s == 2:
                stages.append([])
                strides.append(strides[-1] * 2)
                channels.append(c_out)
            stages[-1].append(InvertedResidual(c_in, k, hidden, c_out, se, hswish, s))
            channels[-1] = c_out
            c_in = c_out
        stages[-1].append(conv_bn(c_in, self.last_channels, act=nn.Hardswish))
        channels[-1] = self.last_channels
        self.stages = nn.ModuleList(nn.Sequential(*layers) for layers in stages)
        self.feature_channels = tuple(channels)
        self.feature_strides = tuple(strides)
        init_weights(self)
        self.loaded_weights = None
        if weights:  # the helper yolopatch ships beside this file (recipe.toml lists it)
            from .yolopatch_weights import load_reference_weights
            self.loaded_weights = load_reference_weights(self, weights)

    def reference_layouts(self) -> dict:
        """Our module names -> timm's mobilenetv3_* and torchvision's mobilenet_v3_* (and their heads).

        timm groups consecutive blocks of one output width (blocks.g.j) and names the parts of a block; torchvision
        numbers the blocks (features.k) and their parts (block.m)."""
        timm = {"stages.0.0.0": "conv_stem", "stages.0.0.1": "bn1"}
        tv = {"stages.0.0.0": "features.0.0", "stages.0.0.1": "features.0.1"}
        layers = [(f"stages.{s}.{i}", layer) for s, stage in enumerate(self.stages) for i, layer in enumerate(stage)]
        group, j, width = -1, 0, None
        for k, (ours, layer) in enumerate(layers[1:], start=1):
            last = not isinstance(layer, InvertedResidual)  # the final 1x1 conv, a timm block of its own
            out = layer[0].out_channels if last else layer.conv[-1][0].out_channels
            group, j, width = (group + 1, 0, out) if out != width else (group, j + 1, width)
            ref = f"blocks.{group}.{j}"
            if last:
                timm.update({f"{ours}.0": f"{ref}.conv", f"{ours}.1": f"{ref}.bn1"})
                tv.update({f"{ours}.0": f"features.{k}.0", f"{ours}.1": f"features.{k}.1"})
                continue
            parts = list(layer.conv)
            convs = ["conv_dw", "conv_pw"] if len(parts) - isinstance(parts[-2], SqueezeExcite) == 2 else \
                ["conv_pw", "conv_dw", "conv_pwl"]
            norms = ["bn1", "bn2", "bn3"]
            c = 0
            for m, part in enumerate(parts):
                tv_name = f"features.{k}.block.{m}"
                if isinstance(part, SqueezeExcite):
                    timm.update({f"{ours}.conv.{m}.reduce": f"{ref}.se.conv_reduce",
                                 f"{ours}.conv.{m}.expand": f"{ref}.se.conv_expand"})
                    tv.update({f"{ours}.conv.{m}.reduce": f"{tv_name}.fc1", f"{ours}.conv.{m}.expand": f"{tv_name}.fc2"})
                    continue
                timm.update({f"{ours}.conv.{m}.0": f"{ref}.{convs[c]}", f"{ours}.conv.{m}.1": f"{ref}.{norms[c]}"})
                tv.update({f"{ours}.conv.{m}.0": f"{tv_name}.0", f"{ours}.conv.{m}.1": f"{tv_name}.1"})
                c += 1
        return {
            "timm mobilenetv3": (timm, ("conv_head.", "classifier.")),
            "torchvision mobilenet_v3": (tv, ("classifier.",)),
        }

    def forward(self, x: torch.Tensor) -> list:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


class MobileNetV3Small(_MobileNetV3):
    """MobileNetV3-Small: outputs (16, 16, 24, 48, 576) channels at strides (2, 4, 8, 16, 32)."""

    blocks = SMALL_BLOCKS
    last_channels = 576


class MobileNetV3Large(_MobileNetV3):
    """MobileNetV3-Large: outputs (16, 24, 40, 112, 960) channels at strides (2, 4, 8, 16, 32)."""

    blocks = LARGE_BLOCKS
    last_channels = 960
