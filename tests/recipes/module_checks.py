"""Checks every recipe module must pass whatever its paper: shapes, gradients, the targets'
initialize_weights, conv+BN folding (what the targets' fuse() does), mixed precision and the stride probe.

Each function asserts and returns nothing useful; the per-recipe test files call them with their own
constructors and inputs.
"""

import copy

import torch
from torch import nn

from recipe_loader import emulate_initialize_weights


def random_projection_loss(out: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A loss whose gradient reaches everything (a plain sum through a train-mode norm would be flat)."""
    gen = torch.Generator().manual_seed(seed)
    return (out.float() * torch.randn(out.shape, generator=gen)).sum()


def assert_every_parameter_gets_gradient(model: nn.Module, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    random_projection_loss(model(x)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def assert_survives_initialize_weights(build, x: torch.Tensor) -> None:
    """After the targets' initialize_weights (BatchNorm eps/momentum, in-place activations) the module
    computes the same outputs and gradients as an out-of-place copy with the same BatchNorm settings."""
    torch.manual_seed(0)
    reference = build().train()
    patched = emulate_initialize_weights(copy.deepcopy(reference))
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    outs = []
    for model in (patched, reference):
        inp = x.clone().requires_grad_(True)
        out = model(inp)
        random_projection_loss(out).backward()
        outs.append((out.detach(), inp.grad))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1], msg="input gradient differs")
    for (name, pa), pb in zip(patched.named_parameters(), reference.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


# ---------------------------------------------------------------------------------------------------
# Conv+BN folding, written from the two structures the shared fuse() decision allows.
# ---------------------------------------------------------------------------------------------------

def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def fold_conv_bn(model: nn.Module) -> int:
    """Fold every conv+BN pair in place: Conv-protocol submodules (conv, bn, forward_fuse) and Conv2d
    directly followed by BatchNorm2d inside an nn.Sequential. Returns how many pairs were folded."""
    folded = 0
    for module in list(model.modules()):
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if hasattr(module, "forward_fuse") and isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module.conv = _folded_conv(conv, bn)
            del module.bn
            module.forward = module.forward_fuse
            folded += 1
        elif isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in zip(names, names[1:]):
                conv, bn = module._modules[first], module._modules[second]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[first] = _folded_conv(conv, bn)
                    module._modules[second] = nn.Identity()
                    folded += 1
    return folded


def _randomise_batchnorm(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def assert_folding_keeps_outputs(model: nn.Module, x: torch.Tensor, expected_pairs: int) -> None:
    """Folding leaves no BatchNorm and changes eval outputs by less than 1e-4."""
    _randomise_batchnorm(model)
    model.eval()
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        before = model(x)
        assert fold_conv_bn(model) == expected_pairs == batchnorms
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        after = model(x)
    assert (after - before).abs().max().item() < 1e-4


# ---------------------------------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------------------------------

def _assert_close_to_float32(out: torch.Tensor, ref: torch.Tensor, rel: float) -> None:
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    err = (out.float() - ref).abs().max().item()
    assert err <= rel * ref.abs().max().item(), f"bfloat16 output off by {err}"


def assert_bfloat16_works(build, x: torch.Tensor, rel: float = 0.05) -> None:
    """Under CPU autocast (float32 module) and as a bfloat16 module: forward and backward run, outputs
    stay close to float32, and a bfloat16 module keeps bfloat16 outputs (no float32 tensor leaks in)."""
    torch.manual_seed(0)
    model = build().train()
    ref = model(x).detach()
    inp = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inp)
        loss = random_projection_loss(out)
    loss.backward()
    _assert_close_to_float32(out.detach(), ref, rel)
    assert torch.isfinite(inp.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name

    half = copy.deepcopy(model).to(torch.bfloat16)
    half.zero_grad(set_to_none=True)
    inp = x.to(torch.bfloat16).requires_grad_(True)
    out = half(inp)
    assert out.dtype == torch.bfloat16
    random_projection_loss(out).backward()
    _assert_close_to_float32(out.detach(), ref, rel)
    assert inp.grad.dtype == torch.bfloat16 and torch.isfinite(inp.grad).all()
    for name, p in half.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.bfloat16, name


def stride_probe(build, c: int, size: int = 256) -> torch.Tensor:
    """What the targets do right after building: a train-mode forward of batch 1 at 256x256 (zeros)."""
    model = build().train()
    out = model(torch.zeros(1, c, size, size))
    assert torch.isfinite(out).all()
    return out
