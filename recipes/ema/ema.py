"""EMA: Efficient Multi-Scale Attention with cross-spatial learning (Ouyang et al., ICASSP 2023,
arXiv:2305.13563), as the authors' EMA_attention_module (YOLOonMe/EMA-attention-module).

The channels are split into G groups that are processed as separate samples. Within a group:
  1x1 branch: the coordinate-attention pooling (mean along the width per row, along the height per
              column), one shared 1x1 conv, sigmoid gates per row and per column, then GroupNorm;
  3x3 branch: a 3x3 conv;
  cross-spatial learning: each branch's globally pooled channel descriptor, softmaxed over the
              channels, is multiplied with the other branch's feature map; the two spatial maps are
              summed, and their sigmoid rescales the group's input.
"""

import torch
from torch import nn


def group_count(c1: int, factor: int = 32) -> int:
    """The largest divisor of c1 not above `factor`: the authors' reshape needs groups dividing c1."""
    return next(g for g in range(min(factor, c1), 0, -1) if c1 % g == 0)


class EMA(nn.Module):
    """Same-width attention: EMA(c1, factor=32) maps (N, c1, H, W) to (N, c1, H, W)."""

    def __init__(self, c1: int, factor: int = 32):
        super().__init__()
        self.groups = group_count(c1, factor)
        cg = c1 // self.groups
        self.gn = nn.GroupNorm(cg, cg)  # one group per channel, as the authors'
        self.conv1x1 = nn.Conv2d(cg, cg, 1)
        self.conv3x3 = nn.Conv2d(cg, cg, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        bg, cg = b * self.groups, c // self.groups
        g = x.reshape(bg, cg, h, w)
        rows = g.mean(3, keepdim=True)                    # (bg, cg, h, 1)
        cols = g.mean(2, keepdim=True).transpose(2, 3)    # (bg, cg, w, 1)
        gate_rows, gate_cols = torch.split(self.conv1x1(torch.cat((rows, cols), 2)), (h, w), 2)
        x1 = self.gn(g * gate_rows.sigmoid() * gate_cols.transpose(2, 3).sigmoid())
        x2 = self.conv3x3(g)
        d1 = torch.softmax(x1.mean((2, 3)), dim=-1).unsqueeze(1)   # (bg, 1, cg)
        d2 = torch.softmax(x2.mean((2, 3)), dim=-1).unsqueeze(1)
        spatial = d1 @ x2.reshape(bg, cg, h * w) + d2 @ x1.reshape(bg, cg, h * w)   # (bg, 1, h*w)
        return (g * spatial.view(bg, 1, h, w).sigmoid()).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
