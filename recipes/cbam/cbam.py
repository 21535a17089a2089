"""CBAM: Convolutional Block Attention Module (Woo et al., arXiv:1807.06521), as timm's CbamModule.

Channel attention then spatial attention, each rescaling its input:
  channel: a shared two-layer MLP (1x1 convs without bias, ReLU) applied to the average- and the
           max-pooled descriptor; the two results are summed and gated by a sigmoid (eq. 2);
  spatial: the channel-wise mean and max maps, concatenated in that order, a 7x7 conv (no bias) and
           BatchNorm, gated by a sigmoid (eq. 3).
The MLP width is c1 / reduction rounded to the nearest integer, at least 1.
"""

import torch
from torch import nn


def hidden_channels(c1: int, reduction: float = 16) -> int:
    """c1 / reduction rounded to the nearest integer, at least 1 (timm: make_divisible(v, 1, round_limit=0))."""
    return max(1, int(c1 / reduction + 0.5))


class ChannelAttention(nn.Module):
    def __init__(self, c1: int, reduction: float = 16):
        super().__init__()
        hidden = hidden_channels(c1, reduction)
        self.fc1 = nn.Conv2d(c1, hidden, 1, bias=False)
        self.act = nn.ReLU(inplace=True)  # acts on fc1's own output
        self.fc2 = nn.Conv2d(hidden, c1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        mx = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"CBAM spatial kernel_size={kernel_size} must be odd")
        # conv + BatchNorm in an nn.Sequential so that fuse() can fold the pair
        self.conv = nn.Sequential(nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False),
                                  nn.BatchNorm2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Same-width attention: CBAM(c1, reduction=16, kernel_size=7) maps (N, c1, H, W) to (N, c1, H, W)."""

    def __init__(self, c1: int, reduction: float = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(c1, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
