"""StarNet backbones and the star block (Ma et al., "Rewrite the Stars", CVPR 2024, arXiv:2403.19967).

The "star operation" multiplies two linear branches element-wise: act(W1 x) * (W2 x) maps the input into a space
of pairwise feature products (implicitly very high-dimensional) at the cost of two 1x1 convs. A star block is
dw7x7 + BN -> {1x1 expand, 1x1 expand} -> ReLU6(a) * b -> 1x1 project + BN -> dw7x7, with an identity shortcut.
StarNet is a 3x3 stride-2 stem followed by four stages, each a 3x3 stride-2 conv + BN and a few star blocks.
"""

import torch
from torch import nn

STEM_CHANNELS = 32
OUT_STRIDES = (4, 8, 16, 32)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample, rescale the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class ConvBN(nn.Sequential):
    """Conv2d (with bias, as in StarNet) optionally followed by BatchNorm2d.

    An nn.Sequential holding the conv and then its BN: the target's fuse() folds the pair.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, groups: int = 1, bn: bool = True):
        super().__init__()
        self.add_module("conv", nn.Conv2d(c1, c2, k, s, k // 2, groups=groups))
        if bn:
            self.add_module("bn", nn.BatchNorm2d(c2))


class StarBlock(nn.Module):
    """Star block: dw7x7 + BN -> ReLU6(f1(x)) * f2(x) -> g (1x1 + BN) -> dw7x7, plus the identity shortcut.

    Args:
        c1, c2: input / output channels; when they differ a 1x1 conv + BN projection (linear, like StarNet's own
            downsamplers) brings the input to c2 first.
        mlp_ratio: expansion of the two star branches (3 in the paper's block, 4 in StarNet S1-S4).
        drop_path: stochastic-depth rate of the residual branch.
    """

    def __init__(self, c1: int, c2: int, mlp_ratio: int = 3, drop_path: float = 0.0):
        super().__init__()
        hidden = int(mlp_ratio * c2)
        self.adjust = ConvBN(c1, c2) if c1 != c2 else nn.Identity()
        self.dwconv = ConvBN(c2, c2, 7, groups=c2)
        self.f1 = ConvBN(c2, hidden, bn=False)
        self.f2 = ConvBN(c2, hidden, bn=False)
        self.g = ConvBN(hidden, c2)
        self.dwconv2 = ConvBN(c2, c2, 7, groups=c2, bn=False)
        self.act = nn.ReLU6()
        self.drop_path = drop_path

    def forward(self, x):
        x = self.adjust(x)
        y = self.dwconv(x)
        y = self.act(self.f1(y)) * self.f2(y)
        y = self.dwconv2(self.g(y))
        return x + drop_path(y, self.drop_path, self.training)


class StarNet(nn.Module):
    """StarNet feature extractor: the four stage outputs (widths d, 2d, 4d, 8d at strides 4, 8, 16, 32).

    Args:
        c1: input channels.
        base_dim: width d of the first stage.
        depths: star blocks per stage.
        mlp_ratio: expansion of the star branches.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this rate (0: off).
    The defaults are StarNet-S1; StarNetS1 ... StarNetS4 (and the small S050 / S100 / S150) name the published
    variants. The classifier's final BatchNorm and linear head are left out.
    """

    def __init__(self, c1: int = 3, base_dim: int = 24, depths=(2, 2, 8, 3), mlp_ratio: int = 4,
                 drop_path_rate: float = 0.0):
        super().__init__()
        depths = tuple(depths)
        if len(depths) != len(OUT_STRIDES):
            raise ValueError(f"StarNet has {len(OUT_STRIDES)} stages, got depths={list(depths)}")
        total = sum(depths)
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.stem = nn.Sequential(ConvBN(c1, STEM_CHANNELS, 3, 2), nn.ReLU6())
        stages, c_in, start = [], STEM_CHANNELS, 0
        widths = tuple(base_dim * 2**i for i in range(len(depths)))
        for depth, width in zip(depths, widths):
            blocks = [StarBlock(width, width, mlp_ratio, rate) for rate in rates[start:start + depth]]
            stages.append(nn.Sequential(ConvBN(c_in, width, 3, 2), *blocks))
            c_in, start = width, start + depth
        self.stages = nn.ModuleList(stages)
        self.feature_channels = widths
        self.feature_strides = OUT_STRIDES
        for m in self.modules():  # the reference initialisation: truncated normal (std 0.02) conv weights
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)

    def forward(self, x):
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


# The published variants: first-stage width, blocks per stage, expansion (as in the authors' code and timm).
class StarNetS1(StarNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 24, (2, 2, 8, 3), 4, drop_path_rate)


class StarNetS2(StarNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 32, (1, 2, 6, 2), 4, drop_path_rate)


class StarNetS3(StarNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 32, (2, 2, 8, 4), 4, drop_path_rate)


class StarNetS4(StarNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 32, (3, 3, 12, 5), 4, drop_path_rate)


class StarNetS050(StarNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 16, (1, 1, 3, 1), 3, drop_path_rate)


class StarNetS100(StarNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 20, (1, 2, 4, 1), 4, drop_path_rate)


class StarNetS150(StarNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 24, (1, 2, 4, 2), 3, drop_path_rate)
