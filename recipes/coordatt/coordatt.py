"""Coordinate Attention (Hou, Zhou and Feng, CVPR 2021, arXiv:2103.02907), as the authors' coordatt.py.

Channel attention that keeps positions: the input is averaged along the width (one value per row,
eq. 4) and along the height (one value per column, eq. 5); both strips are concatenated and share a
1x1 conv to max(8, c1 // reduction) channels, BatchNorm and h-swish (eq. 6); the result is split back
and two 1x1 convs with sigmoids give a row gate and a column gate (eqs. 7-8), which rescale the input
(eq. 9).
"""

import torch
from torch import nn


class CoordAtt(nn.Module):
    """Same-width attention: CoordAtt(c1, reduction=32) maps (N, c1, H, W) to (N, c1, H, W)."""

    def __init__(self, c1: int, reduction: int = 32):
        super().__init__()
        mip = max(8, c1 // reduction)
        # conv (with bias, as the authors'), BatchNorm, h-swish: an nn.Sequential fuse() can fold
        self.conv1 = nn.Sequential(nn.Conv2d(c1, mip, 1), nn.BatchNorm2d(mip), nn.Hardswish())
        self.conv_h = nn.Conv2d(mip, c1, 1)
        self.conv_w = nn.Conv2d(mip, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        rows = x.mean(3, keepdim=True)                    # (N, C, H, 1)
        cols = x.mean(2, keepdim=True).transpose(2, 3)    # (N, C, W, 1)
        y = self.conv1(torch.cat((rows, cols), 2))
        y_rows, y_cols = torch.split(y, (h, w), 2)
        gate_rows = torch.sigmoid(self.conv_h(y_rows))                   # (N, C, H, 1)
        gate_cols = torch.sigmoid(self.conv_w(y_cols.transpose(2, 3)))   # (N, C, 1, W)
        return x * gate_cols * gate_rows
