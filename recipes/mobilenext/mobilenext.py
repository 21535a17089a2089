"""MobileNeXt backbone and its sandglass block (Zhou et al., arXiv:2007.02269).

The sandglass block flips MobileNetV2's inverted residual: the shortcut connects the *wide* ends and
the spatial (depthwise) convolutions also run on the wide tensors, while the middle of the block is a
narrow linear bottleneck: dw3x3 + ReLU6 -> 1x1 reduce (linear) -> 1x1 expand + ReLU6 -> dw3x3 (linear,
carries the stride). Layout follows the authors' reference implementation (see `SGBlock`).
"""

import math

import torch
from torch import nn

# (reduction ratio t, output channels c, repeats n, first stride s), Table 3 of the paper.
BLOCK_SETTINGS = (
    (2, 96, 1, 2),
    (6, 144, 1, 1),
    (6, 192, 3, 2),
    (6, 288, 3, 2),
    (6, 384, 4, 1),
    (6, 576, 4, 2),
    (6, 960, 3, 1),
    (6, 1280, 1, 1),
)
STEM_CHANNELS = 32
OUT_STRIDES = (4, 8, 16, 32)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def init_weights(model: nn.Module) -> None:
    """The authors' initialisation (MXNet._initialize_weights): conv weights normal with std sqrt(2 / n),
    n = k * k * out_channels (Kaiming fan_out), conv biases 0, BatchNorm weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn(c1: int, c2: int, k: int = 1, s: int = 1, groups: int = 1, act: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c2)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


def sandglass_hidden(c1: int, c2: int, expand_ratio: int) -> int:
    """Width of the bottleneck: c1 / t, but at least c2 / 6 (rounded up to a multiple of 16)."""
    hidden = c1 // expand_ratio
    if hidden < c2 / 6:
        hidden = make_divisible(math.ceil(c2 / 6), 16)
    return hidden


class SGBlock(nn.Module):
    """Sandglass block: [dw3x3 + ReLU6] -> 1x1 reduce -> 1x1 expand + ReLU6 -> [dw3x3, stride s].

    Args:
        c1, c2: input / output channels (any c1 != c2 is accepted, also at stride 1).
        s: stride, applied by the last depthwise conv.
        expand_ratio: channel reduction ratio t of the bottleneck (c1 / t hidden channels).
        keep_3x3: keep both depthwise convs even when the block changes width.

    As in the authors' code, a block that changes width without `keep_3x3` (and with t != 2) drops
    the first depthwise conv, and at stride 1 also the last one, leaving only the two 1x1 convs.
    The identity shortcut is added whenever the block keeps both resolution and width.
    """

    def __init__(self, c1: int, c2: int, s: int = 1, expand_ratio: int = 6, keep_3x3: bool = False):
        super().__init__()
        assert s in (1, 2), f"SGBlock stride must be 1 or 2, got {s}"
        hidden = sandglass_hidden(c1, c2, expand_ratio)
        first_dw = expand_ratio == 2 or keep_3x3 or c1 == c2
        last_dw = first_dw or s != 1
        layers = [conv_bn(c1, c1, 3, groups=c1, act=True)] if first_dw else []
        layers += [conv_bn(c1, hidden), conv_bn(hidden, c2, act=True)]
        if last_dw:
            layers.append(conv_bn(c2, c2, 3, s, groups=c2))
        self.conv = nn.Sequential(*layers)
        self.shortcut = s == 1 and c1 == c2
        init_weights(self)  # also when the block is used on its own in a neck

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.shortcut else y


class MobileNeXt(nn.Module):
    """MobileNeXt feature extractor with outputs at strides 4, 8, 16 and 32.

    Channels (144, 192, 384, 1280) at width 1.0: each output is the last sandglass block at its
    resolution; the last one is the network's final 1280-channel block (everything but the classifier).
    `width` is the width multiplier; as in the reference, the 1280-channel block is not narrowed below 1.0.
    `weights`: a checkpoint of the authors' MXNet (mobilenext/codebase/models/mnext.py) of the same width, a
    .pth / .pt / .safetensors file, to load; what was loaded is recorded in `loaded_weights`.
    """

    def __init__(self, c1: int = 3, width: float = 1.0, weights=None):
        super().__init__()
        divisor = 4 if width == 0.1 else 8
        c_in = make_divisible(STEM_CHANNELS * width, divisor)
        # A new stage starts at every stride-2 block, so each stage ends with the last block of one
        # resolution; stage 0 (the stride-2 stem) is computed but not returned.
        stages = [[conv_bn(c1, c_in, 3, 2, act=True)]]
        channels, strides = [c_in], [2]
        for t, c, n, s in BLOCK_SETTINGS:
            c_out = make_divisible(c * width, divisor)
            if c == 1280 and width < 1:
                c_out = 1280
            for i in range(n):
                stride = s if i == 0 else 1
                # Single-block stride-1 stages keep both depthwise convs although they change width.
                keep_3x3 = n == 1 and s == 1
                if stride == 2:
                    stages.append([])
                    strides.append(strides[-1] * 2)
                    channels.append(c_out)
                stages[-1].append(SGBlock(c_in, c_out, stride, t, keep_3x3))
                channels[-1] = c_out
                c_in = c_out
        self.stages = nn.ModuleList(nn.Sequential(*layers) for layers in stages)
        self.out_indices = tuple(strides.index(s) for s in OUT_STRIDES)
        self.feature_channels = tuple(channels[i] for i in self.out_indices)
        self.feature_strides = OUT_STRIDES
        init_weights(self)
        self.loaded_weights = None
        if weights:  # the helper yolopatch ships beside this file (recipe.toml lists it)
            from .yolopatch_weights import load_reference_weights
            self.loaded_weights = load_reference_weights(self, weights)

    def reference_layouts(self) -> dict:
        """Our module names -> the authors' MXNet (and its classifier). There, features.0 is the stem and
        features.k the k-th sandglass block, whose conv is one flat Sequential: our conv-BN(-ReLU6) parts in a row."""
        names = {"stages.0.0.0": "features.0.0", "stages.0.0.1": "features.0.1"}
        blocks = [f"stages.{s}.{i}" for s, stage in enumerate(self.stages) for i, block in enumerate(stage)
                  if isinstance(block, SGBlock)]
        for k, ours in enumerate(blocks, start=1):
            flat = 0
            for m, part in enumerate(self.get_submodule(ours).conv):
                names.update({f"{ours}.conv.{m}.0": f"features.{k}.conv.{flat}",
                              f"{ours}.conv.{m}.1": f"features.{k}.conv.{flat + 1}"})
                flat += len(part)
        return {"official MXNet": (names, ("classifier.",))}

    def forward(self, x: torch.Tensor) -> list:
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outputs.append(x)
        return outputs
