"""Weighted feature fusion node of a BiFPN.

Paper: "EfficientDet: Scalable and Efficient Object Detection" (arXiv:1911.09070), Sec. 3.3.

A node fuses same-shaped feature maps with "fast normalised fusion"

    out = sum_i w_i * x_i / (eps + sum_j w_j),    w_i = relu(raw_i) >= 0

and then, as every EfficientDet BiFPN node does, applies swish followed by a depthwise
separable 3x3 convolution and batch normalisation.
"""

import torch
import torch.nn as nn

__all__ = ("BiFPN",)


class BiFPN(nn.Module):
    """Fast normalised fusion of several same-width inputs, optionally followed by the
    EfficientDet post-fusion convolution.

    Args:
        c1: list of input channel counts, one per fused input; all must be equal.
        conv: append swish -> depthwise 3x3 -> pointwise 1x1 -> BatchNorm after the fusion
            (default True). With False the module is the bare weighted average.
    """

    eps = 1e-4

    def __init__(self, c1, conv=True):
        super().__init__()
        widths = self._check_widths(c1)
        c = widths[0]
        self.n = len(widths)
        # One learnable scalar per input, initialised to 1 (a plain average at the start).
        self.w = nn.Parameter(torch.ones(self.n, dtype=torch.float32))
        self.post = self._make_post_conv(c) if conv else None

    @staticmethod
    def _check_widths(c1):
        if isinstance(c1, int):
            raise ValueError(f"BiFPN expects a list of input channel counts, got the int {c1}")
        widths = [int(c) for c in c1]
        if len(widths) < 2:
            raise ValueError(f"BiFPN fuses at least two inputs, got channel list {widths}")
        if len(set(widths)) != 1:
            raise ValueError(
                f"BiFPN inputs must all have the same number of channels, got widths {widths}; "
                "add a Conv in front of the narrower/wider inputs to match them"
            )
        return widths

    @staticmethod
    def _make_post_conv(c):
        # Pre-activation order of the reference node; the pointwise conv has no bias because
        # the BatchNorm right after it supplies the shift.
        return nn.Sequential(
            nn.SiLU(),
            nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False),  # depthwise
            nn.Conv2d(c, c, 1, 1, 0, bias=False),  # pointwise
            nn.BatchNorm2d(c),
        )

    def fusion_weights(self) -> torch.Tensor:
        """The non-negative weights actually used, normalised so they sum to (nearly) one."""
        w = torch.relu(self.w)
        return w / (w.sum() + self.eps)

    def forward(self, xs):
        if len(xs) != self.n:
            raise ValueError(f"BiFPN was built for {self.n} inputs, got {len(xs)}")
        w = self.fusion_weights().to(dtype=xs[0].dtype)
        fused = w[0] * xs[0]
        for i in range(1, self.n):
            fused = fused + w[i] * xs[i]
        return fused if self.post is None else self.post(fused)
