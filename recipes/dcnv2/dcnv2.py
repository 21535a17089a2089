"""Modulated deformable convolution (DCNv2: Zhu et al., "Deformable ConvNets v2: More Deformable, Better
Results", CVPR 2019, arXiv:1811.11168) as a YOLO Conv: deformable conv -> BatchNorm -> activation.

For every output location p0 and kernel position k the conv samples the input at p0 + p_k + dp_k (bilinear) and
scales the sample by dm_k in [0, 1]:  y(p0) = sum_k w_k * x(p0 + p_k + dp_k) * dm_k.  The offsets dp and the
modulation dm come from a plain conv over the same input (3 k^2 channels per deformable group: two offset halves,
then the mask logits through a sigmoid), initialised to zero as in the paper: at the start dp = 0 and dm = 0.5,
so the layer computes half the regular conv with the same weights. The sampling runs on
torchvision.ops.deform_conv2d.
"""

import torch
from torch import nn
from torchvision.ops import deform_conv2d


class DCNv2(nn.Module):
    """DCNv2(c1, c2, k=3, s=1, p=None, g=1, d=1, act=True, deform_groups=1): Conv's arguments [c2, k, s, p, g, d,
    act], plus the number of deformable groups (groups of input channels sharing one offset field).

    `conv` holds the deformable kernel as an nn.Conv2d (stride, padding, dilation, groups and, once fused, the
    bias) and `bn` its BatchNorm, with `forward_fuse`: the YOLO Conv protocol, so the target's fuse() folds the BN
    into the kernel and the layer stays deformable. torchvision has no bfloat16 CPU kernel for deform_conv2d, so a
    bfloat16 input is sampled in float32 and the result cast back.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p=None, g: int = 1, d: int = 1, act=True,
                 deform_groups: int = 1):
        super().__init__()
        p = d * (k - 1) // 2 if p is None else p
        self.conv = nn.Conv2d(c1, c2, k, s, p, dilation=d, groups=g, bias=False)
        self.conv_offset = nn.Conv2d(c1, 3 * deform_groups * k * k, k, s, p, dilation=d, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def offset_and_mask(self, x):
        """Offsets (2 k^2 per deformable group) and modulation scalars in [0, 1] (k^2 per group)."""
        o1, o2, mask = self.conv_offset(x).chunk(3, dim=1)
        return torch.cat((o1, o2), dim=1), mask.sigmoid()

    def deform(self, x):
        offset, mask = self.offset_and_mask(x)
        # torchvision's CPU kernel turns a NaN offset into an out-of-bounds read (its bounds test is false for
        # NaN) and the process dies; YOLOv5 profiles every new model on torch.empty input, which may hold NaN.
        # A NaN offset samples at the regular grid point instead: a NaN input still gives a NaN output.
        offset = torch.nan_to_num(offset, nan=0.0)
        dtype = torch.float32 if x.dtype == torch.bfloat16 else x.dtype
        weight, bias = self.conv.weight, self.conv.bias
        y = deform_conv2d(x.to(dtype), offset.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
                          stride=self.conv.stride, padding=self.conv.padding, dilation=self.conv.dilation,
                          mask=mask.to(dtype))
        return y.to(x.dtype)

    def forward(self, x):
        return self.act(self.bn(self.deform(x)))

    def forward_fuse(self, x):
        return self.act(self.deform(x))
