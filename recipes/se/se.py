"""Squeeze-and-Excitation channel attention (Hu et al., "Squeeze-and-Excitation Networks",
arXiv:1709.01507), in the form SE-ResNet uses it.

Global average pooling squeezes each channel to one value; a bottleneck of two 1x1 convolutions with
biases (reduce to c1 / reduction channels, ReLU, expand back) and a sigmoid give one gate per channel,
which rescales the input. The bottleneck width is c1 / reduction rounded to the nearest multiple of 8,
at least 8 (timm's SEModule as used by its seresnet* models; 1/16 of the width in the paper's ResNets).
"""

import torch
from torch import nn


def squeeze_channels(c1: int, reduction: float = 16, divisor: int = 8) -> int:
    """c1 / reduction rounded to the nearest multiple of `divisor`, at least `divisor`."""
    return max(divisor, int(c1 / reduction + divisor / 2) // divisor * divisor)


class SE(nn.Module):
    """Same-width channel attention: SE(c1, reduction=16) maps (N, c1, H, W) to (N, c1, H, W)."""

    def __init__(self, c1: int, reduction: float = 16):
        super().__init__()
        hidden = squeeze_channels(c1, reduction)
        self.fc1 = nn.Conv2d(c1, hidden, 1)
        self.act = nn.ReLU(inplace=True)  # acts on fc1's own output, never on the block's input
        self.fc2 = nn.Conv2d(hidden, c1, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))
