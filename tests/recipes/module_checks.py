"""Checks shared by the recipe module tests: folding conv+BN pairs the way a target's fuse() does, gradients
reaching every parameter, BatchNorm statistics that make copied-weight comparisons meaningful."""

import torch
from torch import nn


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A fresh nn.Conv2d with the BatchNorm folded in (as YOLOv5's and older ultralytics' fuse_conv_and_bn build
    it: the strictest form, since the conv's own class is not kept)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).requires_grad_(False)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


@torch.no_grad()
def fold_conv_bn(model: nn.Module) -> int:
    """Fold every conv+BN pair of the two structures the recipes promise (NOTES: fuse): a module with `conv`,
    `bn` and `forward_fuse` (the YOLO Conv protocol), and an nn.Sequential holding a Conv2d immediately followed
    by its BatchNorm2d. Returns how many pairs were folded."""
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[a], module._modules[b] = _folded(conv, bn), nn.Identity()
                    folded += 1
        elif (isinstance(getattr(module, "conv", None), nn.Conv2d)
              and isinstance(getattr(module, "bn", None), nn.BatchNorm2d) and hasattr(module, "forward_fuse")):
            module.conv = _folded(module.conv, module.bn)
            delattr(module, "bn")
            module.forward = module.forward_fuse
            folded += 1
    return folded


def batchnorms(model: nn.Module) -> list:
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def randomise_batchnorm(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BatchNorm affine parameters and running statistics, so that a BN left out, folded wrongly or
    applied twice shows in the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.2, 0.2), (m.running_mean, -0.2, 0.2),
                              (m.running_var, 0.5, 1.5)):
                t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g))
    return model


def random_projection_loss(outputs) -> torch.Tensor:
    """A loss whose gradient reaches every output element (a plain sum gives zero gradients through a final
    BatchNorm in train mode)."""
    g = torch.Generator().manual_seed(0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in outputs)


def assert_every_parameter_gets_gradient(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
        assert p.grad.abs().sum() > 0, f"all-zero gradient in {name}"


def expected_shapes(model, b: int, h: int, w: int) -> list:
    return [(b, c, h // s, w // s) for c, s in zip(model.feature_channels, model.feature_strides)]
