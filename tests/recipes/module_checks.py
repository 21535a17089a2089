"""Checks every recipe module must pass whatever its paper: gradients, the targets' initialize_weights,
conv+BN folding (what the targets' fuse() does; the folding itself lives in fusing.py), mixed precision and
the stride probe. The per-recipe test files call them with their own constructors and inputs."""

import copy

import torch
from torch import nn

from fusing import batchnorms, fold_conv_bn, randomise_batchnorms  # noqa: F401  (re-exported for the tests)
from recipe_loader import emulate_initialize_weights


def random_projection_loss(outputs, seed: int = 0) -> torch.Tensor:
    """A loss whose gradient reaches every output element (a plain sum gives zero gradients through a final
    BatchNorm in train mode). `outputs`: a tensor or a list of tensors."""
    gen = torch.Generator().manual_seed(seed)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return sum((o.float() * torch.randn(o.shape, generator=gen)).sum() for o in outputs)


def assert_every_parameter_gets_gradient(model: nn.Module, x: torch.Tensor | None = None) -> None:
    """Every parameter has a finite, non-zero gradient: after one backward of a random projection of
    model(x) when `x` is given, or from the backward the caller already ran."""
    if x is not None:
        model.zero_grad(set_to_none=True)
        random_projection_loss(model(x)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
        assert p.grad.abs().sum() > 0, f"all-zero gradient in {name}"


def expected_shapes(model, b: int, h: int, w: int) -> list:
    """The output shapes a backbone declares for an input of (b, ·, h, w)."""
    return [(b, c, h // s, w // s) for c, s in zip(model.feature_channels, model.feature_strides)]


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


def assert_folding_keeps_outputs(model: nn.Module, x: torch.Tensor, expected_pairs: int) -> None:
    """Folding folds exactly `expected_pairs` pairs, leaves no BatchNorm and changes eval outputs by less
    than 1e-4."""
    randomise_batchnorms(model, seed=1)
    model.eval()
    count = len(batchnorms(model))
    with torch.no_grad():
        before = model(x)
        assert fold_conv_bn(model) == expected_pairs == count
        assert not batchnorms(model)
        after = model(x)
    assert (after - before).abs().max().item() < 1e-4


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
