"""ShuffleNet V2 backbone for detection.

Paper: "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design"
(arXiv:1807.11164).

A ShuffleNet V2 unit splits its input channels in two halves: one half passes untouched, the other
goes through 1x1 conv -> 3x3 depthwise conv -> 1x1 conv (all dense, no group convolutions); the
halves are concatenated and shuffled. A down-sampling unit feeds the whole input to both branches
(the left one becomes 3x3 depthwise stride 2 -> 1x1 conv) and so doubles the channels.

Outputs: the max-pool result (stride 4) and the end of stages 2, 3 and 4 (strides 8, 16, 32).
The classifier's final 1x1 "conv5" (1024 or 2048 channels) is left out: it only widens the last
feature map for global pooling, and detection necks take the stage outputs.
"""

import torch
import torch.nn as nn

__all__ = ("ShuffleNetV2", "ShuffleUnitV2", "channel_shuffle")

# Units per stage (Table 5 of the paper).
STAGE_REPEATS = (4, 8, 4)

# Stem and stage 2/3/4 output channels per width multiplier (Table 5).
STAGE_CHANNELS = {
    0.5: (24, (48, 96, 192)),
    1.0: (24, (116, 232, 464)),
    1.5: (24, (176, 352, 704)),
    2.0: (24, (244, 488, 976)),
}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Reshape channels to (groups, n), transpose and flatten: interleaves the groups."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def init_weights(model: nn.Module, stem_conv: nn.Conv2d) -> None:
    """The authors' initialisation (megvii-model/ShuffleNet-Series, network.py _initialize_weights): the stem
    conv normal(0, 0.01), every other conv normal(0, 1 / input channels per group), BatchNorm weight 1,
    bias 1e-4 and running mean 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.01 if m is stem_conv else 1.0 / m.weight.shape[1])
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.constant_(m.bias, 1e-4)
            nn.init.zeros_(m.running_mean)


def _conv_bn(c1, c2, k=1, s=1, groups=1, act=False):
    """Conv2d without bias + BatchNorm2d, optionally followed by ReLU."""
    layers = [nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c2)]
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ShuffleUnitV2(nn.Module):
    """ShuffleNet V2 unit (Fig. 3 c/d of the paper).

    s == 1 (c1 == c2): split channels in halves, transform the second half, concatenate, shuffle.
    s == 2: both branches read the full input; each produces c2 / 2 channels at half resolution.
    The depthwise convolutions are followed by BN without ReLU, as in the paper.
    """

    def __init__(self, c1, c2, s=1):
        super().__init__()
        if s not in (1, 2):
            raise ValueError(f"ShuffleUnitV2: stride must be 1 or 2, got {s}")
        if s == 1 and c1 != c2:
            raise ValueError(f"ShuffleUnitV2: a stride-1 unit needs c1 == c2, got {c1} and {c2}")
        if c2 % 2:
            raise ValueError(f"ShuffleUnitV2: c2 must be even, got {c2}")
        half = c2 // 2
        self.stride = s
        if s == 2:
            self.left = nn.Sequential(
                _conv_bn(c1, c1, 3, s, groups=c1),
                _conv_bn(c1, half, 1, act=True),
            )
        else:
            self.left = nn.Identity()
        right_in = c1 if s == 2 else half
        self.right = nn.Sequential(
            _conv_bn(right_in, half, 1, act=True),
            _conv_bn(half, half, 3, s, groups=half),
            _conv_bn(half, half, 1, act=True),
        )

    def forward(self, x):
        if self.stride == 1:
            passthrough, x = x.chunk(2, dim=1)
        else:
            passthrough = self.left(x)
        return channel_shuffle(torch.cat((passthrough, self.right(x)), 1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 feature extractor returning [P2, P3, P4, P5] (strides 4, 8, 16, 32).

    Args:
        c1: input channels.
        width: width multiplier, one of 0.5, 1.0, 1.5, 2.0.
        weights: a checkpoint of torchvision's shufflenet_v2_x* of the same width (a .pth / .pt / .safetensors
            file) to load; what was loaded is recorded in `loaded_weights`.
    """

    def __init__(self, c1=3, width=1.0, weights=None):
        super().__init__()
        if width not in STAGE_CHANNELS:
            raise ValueError(f"ShuffleNetV2: width must be one of {sorted(STAGE_CHANNELS)}, got {width}")
        stem, stage_channels = STAGE_CHANNELS[width]

        self.stem = _conv_bn(c1, stem, 3, 2, act=True)
        self.pool = nn.MaxPool2d(3, 2, 1)
        stages = []
        c_in = stem
        for repeats, c_out in zip(STAGE_REPEATS, stage_channels):
            units = [ShuffleUnitV2(c_in, c_out, 2)] + [ShuffleUnitV2(c_out, c_out, 1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            c_in = c_out
        self.stages = nn.ModuleList(stages)

        self.feature_channels = (stem, *stage_channels)
        self.feature_strides = (4, 8, 16, 32)
        init_weights(self, self.stem[0])
        self.loaded_weights = None
        if weights:  # the helper yolopatch ships beside this file (recipe.toml lists it)
            from .yolopatch_weights import load_reference_weights
            self.loaded_weights = load_reference_weights(self, weights)

    def reference_layouts(self) -> dict:
        """Our module names -> torchvision's shufflenet_v2_x* (and its conv5 / fc head). torchvision writes each
        branch as one flat Sequential: branch1 = dw conv, BN, conv, BN, ReLU; branch2 = conv, BN, ReLU, dw conv,
        BN, conv, BN, ReLU."""
        names = {"stem.0": "conv1.0", "stem.1": "conv1.1"}
        for k, stage in enumerate(self.stages):
            for i, unit in enumerate(stage):
                ours, ref = f"stages.{k}.{i}", f"stage{k + 2}.{i}"
                if unit.stride == 2:
                    names.update({f"{ours}.left.0.0": f"{ref}.branch1.0", f"{ours}.left.0.1": f"{ref}.branch1.1",
                                  f"{ours}.left.1.0": f"{ref}.branch1.2", f"{ours}.left.1.1": f"{ref}.branch1.3"})
                for part, index in enumerate((0, 3, 5)):
                    names.update({f"{ours}.right.{part}.0": f"{ref}.branch2.{index}",
                                  f"{ours}.right.{part}.1": f"{ref}.branch2.{index + 1}"})
        return {"torchvision shufflenet_v2": (names, ("conv5.", "fc."))}

    def forward(self, x):
        x = self.pool(self.stem(x))
        outputs = [x]
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs
