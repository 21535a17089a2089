"""Tests of Coordinate Attention (recipes/coordatt/coordatt.py).

Reference: the paper's eqs. 4-9 worked out below with explicit sums, and the parameter count of the
authors' module definition (houqb/CoordAttention coordatt.py: conv1 with bias to mip = max(8, inp //
reduction), bn1, conv_h and conv_w with biases back to oup = inp).
"""

import tomllib

import pytest
import torch

import module_checks as checks
from recipe_loader import RECIPES, count_params, load_recipe_module

ca = load_recipe_module("coordatt", "coordatt.py")
RECIPE = tomllib.loads((RECIPES / "coordatt" / "recipe.toml").read_text())


def authors_params(inp, reduction=32):
    mip = max(8, inp // reduction)
    return (inp * mip + mip) + 2 * mip + 2 * (mip * inp + inp)  # conv1, bn1, conv_h + conv_w


# (c1, reduction) -> mip by hand
MIP = {(16, 32): 8, (100, 32): 8, (256, 32): 8, (288, 32): 9, (512, 32): 16, (1024, 32): 32, (256, 16): 16}


@pytest.mark.parametrize("c1,reduction", list(MIP))
def test_parameter_count_equals_authors_definition(c1, reduction):
    m = ca.CoordAtt(c1, reduction)
    assert m.conv1[0].out_channels == MIP[c1, reduction]
    assert count_params(m) == authors_params(c1, reduction)


def test_concrete_parameter_counts():
    # CoordAtt(256): conv1 256*8 + 8, bn1 16, conv_h/conv_w 2 * (8*256 + 256) -> 6_680
    # CoordAtt(1024): conv1 1024*32 + 32, bn1 64, conv_h/conv_w 2 * (32*1024 + 1024) -> 100_448
    assert count_params(ca.CoordAtt(256)) == 6_680
    assert count_params(ca.CoordAtt(1024)) == 100_448


def by_hand(m, x, train):
    """Eqs. 4-9 with explicit sums; BatchNorm with batch statistics over (N, H + W) in train mode."""
    n, c, h, w = x.shape
    z_h = sum(x[:, :, :, i] for i in range(w)) / w                            # (N, C, H), eq. 4
    z_w = sum(x[:, :, j, :] for j in range(h)) / h                            # (N, C, W), eq. 5
    z = torch.cat((z_h, z_w), 2)                                              # (N, C, H + W)
    conv, bn = m.conv1[0], m.conv1[1]
    f = torch.einsum("oc,ncp->nop", conv.weight[:, :, 0, 0], z) + conv.bias.view(1, -1, 1)
    if train:
        mean = f.mean((0, 2), keepdim=True)
        var = ((f - mean) ** 2).mean((0, 2), keepdim=True)
    else:
        mean, var = bn.running_mean.view(1, -1, 1), bn.running_var.view(1, -1, 1)
    f = (f - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1) + bn.bias.view(1, -1, 1)
    f = f * torch.clamp(f + 3, 0, 6) / 6                                      # h-swish, eq. 6
    f_h, f_w = f[:, :, :h], f[:, :, h:]
    g_h = torch.sigmoid(torch.einsum("om,nmp->nop", m.conv_h.weight[:, :, 0, 0], f_h) + m.conv_h.bias.view(1, -1, 1))
    g_w = torch.sigmoid(torch.einsum("om,nmp->nop", m.conv_w.weight[:, :, 0, 0], f_w) + m.conv_w.bias.view(1, -1, 1))
    return x * g_h.view(n, c, h, 1) * g_w.view(n, c, 1, w)                    # eq. 9


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("c1,hw", [(16, (5, 7)), (64, (6, 6)), (96, (3, 8))])
def test_equations_by_hand(c1, hw, train):
    torch.manual_seed(0)
    m = ca.CoordAtt(c1)
    bn = m.conv1[1]
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.3, 0.3)
        bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 1.5)
    m.train(train)
    x = torch.randn(2, c1, *hw)
    expected = by_hand(m, x, train).detach()
    torch.testing.assert_close(m(x).detach(), expected, rtol=1e-5, atol=1e-6)


def test_row_and_column_gates_are_separable():
    """y / x factors into a per-row times a per-column gate: rank one per channel."""
    torch.manual_seed(0)
    m = ca.CoordAtt(16).eval()
    x = torch.rand(1, 16, 6, 9) + 0.5
    with torch.no_grad():
        ratio = m(x) / x
    for c in range(16):
        assert torch.linalg.matrix_rank(ratio[0, c].double(), rtol=1e-5) == 1


@pytest.mark.parametrize("shape", [(1, 32, 8, 8), (2, 64, 6, 10), (2, 16, 1, 1)])
def test_same_width_shapes(shape):
    m = ca.CoordAtt(shape[1])
    for mode in (m.train, m.eval):
        mode()
        assert m(torch.randn(shape)).shape == shape


def test_gradient_reaches_every_parameter():
    checks.assert_every_parameter_gets_gradient(ca.CoordAtt(32).train(), torch.randn(2, 32, 8, 8))


def test_survives_initialize_weights():
    checks.assert_survives_initialize_weights(lambda: ca.CoordAtt(32), torch.randn(2, 32, 8, 8))


def test_folding_conv_and_batchnorm():
    checks.assert_folding_keeps_outputs(ca.CoordAtt(32), torch.randn(2, 32, 8, 8), expected_pairs=1)


def test_bfloat16():
    checks.assert_bfloat16_works(lambda: ca.CoordAtt(64), torch.randn(2, 64, 8, 8))


def test_stride_probe():
    assert checks.stride_probe(lambda: ca.CoordAtt(16), 16).shape == (1, 16, 256, 256)


def test_recipe_declares_same_width_module():
    (module,) = RECIPE["modules"]
    assert (module["name"], module["file"], module["role"]) == ("CoordAtt", "coordatt.py", "same-width")
    assert {y["target"] for y in RECIPE["yamls"]} == {"ultralytics", "yolov5"}
    assert all(y["vars"]["module"] == "CoordAtt" for y in RECIPE["yamls"])
