"""Slim-neck building blocks: GSConv, GSBottleneck and the VoV-GSCSP aggregation module.

Paper: "Slim-neck by GSConv: A lightweight-design for real-time detector architectures"
(arXiv:2206.02424).

GSConv mixes a dense convolution (half of the output channels) with a cheap depthwise 5x5
convolution of that result (the other half) and shuffles the two halves together, so that the
dense information reaches every output group at a fraction of a full convolution's cost.

Every activated convolution uses Mish, as the authors' Conv does (gsconv-yolov5 models/common.py,
models_inPaper.py); ``act="silu"`` gives the SiLU of the YOLOv5 / ultralytics Conv instead.
"""

import math

import torch
import torch.nn as nn

__all__ = (
    "Conv",
    "DWConv",
    "GSConv",
    "GSConvns",
    "GSBottleneck",
    "GSBottleneckC",
    "VoVGSCSP",
    "VoVGSCSPC",
    "channel_shuffle",
)


# Activations selectable by name (a YAML argument); "mish" is the paper's.
ACTIVATIONS = {"mish": nn.Mish, "silu": nn.SiLU}
DEFAULT_ACT = "mish"


def _activation(act) -> nn.Module:
    """True: the default (Mish); a name from ACTIVATIONS; an nn.Module as it is; False or None: none."""
    if act is True:
        act = DEFAULT_ACT
    if isinstance(act, str):
        if act.lower() not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; use one of {', '.join(ACTIVATIONS)}")
        return ACTIVATIONS[act.lower()]()
    if isinstance(act, nn.Module):
        return act
    return nn.Identity()


def _same_padding(k: int) -> int:
    """Padding that keeps the spatial size at stride 1 for an odd kernel."""
    return k // 2


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Interleave the channel groups of ``x``.

    With two groups [a0, a1, ..., b0, b1, ...] becomes [a0, b0, a1, b1, ...]: output channel
    ``2 * i`` is channel ``i`` of the first half and ``2 * i + 1`` is channel ``i`` of the second.
    """
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels cannot be split into {groups} groups")
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation, with 'same' padding for odd kernels.

    ``act`` may be True (Mish, the paper's), an activation name ("mish", "silu"), False (identity) or an
    activation module. ``forward_fuse`` is the forward once ``bn`` has been folded into ``conv`` (the YOLO
    Conv protocol the targets' fuse() follows).
    """

    def __init__(self, c1, c2, k=1, s=1, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, _same_padding(k), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = _activation(act)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.act(self.conv(x))


class DWConv(Conv):
    """Grouped convolution with gcd(c1, c2) groups (depthwise when c1 == c2)."""

    def __init__(self, c1, c2, k=1, s=1, act=True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), act=act)


class GSConv(nn.Module):
    """Dense conv to c2/2 channels, depthwise 5x5 conv of that, concatenation, channel shuffle.

    Args:
        c1: input channels.
        c2: output channels (must be even: each half comes from one branch).
        k, s, g: kernel, stride and groups of the dense convolution.
        act: activation of both convolutions (True = Mish, a name such as "silu", False = none, or a module).
    """

    def __init__(self, c1, c2, k=1, s=1, g=1, act=True):
        super().__init__()
        if c2 % 2:
            raise ValueError(f"{type(self).__name__} needs an even number of output channels, got c2={c2}")
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, g, act)
        self.cv2 = Conv(c_, c_, 5, 1, c_, act)  # depthwise 5x5 on the dense half

    def _halves(self, x):
        x1 = self.cv1(x)
        return torch.cat((x1, self.cv2(x1)), 1)

    def forward(self, x):
        return channel_shuffle(self._halves(x), 2)


class GSConvns(GSConv):
    """GSConv with a "normative shuffle": the fixed permutation is replaced by a learned
    1x1 convolution (no bias) followed by ReLU, which export back-ends handle more easily."""

    def __init__(self, c1, c2, k=1, s=1, g=1, act=True):
        super().__init__(c1, c2, k, s, g, act)
        self.shuf = nn.Conv2d(c2, c2, 1, 1, 0, bias=False)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.shuf(self._halves(x)))


class GSBottleneck(nn.Module):
    """Two stacked GSConvs (1x1 then k x k, the second without activation) plus a 1x1 Conv
    projection shortcut; the two paths are summed.

    Args:
        c1, c2: input and output channels.
        k: kernel of the second GSConv (3 in the paper).
        s: stride of the block (applied to the second GSConv and to the shortcut).
        e: hidden width as a fraction of c2.
        act: activation of the first GSConv (True = Mish, or a name such as "silu").
    """

    def __init__(self, c1, c2, k=3, s=1, e=0.5, act=True):
        super().__init__()
        c_ = int(c2 * e)
        self.conv_lighting = nn.Sequential(
            GSConv(c1, c_, 1, 1, act=act),
            GSConv(c_, c2, k, s, act=False),
        )
        self.shortcut = self._make_shortcut(c1, c2, k, s)

    def _make_shortcut(self, c1, c2, k, s):
        return Conv(c1, c2, 1, s, act=False)

    def forward(self, x):
        return self.conv_lighting(x) + self.shortcut(x)


class GSBottleneckC(GSBottleneck):
    """Cheap GSBottleneck: the shortcut is a k x k depthwise (gcd-grouped) conv instead of a
    dense 1x1 conv."""

    def _make_shortcut(self, c1, c2, k, s):
        return DWConv(c1, c2, k, s, act=False)


class VoVGSCSP(nn.Module):
    """One-shot aggregation CSP block built from GSBottlenecks.

    One 1x1 Conv branch feeds ``n`` GSBottlenecks, a second 1x1 Conv branch passes the input
    through; both are concatenated once and fused by a 1x1 Conv to c2 channels.

    Args:
        c1, c2: input and output channels (c1 != c2 allowed).
        n: number of GSBottlenecks.
        shortcut, g: accepted so that C3/C2f argument lists can be reused unchanged; the
            GSBottleneck always keeps its projection shortcut, as in the reference design.
        e: hidden width as a fraction of c2.
        act: activation of the block's convolutions (True = Mish, or a name such as "silu"); in a YAML
            the last argument, e.g. ``[512, False, 1, 0.5, silu]``.
    """

    # Per-class choice of bottleneck and of its (kernel, expansion) inside the block.
    bottleneck = GSBottleneck
    bottleneck_k = 3
    bottleneck_e = 1.0

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5, act=True):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, act=act)
        self.cv2 = Conv(c1, c_, 1, 1, act=act)
        self.gsb = nn.Sequential(
            *(self.bottleneck(c_, c_, self.bottleneck_k, 1, e=self.bottleneck_e, act=act) for _ in range(n))
        )
        self.cv3 = Conv(2 * c_, c2, 1, act=act)

    def forward(self, x):
        return self.cv3(torch.cat((self.cv2(x), self.gsb(self.cv1(x))), 1))


class VoVGSCSPC(VoVGSCSP):
    """Cheap VoVGSCSP: GSBottleneckC units with a half-width hidden layer."""

    bottleneck = GSBottleneckC
    bottleneck_k = 3
    bottleneck_e = 0.5
