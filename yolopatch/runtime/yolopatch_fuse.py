"""Conv + BatchNorm folding for the modules yolopatch added, called by the model's fuse().

Written into this package by yolopatch; `yolopatch revert` removes it.

The target's own fuse() folds only its own Conv classes. After its loop, fuse() calls
fold_batchnorms(self.model, (NewClass, ...)) with the classes the patch added, which folds the two
structures those modules keep their pairs in:

  a unit      a submodule with attributes `conv` (nn.Conv2d) and `bn` (nn.BatchNorm2d) and a method
              `forward_fuse(x)` (the YOLO Conv protocol): `conv` becomes the folded conv, `bn` is removed
              and `forward` becomes `forward_fuse`;
  a sequence  an nn.Sequential in which an nn.Conv2d is immediately followed by its nn.BatchNorm2d: the
              conv becomes the folded conv and the BatchNorm an nn.Identity (later indices keep their place);
  its own     an added module with a method `fuse_batchnorms(fold_conv_bn)` folds its pairs itself (a wrapper
              of another library's layers, such as TimmBackbone) and returns how many it folded.

Only modules inside instances of the given classes are touched, so stock models fuse exactly as before.
A BatchNorm in any other position (before a conv, after an addition, without running statistics) is left
as it is: it cannot be folded into a preceding conv.
"""

import torch
from torch import nn


def foldable(conv, bn):
    """Whether bn(conv(x)) in eval mode is one convolution."""
    return (type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and bn.running_mean is not None and conv.out_channels == bn.num_features)


def fold_conv_bn(conv, bn):
    """A Conv2d (with bias, no gradients) computing bn(conv(x)) with bn's running statistics."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.to(torch.float64) + bn.eps)
        if bn.affine:
            scale = scale * bn.weight.to(torch.float64)
        shift = -bn.running_mean.to(torch.float64) * scale
        if bn.affine:
            shift = shift + bn.bias.to(torch.float64)
        if conv.bias is not None:
            shift = shift + conv.bias.to(torch.float64) * scale
        weight = conv.weight.to(torch.float64) * scale.reshape(-1, 1, 1, 1)
        fused.weight.copy_(weight.to(fused.weight.dtype))
        fused.bias.copy_(shift.to(fused.bias.dtype))
    return fused.requires_grad_(False)


def _fold_unit(module):
    conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
    if not callable(getattr(module, "forward_fuse", None)) or not foldable(conv, bn):
        return 0
    module.conv = fold_conv_bn(conv, bn)
    delattr(module, "bn")
    module.forward = module.forward_fuse
    return 1


def _fold_sequence(sequence):
    names = list(sequence._modules)
    folded = 0
    for first, second in zip(names, names[1:]):
        conv, bn = sequence._modules[first], sequence._modules[second]
        if foldable(conv, bn):
            sequence._modules[first] = fold_conv_bn(conv, bn)
            sequence._modules[second] = nn.Identity()
            folded += 1
    return folded


def fold_within(root):
    """Fold every unit and sequence pair inside `root`; returns how many BatchNorm layers were folded."""
    folded = 0
    for module in list(root.modules()):
        if isinstance(module, nn.Sequential):
            folded += _fold_sequence(module)
        elif hasattr(module, "bn"):
            folded += _fold_unit(module)
    return folded


def fold_batchnorms(model, classes):
    """Fold the conv + BatchNorm pairs inside every instance of `classes` within `model`."""
    classes = tuple(classes)
    if not classes:
        return 0
    folded = 0
    for module in [m for m in model.modules() if isinstance(m, classes)]:
        own = getattr(module, "fuse_batchnorms", None)
        folded += own(fold_conv_bn) if callable(own) else fold_within(module)
    return folded
