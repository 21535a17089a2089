"""Receptive-field attention convolution (Zhang et al., "RFAConv: Innovating Spatial Attention and Standard
Convolutional Operation", arXiv:2304.03198).

A k x k conv shares one kernel across every receptive field. RFAConv first expands each receptive field into its
own k^2 features (a grouped k x k conv, c -> c k^2, + BN + ReLU), weights those features with an attention over
the field (average pooling over the k x k window, a grouped 1x1 conv to k^2 logits per channel, softmax over the
k^2 positions), lays the weighted fields out side by side (an (h k) x (w k) map) and reads each field with one
k x k conv of stride k + BN + ReLU. Built as the authors' group-conv implementation (the one their experiments use).
"""

import torch
from torch import nn


class RFAConv(nn.Module):
    """RFAConv(c1, c2, k=3, s=1): a drop-in for Conv [c2, k, s]; stride 2 downsamples like a strided conv.

    The submodules are nn.Sequential with each BatchNorm right after its conv, so the target's fuse() folds them.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1):
        super().__init__()
        if k % 2 == 0:
            raise ValueError(f"RFAConv needs an odd kernel size, got k={k}")
        self.k = k
        fields = c1 * k * k
        self.get_weight = nn.Sequential(
            nn.AvgPool2d(k, s, k // 2),
            nn.Conv2d(c1, fields, 1, groups=c1, bias=False),
        )
        self.generate_feature = nn.Sequential(
            nn.Conv2d(c1, fields, k, s, k // 2, groups=c1, bias=False),
            nn.BatchNorm2d(fields),
            nn.ReLU(),
        )
        self.conv = nn.Sequential(nn.Conv2d(c1, c2, k, k), nn.BatchNorm2d(c2), nn.ReLU())

    def forward(self, x):
        b, c = x.shape[:2]
        k = self.k
        logits = self.get_weight(x)
        h, w = logits.shape[2:]
        attention = logits.view(b, c, k * k, h, w).softmax(2)
        features = self.generate_feature(x).view(b, c, k * k, h, w)
        weighted = (features * attention).view(b, c, k, k, h, w)
        # field (i, j) of output pixel (y, x) goes to row y * k + i, column x * k + j
        tiled = weighted.permute(0, 1, 4, 2, 5, 3).reshape(b, c, h * k, w * k)
        return self.conv(tiled)
