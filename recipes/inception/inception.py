"""GoogLeNet Inception module as a width-preserving detector block.

Paper: "Going Deeper with Convolutions" (arXiv:1409.4842), Fig. 2(b) and Table 1.

Four parallel branches, concatenated along channels:
  1. 1x1 conv
  2. 1x1 conv (reduce) -> 3x3 conv
  3. 1x1 conv (reduce) -> 5x5 conv       (k=5 as in the paper; k=3 gives torchvision's variant)
  4. 3x3 max-pool (stride 1) -> 1x1 conv (pool projection)
Every conv is Conv2d (no bias) + BatchNorm + ReLU, the batch-normalised form used by torchvision.

The output width c2 is split over the branches in the proportions of GoogLeNet's inception (3a)
module (64 : 128 : 32 : 32 of 256 output channels, reductions 96 and 16), so Inception(192, 256)
has the layout of inception (3a).
"""

import torch
import torch.nn as nn

__all__ = ("Inception", "inception_widths")


def _ratio(c2, num, den):
    """round(c2 * num / den) with halves rounded up, at least 1."""
    return max(1, (c2 * num + den // 2) // den)


def inception_widths(c2):
    """Branch widths for an output of c2 channels, following inception (3a).

    Returns (b1, b2_reduce, b2, b3_reduce, b3, b4): the 1x1 branch, the 3x3 branch's reduction and
    output, the 5x5 branch's reduction and output and the pool projection. b1 + b2 + b3 + b4 == c2
    exactly: the 3x3 branch (the widest) absorbs the rounding.
    """
    if c2 < 4:
        raise ValueError(f"Inception: c2 must be at least 4 (one channel per branch), got {c2}")
    b1 = _ratio(c2, 1, 4)  # 64 / 256
    b3 = _ratio(c2, 1, 8)  # 32 / 256
    b4 = _ratio(c2, 1, 8)  # 32 / 256
    b2 = c2 - b1 - b3 - b4  # 128 / 256 up to rounding
    b2_reduce = _ratio(c2, 3, 8)  # 96 / 256
    b3_reduce = _ratio(c2, 1, 16)  # 16 / 256
    return b1, b2_reduce, b2, b3_reduce, b3, b4


def _conv_bn_relu(c1, c2, k=1):
    return nn.Sequential(
        nn.Conv2d(c1, c2, k, 1, k // 2, bias=False),
        nn.BatchNorm2d(c2),
        nn.ReLU(),
    )


class Inception(nn.Module):
    """Inception module with c2 output channels (stride 1, any c1).

    Args:
        c1, c2: input and output channels.
        k: kernel of the third branch; 5 as in the paper, 3 reproduces torchvision's GoogLeNet
           (which uses 3x3 there).
    """

    def __init__(self, c1, c2, k=5):
        super().__init__()
        b1, b2_reduce, b2, b3_reduce, b3, b4 = inception_widths(c2)
        self.branch1 = _conv_bn_relu(c1, b1, 1)
        self.branch2 = nn.Sequential(_conv_bn_relu(c1, b2_reduce, 1), _conv_bn_relu(b2_reduce, b2, 3))
        self.branch3 = nn.Sequential(_conv_bn_relu(c1, b3_reduce, 1), _conv_bn_relu(b3_reduce, b3, k))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _conv_bn_relu(c1, b4, 1))

    def forward(self, x):
        return torch.cat((self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)), 1)
