"""Tests of EMA (recipes/ema/ema.py).

Reference: the paper's description (grouping, 1x1 branch with directional pooling and GroupNorm, 3x3
branch, cross-spatial learning by softmaxed global descriptors) re-derived below with explicit loops
over groups and channels, and the parameter count of the authors' module definition
(YOLOonMe/EMA-attention-module: GroupNorm(cg, cg), 1x1 and 3x3 convs cg -> cg with biases, cg = C / factor).
"""

import tomllib

import pytest
import torch
import torch.nn.functional as F

import module_checks as checks
from recipe_loader import RECIPES, count_params, load_recipe_module

ema = load_recipe_module("ema", "ema.py")
RECIPE = tomllib.loads((RECIPES / "ema" / "recipe.toml").read_text())


def authors_params(channels, factor=32):
    cg = channels // factor
    return 2 * cg + (cg * cg + cg) + (9 * cg * cg + cg)   # GroupNorm affine, conv1x1, conv3x3


@pytest.mark.parametrize("c1,factor", [(32, 32), (64, 32), (128, 32), (256, 32), (512, 32), (1024, 32), (64, 8)])
def test_parameter_count_equals_authors_definition(c1, factor):
    m = ema.EMA(c1, factor)
    assert m.groups == factor
    assert count_params(m) == authors_params(c1, factor)


def test_concrete_parameter_counts():
    # cg = 8: 16 + 72 + 584 = 672; cg = 32: 64 + 1_056 + 9_248 = 10_368
    assert count_params(ema.EMA(256)) == 672
    assert count_params(ema.EMA(1024)) == 10_368


# c1 -> groups when 32 does not divide c1: the largest divisor of c1 not above 32
CLAMPED = {16: 16, 48: 24, 96: 32, 80: 20, 100: 25, 7: 7, 1: 1}


@pytest.mark.parametrize("c1", list(CLAMPED))
def test_groups_clamped_to_a_divisor(c1):
    m = ema.EMA(c1)
    assert m.groups == CLAMPED[c1] and c1 % m.groups == 0
    cg = c1 // m.groups
    assert count_params(m) == 10 * cg * cg + 4 * cg


def by_hand(m, x):
    n, c, h, w = x.shape
    groups, cg = m.groups, c // m.groups
    out = torch.empty_like(x)
    w1, b1 = m.conv1x1.weight[:, :, 0, 0], m.conv1x1.bias
    for b in range(n):
        for g in range(groups):
            xg = x[b, g * cg:(g + 1) * cg]                                   # (cg, h, w)
            pooled_rows = xg.sum(2) / w                                      # (cg, h)
            pooled_cols = xg.sum(1) / h                                      # (cg, w)
            gate_rows = torch.sigmoid(w1 @ pooled_rows + b1[:, None])
            gate_cols = torch.sigmoid(w1 @ pooled_cols + b1[:, None])
            y = xg * gate_rows[:, :, None] * gate_cols[:, None, :]
            mean = y.mean((1, 2), keepdim=True)
            var = ((y - mean) ** 2).mean((1, 2), keepdim=True)
            x1 = (y - mean) / torch.sqrt(var + m.gn.eps) * m.gn.weight[:, None, None] + m.gn.bias[:, None, None]
            x2 = F.conv2d(xg[None], m.conv3x3.weight, m.conv3x3.bias, padding=1)[0]
            d1 = torch.softmax(x1.mean((1, 2)), 0)                          # channel descriptors
            d2 = torch.softmax(x2.mean((1, 2)), 0)
            spatial = sum(d1[k] * x2[k] + d2[k] * x1[k] for k in range(cg))   # (h, w)
            out[b, g * cg:(g + 1) * cg] = xg * torch.sigmoid(spatial)
    return out


@pytest.mark.parametrize("c1,factor,hw", [(64, 32, (5, 7)), (64, 8, (6, 6)), (48, 32, (4, 9)), (16, 32, (3, 3))])
def test_paper_by_hand(c1, factor, hw):
    torch.manual_seed(0)
    m = ema.EMA(c1, factor)
    with torch.no_grad():
        m.gn.weight.uniform_(0.5, 1.5), m.gn.bias.uniform_(-0.3, 0.3)
    x = torch.randn(2, c1, *hw)
    with torch.no_grad():
        torch.testing.assert_close(m(x), by_hand(m, x), rtol=1e-5, atol=1e-6)


def test_train_and_eval_agree():
    """GroupNorm keeps no running statistics: the module computes the same function in both modes."""
    torch.manual_seed(0)
    m = ema.EMA(64)
    x = torch.randn(2, 64, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(m.train()(x), m.eval()(x))


@pytest.mark.parametrize("shape", [(1, 32, 8, 8), (2, 64, 6, 10), (2, 48, 1, 1)])
def test_same_width_shapes(shape):
    m = ema.EMA(shape[1])
    for mode in (m.train, m.eval):
        mode()
        assert m(torch.randn(shape)).shape == shape


def test_gradient_reaches_every_parameter():
    checks.assert_every_parameter_gets_gradient(ema.EMA(64).train(), torch.randn(2, 64, 8, 8))


def test_survives_initialize_weights():
    checks.assert_survives_initialize_weights(lambda: ema.EMA(64), torch.randn(2, 64, 8, 8))


def test_has_no_batchnorm_to_fold():
    checks.assert_folding_keeps_outputs(ema.EMA(64), torch.randn(2, 64, 8, 8), expected_pairs=0)


def test_bfloat16():
    checks.assert_bfloat16_works(lambda: ema.EMA(64), torch.randn(2, 64, 8, 8))


def test_stride_probe():
    assert checks.stride_probe(lambda: ema.EMA(64), 64).shape == (1, 64, 256, 256)


def test_recipe_declares_same_width_module():
    (module,) = RECIPE["modules"]
    assert (module["name"], module["file"], module["role"]) == ("EMA", "ema.py", "same-width")
    assert {y["target"] for y in RECIPE["yamls"]} == {"ultralytics", "yolov5"}
    assert all(y["vars"] == {"module": "EMA", "args": [32]} for y in RECIPE["yamls"])
