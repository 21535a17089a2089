"""MobileNetV1 backbone (Howard et al., arXiv:1704.04861) returning a feature pyramid.

Every layer after the stem is a depthwise-separable pair: a 3x3 depthwise conv and a 1x1 pointwise
conv, each followed by BatchNorm and ReLU (ReLU6 with act="relu6", as timm's mobilenetv1_*). There are
no shortcuts.
"""

import math

import torch
from torch import nn

# (output channels, stride) of the 13 depthwise-separable layers, Table 1 of the paper.
DS_LAYERS = (
    (64, 1),
    (128, 2), (128, 1),
    (256, 2), (256, 1),
    (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)
STEM_CHANNELS = 32
# The paper's ReLU, or the ReLU6 timm's mobilenetv1_* models (and their pretrained weights) use.
ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to the nearest multiple of `divisor`, never losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def init_weights(model: nn.Module) -> None:
    """timm's initialisation of its MobileNets (_init_weight_goog, as TensorFlow's): conv weights normal with
    std sqrt(2 / fan_out), fan_out = k * k * out_channels / groups; BatchNorm weight 1, bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn_relu(c1: int, c2: int, k: int = 1, s: int = 1, groups: int = 1, act=nn.ReLU) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c2),
        act(),
    )


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv (carries the stride) followed by a 1x1 pointwise conv."""

    def __init__(self, c1: int, c2: int, s: int = 1, act=nn.ReLU):
        super().__init__()
        self.dw = conv_bn_relu(c1, c1, 3, s, groups=c1, act=act)
        self.pw = conv_bn_relu(c1, c2, 1, act=act)

    def forward(self, x):
        return self.pw(self.dw(x))


class MobileNetV1(nn.Module):
    """MobileNetV1 feature extractor with outputs at strides 2, 4, 8, 16 and 32.

    Each output is the last layer at its resolution, i.e. channels (64, 128, 256, 512, 1024) at width 1.0.
    `width` is the paper's width multiplier alpha (channels rounded to multiples of 8). `weights`: a checkpoint
    of timm's mobilenetv1_* (a .pth / .pt / .safetensors file, or a timm tag in the local cache) to load; what
    was loaded is recorded in `loaded_weights`. `act`: "relu" (the paper's) or "relu6" (timm's, which its
    weights were trained with).
    """

    def __init__(self, c1: int = 3, width: float = 1.0, weights=None, act: str = "relu"):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"MobileNetV1: act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
        act = ACTIVATIONS[act]
        stem = make_divisible(STEM_CHANNELS * width)
        # Group layers into stages: a new stage starts at every stride-2 layer, so each stage ends at
        # the last layer of one resolution and its output is one pyramid level.
        stages = [[conv_bn_relu(c1, stem, 3, 2, act=act)]]
        channels, strides = [stem], [2]
        c_in = stem
        for c, s in DS_LAYERS:
            c_out = make_divisible(c * width)
            if s == 2:
                stages.append([])
                strides.append(strides[-1] * 2)
                channels.append(c_out)
            stages[-1].append(DepthwiseSeparable(c_in, c_out, s, act))
            channels[-1] = c_out
            c_in = c_out
        self.stages = nn.ModuleList(nn.Sequential(*layers) for layers in stages)
        self.feature_channels = tuple(channels)
        self.feature_strides = tuple(strides)
        init_weights(self)
        self.loaded_weights = None
        if weights:  # the helper yolopatch ships beside this file (recipe.toml lists it)
            from .yolopatch_weights import load_reference_weights
            self.loaded_weights = load_reference_weights(self, weights)

    def reference_layouts(self) -> dict:
        """Our module names -> timm's mobilenetv1_* (its blocks.i are our stages, the stem apart)."""
        names = {"stages.0.0.0": "conv_stem", "stages.0.0.1": "bn1"}
        for s, stage in enumerate(self.stages):
            for i, layer in enumerate(stage):
                if isinstance(layer, DepthwiseSeparable):
                    ref = f"blocks.{s}.{i - 1 if s == 0 else i}"
                    names.update({f"stages.{s}.{i}.dw.0": f"{ref}.conv_dw", f"stages.{s}.{i}.dw.1": f"{ref}.bn1",
                                  f"stages.{s}.{i}.pw.0": f"{ref}.conv_pw", f"stages.{s}.{i}.pw.1": f"{ref}.bn2"})
        return {"timm mobilenetv1": (names, ("classifier.",))}

    def forward(self, x: torch.Tensor) -> list:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs
