"""ShuffleNet (v1) backbone for detection.

Paper: "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices"
(arXiv:1707.01083).

A ShuffleNet unit is a bottleneck whose two 1x1 convolutions are *grouped*; the channel shuffle
between them lets information cross the groups. The backbone is a 3x3 stride-2 stem, a 3x3
stride-2 max-pool and three stages of 4 / 8 / 4 units; the first unit of each stage halves the
resolution and concatenates an average-pooled shortcut, the others add an identity shortcut.

Outputs: the max-pool result (stride 4) and the end of each stage (strides 8, 16, 32).
"""

import torch
import torch.nn as nn

__all__ = ("ShuffleNetV1", "ShuffleUnitV1", "channel_shuffle")

# Units per stage (Table 1 of the paper).
STAGE_REPEATS = (4, 8, 4)

# (stem channels, stage 2/3/4 output channels) per (groups, width multiplier). The 1.0x rows are
# Table 1 of the paper; the other widths are the ones the authors released (ShuffleNet-Series).
STAGE_CHANNELS = {
    3: {
        0.5: (12, (120, 240, 480)),
        1.0: (24, (240, 480, 960)),
        1.5: (24, (360, 720, 1440)),
        2.0: (48, (480, 960, 1920)),
    },
    8: {
        0.5: (16, (192, 384, 768)),
        1.0: (24, (384, 768, 1536)),
        1.5: (24, (576, 1152, 2304)),
        2.0: (48, (768, 1536, 3072)),
    },
}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Reshape channels to (groups, n), transpose to (n, groups) and flatten (Fig. 1 of the paper).

    Output channel ``i * groups + g`` is channel ``i`` of group ``g``, so every group of the next
    grouped convolution sees channels from all groups of the previous one.
    """
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


def _conv_bn(c1, c2, k=1, s=1, groups=1):
    """Conv2d without bias followed by BatchNorm2d (no activation)."""
    return nn.Sequential(
        nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c2),
    )


class ShuffleUnitV1(nn.Module):
    """ShuffleNet unit (Fig. 2 b/c of the paper).

    1x1 group conv (to c2/4) + BN + ReLU -> channel shuffle -> 3x3 depthwise conv (stride s) + BN
    -> 1x1 group conv + BN, then:
      * s == 1: add the identity and apply ReLU (requires c1 == c2);
      * s == 2: concatenate a 3x3 stride-2 average pool of the input, so the residual branch only
        produces the c2 - c1 new channels, and apply ReLU.

    ``group_first=False`` makes the first 1x1 conv dense; the paper does this for the very first
    unit, whose input (the stem) has too few channels to be split into groups.
    """

    def __init__(self, c1, c2, groups=3, s=1, group_first=True):
        super().__init__()
        if s not in (1, 2):
            raise ValueError(f"ShuffleUnitV1: stride must be 1 or 2, got {s}")
        if s == 1 and c1 != c2:
            raise ValueError(f"ShuffleUnitV1: a stride-1 unit needs c1 == c2, got {c1} and {c2}")
        mid = c2 // 4  # bottleneck width: a quarter of the unit's output channels
        branch_out = c2 - c1 if s == 2 else c2
        self.groups = groups
        self.stride = s
        self.shortcut = nn.AvgPool2d(3, 2, 1) if s == 2 else nn.Identity()
        self.reduce = _conv_bn(c1, mid, 1, groups=groups if group_first else 1)
        self.reduce_act = nn.ReLU()
        self.depthwise = _conv_bn(mid, mid, 3, s, groups=mid)
        self.expand = _conv_bn(mid, branch_out, 1, groups=groups)
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.reduce_act(self.reduce(x))
        y = channel_shuffle(y, self.groups)
        y = self.expand(self.depthwise(y))
        if self.stride == 1:
            return self.act(y + self.shortcut(x))
        # Inside the network the unit input is a ReLU output, so its average pool is non-negative:
        # applying the ReLU to the new channels only equals applying it after the concatenation.
        return torch.cat((self.shortcut(x), self.act(y)), 1)


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1 feature extractor returning [P2, P3, P4, P5] (strides 4, 8, 16, 32).

    Args:
        c1: input channels.
        groups: groups of the pointwise convolutions, 3 or 8.
        width: width multiplier ("ShuffleNet s x"), one of 0.5, 1.0, 1.5, 2.0.
    """

    def __init__(self, c1=3, groups=3, width=1.0):
        super().__init__()
        if groups not in STAGE_CHANNELS:
            raise ValueError(f"ShuffleNetV1: groups must be one of {sorted(STAGE_CHANNELS)}, got {groups}")
        table = STAGE_CHANNELS[groups]
        if width not in table:
            raise ValueError(f"ShuffleNetV1: width must be one of {sorted(table)}, got {width}")
        stem, stage_channels = table[width]

        self.stem = nn.Sequential(
            nn.Conv2d(c1, stem, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(),
        )
        self.pool = nn.MaxPool2d(3, 2, 1)

        stages = []
        c_in = stem
        for index, (repeats, c_out) in enumerate(zip(STAGE_REPEATS, stage_channels)):
            stages.append(self._make_stage(c_in, c_out, repeats, groups, first_stage=index == 0))
            c_in = c_out
        self.stages = nn.ModuleList(stages)

        self.feature_channels = (stem, *stage_channels)
        self.feature_strides = (4, 8, 16, 32)
        init_weights(self, self.stem[0])

    @staticmethod
    def _make_stage(c1, c2, repeats, groups, first_stage):
        units = [ShuffleUnitV1(c1, c2, groups, s=2, group_first=not first_stage)]
        units += [ShuffleUnitV1(c2, c2, groups, s=1) for _ in range(repeats - 1)]
        return nn.Sequential(*units)

    def forward(self, x):
        x = self.pool(self.stem(x))
        outputs = [x]
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs
