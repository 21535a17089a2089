"""Fold every conv+BN pair of a recipe module the two ways the patched targets' fuse() will, and compare.

The structures (NOTES: fuse()): a submodule with `conv` (nn.Conv2d), `bn` (nn.BatchNorm2d) and `forward_fuse`
(the YOLO Conv protocol: fold, drop `bn`, forward = forward_fuse), or an nn.Sequential in which an nn.Conv2d is
immediately followed by its nn.BatchNorm2d (fold, the BN becomes an identity).
"""

import copy

import torch
from torch import nn


def folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by bn (eval statistics) as one conv with a bias."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def fold_conv_bn(model: nn.Module) -> int:
    """Fold in place every pair in one of the two structures; returns how many were folded."""
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):  # first: a Sequential may name its children conv and bn
            layers = list(module)
            for i in range(len(layers) - 1):
                if isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
                    module[i] = folded_conv(layers[i], layers[i + 1])
                    module[i + 1] = nn.Identity()
                    folded += 1
        elif isinstance(getattr(module, "conv", None), nn.Conv2d) and isinstance(getattr(module, "bn", None),
                                                                                 nn.BatchNorm2d):
            assert hasattr(module, "forward_fuse"), f"{type(module).__name__} has conv and bn but no forward_fuse"
            module.conv = folded_conv(module.conv, module.bn)
            delattr(module, "bn")
            module.forward = module.forward_fuse
            folded += 1
    return folded


def batchnorms(model: nn.Module) -> list:
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def randomise_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial affine parameters and running statistics, so that folding has something to get wrong."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


def outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def check_fuses(model: nn.Module, x, allowed_left=()) -> int:
    """Fold a copy of `model` (eval); no BatchNorm may remain but those named in `allowed_left` (a predicate
    on the module name, or names), and every output must stay within 1e-4 of the unfolded model's (relative to
    the output's scale). Returns the number of folded pairs."""
    model = randomise_batchnorms(model).eval()
    fused = copy.deepcopy(model)
    folded = fold_conv_bn(fused)
    left = batchnorms(fused)
    allowed = allowed_left if callable(allowed_left) else (lambda name: name in allowed_left)
    assert [name for name in left if not allowed(name)] == [], "BatchNorm layers left after folding"
    for a, b in zip(outputs(model, x), outputs(fused, x), strict=True):
        assert a.shape == b.shape
        scale = max(1.0, a.abs().max().item())
        assert (a - b).abs().max().item() < 1e-4 * scale
    return folded
