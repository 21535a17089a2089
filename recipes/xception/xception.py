"""Xception building blocks: depthwise-separable convolution and the residual Xception block.

Paper: "Xception: Deep Learning with Depthwise Separable Convolutions" (arXiv:1610.02357).

The block follows the widely used PyTorch port of Xception (the one in timm's ``xception.py``):
``reps`` times [ReLU -> SeparableConv2d 3x3 -> BN], an optional 3x3 max-pool for stride 2, and a
shortcut that is the identity, or a strided 1x1 conv + BN when the shape changes. Inside the block each
separable conv is written out as its depthwise and pointwise convs (same tensors, same order), so every
conv + BN pair is adjacent in one nn.Sequential and folds in the targets' fuse().
"""

import torch
import torch.nn as nn

__all__ = ("SeparableConv2d", "XceptionBlock")


class SeparableConv2d(nn.Module):
    """k x k depthwise conv (stride s) followed by a 1x1 pointwise conv, both without bias.

    As in the paper there is no normalisation or non-linearity between the two convolutions, and
    none after them: in Xception a BatchNorm follows every separable convolution in the block.
    """

    def __init__(self, c1, c2, k=3, s=1):
        super().__init__()
        self.depthwise = nn.Conv2d(c1, c1, k, s, k // 2, groups=c1, bias=False)
        self.pointwise = nn.Conv2d(c1, c2, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class PreActReLU(nn.Module):
    """ReLU that never writes into its input.

    The first ReLU of an Xception block reads the block input, which the shortcut (and, inside a
    detector, possibly other layers) reads as well. The targets' ``initialize_weights`` switches
    ``nn.ReLU`` instances to in-place; a separate class keeps this one out of that.
    """

    def forward(self, x):
        return torch.relu(x)


class XceptionBlock(nn.Module):
    """Residual Xception block (entry / middle / exit flow).

    Args:
        c1, c2: input and output channels (c1 != c2 is allowed at any stride).
        reps: number of ReLU -> SeparableConv2d -> BN repetitions.
        s: stride; s > 1 appends a 3x3 max-pool with that stride.
        start_with_relu: begin with a ReLU (False for the very first block of the network).
        grow_first: change the width in the first separable conv (True) or in the last (False).
    """

    def __init__(self, c1, c2, reps=2, s=1, start_with_relu=True, grow_first=True):
        super().__init__()
        if reps < 1:
            raise ValueError(f"XceptionBlock: reps must be at least 1, got {reps}")
        if c1 != c2 or s != 1:
            self.skip = nn.Sequential(nn.Conv2d(c1, c2, 1, s, bias=False), nn.BatchNorm2d(c2))
        else:
            self.skip = nn.Identity()

        layers = []
        for i, (cin, cout) in enumerate(self._widths(c1, c2, reps, grow_first)):
            if i == 0:
                if start_with_relu:
                    layers.append(PreActReLU())
            else:
                layers.append(nn.ReLU())
            # A SeparableConv2d written out as its two convs, so that the pointwise conv sits right before its
            # BatchNorm in this Sequential and the targets' fuse() folds the pair.
            layers += [nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False),
                       nn.BatchNorm2d(cout)]
        if s != 1:
            layers.append(nn.MaxPool2d(3, s, 1))
        self.rep = nn.Sequential(*layers)

    @staticmethod
    def _widths(c1, c2, reps, grow_first):
        """(in, out) channels of each separable conv: the width changes once, first or last."""
        if grow_first:
            return [(c1 if i == 0 else c2, c2) for i in range(reps)]
        return [(c1, c2 if i == reps - 1 else c1) for i in range(reps)]

    def forward(self, x):
        return self.rep(x) + self.skip(x)
