"""Check that a module's initial weights follow a reference's initialisation scheme, statistically.

A weight tensor drawn from N(0, std) has a sample standard deviation within a few std / sqrt(2 n) of std; the
check allows 6 of those (plus 1 % for the tiny tensors). Every reference scheme here draws from a normal
distribution, PyTorch's default for Conv2d from a uniform one (Kaiming uniform with a = sqrt(5):
std = 1 / sqrt(3 * fan_in)); for tensors of NORMALITY_MIN elements or more the excess kurtosis tells them apart
(0 for a normal, -1.2 for a uniform, sampling error sqrt(24 / n) <= 0.11). `rejects_pytorch_default` gives the
share of layers for which the check would reject PyTorch's default.
"""

import math

import torch
from torch import nn


def kaiming_fan_out_std(conv: nn.Conv2d) -> float:
    """torchvision / the MobileNeXt authors: Kaiming normal, fan_out = out_channels * k * k, ReLU gain."""
    return math.sqrt(2.0 / (conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]))


def goog_std(conv: nn.Conv2d) -> float:
    """timm's _init_weight_goog: fan_out = k * k * out_channels / groups."""
    return math.sqrt(2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups))


def pytorch_default_std(conv: nn.Conv2d) -> float:
    fan_in = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    return 1.0 / math.sqrt(3 * fan_in)


NORMALITY_MIN = 2000


def _tolerance(n: int) -> float:
    return 6 / math.sqrt(2 * n) + 0.01


def matches_std(weight: torch.Tensor, std: float) -> bool:
    n = weight.numel()
    sample = weight.detach().double().flatten()
    if abs(sample.std().item() / std - 1) >= _tolerance(n) or abs(sample.mean().item()) >= 6 * std / math.sqrt(n):
        return False
    if n >= NORMALITY_MIN:
        centred = sample - sample.mean()
        excess_kurtosis = (centred ** 4).mean() / (centred ** 2).mean() ** 2 - 3
        return excess_kurtosis.item() > -0.6
    return True


def assert_convs_follow(model: nn.Module, expected_std) -> list:
    """Every Conv2d weight ~ N(0, expected_std(conv)) and every conv bias 0; returns the convs checked."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs
    for name, conv in convs:
        assert matches_std(conv.weight, expected_std(conv)), (
            f"{name}: std {conv.weight.std().item():.4g}, expected {expected_std(conv):.4g}")
        if conv.bias is not None:
            assert torch.count_nonzero(conv.bias) == 0, name
    return [conv for _, conv in convs]


def rejects_pytorch_default(convs, expected_std) -> float:
    """Share of the convs for which the check would reject a default-initialised weight (its std is far from the
    expected one, or the tensor is large enough to tell a uniform from a normal distribution)."""
    far = [c for c in convs if c.weight.numel() >= NORMALITY_MIN
           or abs(pytorch_default_std(c) / expected_std(c) - 1) > 2 * _tolerance(c.weight.numel())]
    return len(far) / len(convs)


def assert_batchnorms(model: nn.Module, weight: float = 1.0, bias: float = 0.0) -> None:
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    for bn in bns:
        assert torch.all(bn.weight == weight) and torch.all(bn.bias == bias)
        assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)
