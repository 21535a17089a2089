"""BlazeFace building blocks: BlazeBlock and DoubleBlazeBlock.

Paper: "BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs" (arXiv:1907.05047), Fig. 1.

BlazeBlock: 5x5 depthwise conv (stride s) -> 1x1 projection, added to a shortcut, then ReLU.
DoubleBlazeBlock: two such depthwise/pointwise pairs; the first projects down to a narrow ``mid``
width and is followed by ReLU, the second expands to c2 (the paper's 24 -> 96 bottleneck).

Shortcut: a 2x2 stride-2 max-pool when s == 2, then zero channel padding when c2 > c1, as in the
released BlazeFace model. Zero padding cannot narrow a tensor, so when c2 < c1 (a detector neck
reducing width) the shortcut is a 1x1 conv + BN projection instead.

Every conv is followed by BatchNorm so the blocks train from scratch; the released inference
graph has the normalisation folded into conv biases.
"""

import torch.nn as nn
import torch.nn.functional as F

__all__ = ("BlazeBlock", "DoubleBlazeBlock")


def _conv_bn(c1, c2, k=1, s=1, groups=1):
    """Conv2d without bias + BatchNorm2d, 'same' padding for odd k."""
    return nn.Sequential(
        nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c2),
    )


def _depthwise5x5(c, s):
    return _conv_bn(c, c, 5, s, groups=c)


class BlazeShortcut(nn.Module):
    """Parameter-free shortcut of the Blaze blocks (a 1x1 projection only when c2 < c1)."""

    def __init__(self, c1, c2, s=1):
        super().__init__()
        # ceil_mode keeps the pooled size equal to the strided 5x5 conv's ceil(H / s) for odd H.
        self.pool = nn.MaxPool2d(s, s, ceil_mode=True) if s > 1 else nn.Identity()
        self.project = _conv_bn(c1, c2, 1) if c2 < c1 else nn.Identity()
        self.pad = max(c2 - c1, 0)

    def forward(self, x):
        x = self.project(self.pool(x))
        if self.pad:
            # pad only the channel dimension (the last pair of the padding tuple) with zeros
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x


class BlazeBlock(nn.Module):
    """Single BlazeBlock: 5x5 depthwise (stride s) + BN -> 1x1 conv + BN, + shortcut, ReLU."""

    def __init__(self, c1, c2, s=1):
        super().__init__()
        self.shortcut = BlazeShortcut(c1, c2, s)
        self.dw = _depthwise5x5(c1, s)
        self.pw = _conv_bn(c1, c2, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.pw(self.dw(x)) + self.shortcut(x))


class DoubleBlazeBlock(nn.Module):
    """Double BlazeBlock: 5x5 dw (stride s) -> 1x1 to mid -> ReLU -> 5x5 dw -> 1x1 to c2, + shortcut, ReLU.

    ``mid`` defaults to c2 // 4, the paper's 24-channel bottleneck inside its 96-channel blocks.
    """

    def __init__(self, c1, c2, s=1, mid=None):
        super().__init__()
        mid = mid or max(c2 // 4, 1)
        self.shortcut = BlazeShortcut(c1, c2, s)
        self.dw1 = _depthwise5x5(c1, s)
        self.pw1 = _conv_bn(c1, mid, 1)
        self.mid_act = nn.ReLU()
        self.dw2 = _depthwise5x5(mid, 1)
        self.pw2 = _conv_bn(mid, c2, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.mid_act(self.pw1(self.dw1(x)))
        y = self.pw2(self.dw2(y))
        return self.act(y + self.shortcut(x))
