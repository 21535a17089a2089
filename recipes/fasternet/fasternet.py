"""FasterNet backbones and blocks (Chen et al., "Run, Don't Walk: Chasing Higher FLOPS for Faster Neural
Networks", CVPR 2023, arXiv:2303.03667).

Partial convolution (PConv) runs a k x k conv on the first c / n_div channels only and passes the other channels
through untouched, so it costs (c / n_div)^2 k^2 weights instead of c^2 k^2 while keeping memory access low. A
FasterNet block is PConv -> 1x1 conv (c -> 2c) + BN + activation -> 1x1 conv (2c -> c) with an identity shortcut.
The network embeds 4x4 patches (4x4 stride-4 conv + BN), then runs four stages of blocks joined by 2x2 stride-2
conv + BN merging layers that double the width.
"""

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
OUT_STRIDES = (4, 8, 16, 32)


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation {name!r} is not one of {', '.join(ACTIVATIONS)}") from None


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample, rescale the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class ConvBN(nn.Module):
    """Unpadded conv (1x1, or a k x k stride-k patchify conv) + BatchNorm, with an optional activation.

    Follows the YOLO Conv protocol (`conv`, `bn`, `forward_fuse`) so the target's fuse() folds the BatchNorm.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: str = ""):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, 0, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = make_activation(act) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.act(self.conv(x))


class PartialConv(nn.Module):
    """The paper's PConv: a k x k conv (no bias, no BN) on the first c // n_div channels, the rest untouched."""

    def __init__(self, c: int, n_div: int = 4, k: int = 3):
        super().__init__()
        if c < n_div:
            raise ValueError(f"PConv needs at least n_div={n_div} channels, got {c}")
        self.c_conv = c // n_div
        self.conv = nn.Conv2d(self.c_conv, self.c_conv, k, 1, k // 2, bias=False)

    def forward(self, x):
        x1, x2 = torch.split(x, [self.c_conv, x.shape[1] - self.c_conv], dim=1)
        return torch.cat((self.conv(x1), x2), 1)


class PConv(nn.Module):
    """PConv followed by the pointwise conv the paper pairs it with (PWConv: 1x1 conv + BN + SiLU, c1 -> c2).

    Together they form the paper's T-shaped replacement of a regular k x k conv; the pointwise part lets the
    YAML block change width and train like the target's Conv.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, n_div: int = 4):
        super().__init__()
        self.partial = PartialConv(c1, n_div, k)
        self.pw = ConvBN(c1, c2, act="silu")

    def forward(self, x):
        return self.pw(self.partial(x))


class FasterBlock(nn.Module):
    """FasterNet block: PConv -> 1x1 expand + BN + act -> 1x1 project, plus the identity shortcut.

    When c1 != c2 a 1x1 conv + BN projection (linear, like the network's own merging layers) brings the input
    to c2 first. `act` is "relu" (FasterNet-T2/S/M/L), "gelu" (T0/T1) or "silu".
    """

    def __init__(self, c1: int, c2: int, n_div: int = 4, mlp_ratio: float = 2.0, act: str = "relu",
                 drop_path: float = 0.0):
        super().__init__()
        hidden = int(c2 * mlp_ratio)
        self.adjust = ConvBN(c1, c2) if c1 != c2 else nn.Identity()
        self.spatial_mixing = PartialConv(c2, n_div)
        # nn.Sequential with the BN right after its conv: the target's fuse() folds it.
        self.mlp = nn.Sequential(
            nn.Conv2d(c2, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            make_activation(act),
            nn.Conv2d(hidden, c2, 1, bias=False),
        )
        self.drop_path = drop_path

    def forward(self, x):
        x = self.adjust(x)
        return x + drop_path(self.mlp(self.spatial_mixing(x)), self.drop_path, self.training)


class C2f_Faster(nn.Module):
    """YOLOv8's C2f with FasterNet blocks in place of its bottlenecks (the catalogs' C2f-Faster).

    cv1 (1x1 to 2c) splits into two halves; each of the n blocks takes the last chunk; cv2 (1x1) fuses all
    chunks. The blocks use SiLU like the C2f they replace. `shortcut` and `g` are accepted so C2f argument
    lists work unchanged; a FasterNet block always keeps its identity shortcut.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = ConvBN(c1, 2 * self.c, act="silu")
        self.cv2 = ConvBN((2 + n) * self.c, c2, act="silu")
        self.m = nn.ModuleList(FasterBlock(self.c, self.c, act="silu") for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(block(y[-1]) for block in self.m)
        return self.cv2(torch.cat(y, 1))


class FasterStage(nn.Module):
    """A merging layer (2x2 stride-2 conv + BN doubling the width; none in the first stage), then the blocks."""

    def __init__(self, c1: int, c2: int, rates: list, act: str, mlp_ratio: float, n_div: int, merge: bool):
        super().__init__()
        self.downsample = ConvBN(c1, c2, 2, 2) if merge else nn.Identity()
        self.blocks = nn.Sequential(*(FasterBlock(c2, c2, n_div, mlp_ratio, act, rate) for rate in rates))

    def forward(self, x):
        return self.blocks(self.downsample(x))


class FasterNet(nn.Module):
    """FasterNet feature extractor: outputs of the four stages, widths e, 2e, 4e, 8e at strides 4, 8, 16, 32.

    Args:
        c1: input channels.
        embed_dim: width e of the first stage.
        depths: blocks per stage.
        act: "gelu" or "relu" (the paper uses GELU for T0/T1, ReLU for the larger models).
        mlp_ratio, n_div: block expansion and PConv ratio (2 and 4 in every published variant).
        drop_path_rate: stochastic depth, rising linearly over the blocks to this rate (0: off).
    The defaults are FasterNet-T0; FasterNetT0 ... FasterNetL name the published variants. The 1x1 -> 1280
    classification head is left out.
    """

    def __init__(self, c1: int = 3, embed_dim: int = 40, depths=(1, 2, 8, 2), act: str = "gelu",
                 mlp_ratio: float = 2.0, n_div: int = 4, drop_path_rate: float = 0.0):
        super().__init__()
        depths = tuple(depths)
        if len(depths) != len(OUT_STRIDES):
            raise ValueError(f"FasterNet has {len(OUT_STRIDES)} stages, got depths={list(depths)}")
        total = sum(depths)
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        widths = tuple(embed_dim * 2**i for i in range(len(depths)))
        self.patch_embed = ConvBN(c1, embed_dim, 4, 4)
        stages, start = [], 0
        for i, (depth, width) in enumerate(zip(depths, widths)):
            c_in = widths[i - 1] if i else width
            stages.append(FasterStage(c_in, width, rates[start:start + depth], act, mlp_ratio, n_div, merge=i > 0))
            start += depth
        self.stages = nn.ModuleList(stages)
        self.feature_channels = widths
        self.feature_strides = OUT_STRIDES
        for m in self.modules():  # the reference initialisation: truncated normal, std 0.02
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)

    def forward(self, x):
        x = self.patch_embed(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


# The published variants: embedding width, blocks per stage, activation (as in the authors' code and timm).
class FasterNetT0(FasterNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 40, (1, 2, 8, 2), "gelu", drop_path_rate=drop_path_rate)


class FasterNetT1(FasterNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 64, (1, 2, 8, 2), "gelu", drop_path_rate=drop_path_rate)


class FasterNetT2(FasterNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 96, (1, 2, 8, 2), "relu", drop_path_rate=drop_path_rate)


class FasterNetS(FasterNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 128, (1, 2, 13, 2), "relu", drop_path_rate=drop_path_rate)


class FasterNetM(FasterNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 144, (3, 4, 18, 3), "relu", drop_path_rate=drop_path_rate)


class FasterNetL(FasterNet):
    def __init__(self, c1: int = 3, drop_path_rate: float = 0.0):
        super().__init__(c1, 192, (3, 4, 18, 3), "relu", drop_path_rate=drop_path_rate)
