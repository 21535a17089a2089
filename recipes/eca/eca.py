"""ECA: Efficient Channel Attention (Wang et al., ECA-Net, arXiv:1910.03151), as timm's EcaModule.

Global average pooling, then a 1D convolution across the channel axis (no bias, no dimensionality
reduction) and a sigmoid give one gate per channel. The kernel size adapts to the width:
k = |log2(C)/gamma + b/gamma|_odd with gamma=2, b=1; as in timm the value is truncated, made odd by
adding one when even, and is at least 3.
"""

import math

import torch
from torch import nn


def adaptive_kernel_size(c1: int, gamma: float = 2, b: float = 1) -> int:
    t = int(abs(math.log2(c1) + b) / gamma)
    return max(t if t % 2 else t + 1, 3)


class ECA(nn.Module):
    """Same-width channel attention: ECA(c1, gamma=2, b=1) maps (N, c1, H, W) to (N, c1, H, W)."""

    def __init__(self, c1: int, gamma: float = 2, b: float = 1):
        super().__init__()
        k = adaptive_kernel_size(c1, gamma, b)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        y = self.conv(x.mean((2, 3)).view(n, 1, c))
        return x * torch.sigmoid(y).view(n, c, 1, 1)
