"""Tests of the GoogLeNet Inception block (recipes/inception/inception.py)."""

import tomllib

import pytest
import torch
import torch.nn as nn

from fusing import check_fuses
from recipe_loader import RECIPES, count_params, load_recipe_module

inc = load_recipe_module("inception", "inception.py")
RECIPE = tomllib.loads((RECIPES / "inception" / "recipe.toml").read_text())


# ---------------------------------------------------------------------------
# Channel split
# ---------------------------------------------------------------------------

def test_widths_of_inception_3a():
    # Table 1 of the paper, inception (3a): #1x1 64, #3x3 reduce 96, #3x3 128, #5x5 reduce 16,
    # #5x5 32, pool proj 32
    assert inc.inception_widths(256) == (64, 96, 128, 16, 32, 32)


@pytest.mark.parametrize("c2", [16, 32, 64, 128, 256, 512, 1024])
def test_widths_exact_for_multiples_of_16(c2):
    b1, r2, b2, r3, b3, b4 = inc.inception_widths(c2)
    assert (b1, r2, b2, r3, b3, b4) == (c2 // 4, 3 * c2 // 8, c2 // 2, c2 // 16, c2 // 8, c2 // 8)


@pytest.mark.parametrize("c2", [8, 24, 40, 56, 72, 88, 120, 136, 200, 328, 744])
def test_widths_sum_to_c2_for_multiples_of_8(c2):
    b1, r2, b2, r3, b3, b4 = inc.inception_widths(c2)
    assert b1 + b2 + b3 + b4 == c2
    # c2 / 4, c2 / 2, c2 / 8 are whole numbers; only the c2 / 16 reduction is rounded (half up)
    assert (b1, b2, b3, b4) == (c2 // 4, c2 // 2, c2 // 8, c2 // 8)
    assert r2 == 3 * c2 // 8
    assert r3 == (c2 + 8) // 16


@pytest.mark.parametrize("c2", [4, 5, 6, 7, 10, 13, 30, 99])
def test_widths_sum_to_c2_for_any_width(c2):
    widths = inc.inception_widths(c2)
    assert widths[0] + widths[2] + widths[4] + widths[5] == c2
    assert min(widths) >= 1


def test_too_narrow_is_refused():
    with pytest.raises(ValueError, match="c2"):
        inc.Inception(16, 3)


# ---------------------------------------------------------------------------
# Parameter counts: analytic and against torchvision's GoogLeNet inception3a
# ---------------------------------------------------------------------------

def conv_bn(c1, c2, k=1):
    return c1 * c2 * k * k + 2 * c2


def inception_params(c1, widths, k=5):
    b1, r2, b2, r3, b3, b4 = widths
    return (
        conv_bn(c1, b1)
        + conv_bn(c1, r2) + conv_bn(r2, b2, 3)
        + conv_bn(c1, r3) + conv_bn(r3, b3, k)
        + conv_bn(c1, b4)
    )


@pytest.mark.parametrize("c1,c2", [(192, 256), (256, 480), (64, 40), (512, 128)])
@pytest.mark.parametrize("k", [5, 3])
def test_param_count_analytic(c1, c2, k):
    assert count_params(inc.Inception(c1, c2, k)) == inception_params(c1, inc.inception_widths(c2), k)


def test_param_count_concrete_3a():
    # (3a) with the paper's 5x5: 192*64+128 + 192*96+192 + 96*128*9+256 + 192*16+32 + 16*32*25+64 + 192*32+64
    expected = 12_416 + 18_624 + 110_848 + 3_104 + 12_864 + 6_208
    assert count_params(inc.Inception(192, 256)) == expected


@pytest.fixture(scope="module")
def tv_inception3a():
    models = pytest.importorskip("torchvision.models")
    return models.googlenet(weights=None, aux_logits=False, init_weights=True).inception3a


def test_param_count_vs_torchvision_inception3a(tv_inception3a):
    tv = tv_inception3a
    # torchvision puts a 3x3 conv in the "5x5" branch: k=3 is exactly its layer set
    assert count_params(inc.Inception(192, 256, k=3)) == count_params(tv)
    # the paper's 5x5 kernel adds (25 - 9) weights per (16 -> 32) connection
    assert count_params(inc.Inception(192, 256)) == count_params(tv) + (25 - 9) * 16 * 32


def test_same_function_as_torchvision_inception3a(tv_inception3a):
    torch.manual_seed(0)
    tv = tv_inception3a.eval()
    mine = inc.Inception(192, 256, k=3).eval()
    src, dst = tv.state_dict(), mine.state_dict()
    assert [v.shape for v in src.values()] == [v.shape for v in dst.values()]
    mine.load_state_dict(dict(zip(dst.keys(), src.values())))
    for bn in (m for m in mine.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.eps = 1e-3  # torchvision's BasicConv2d BatchNorm eps (the targets set the same)
    x = torch.randn(1, 192, 14, 10)
    with torch.no_grad():
        assert torch.allclose(mine(x), tv(x), atol=1e-5)


# ---------------------------------------------------------------------------
# Structure and recipe
# ---------------------------------------------------------------------------

def test_branch_kernels():
    m = inc.Inception(64, 128)
    assert m.branch2[1][0].kernel_size == (3, 3)
    assert m.branch3[1][0].kernel_size == (5, 5)
    assert inc.Inception(64, 128, 3).branch3[1][0].kernel_size == (3, 3)
    assert isinstance(m.branch4[0], nn.MaxPool2d) and m.branch4[0].stride == 1


def test_recipe_yaml_args():
    (decl,) = RECIPE["modules"]
    assert decl["name"] == "Inception" and decl["role"] == "block" and not decl["repeats"]
    for y in RECIPE["yamls"]:
        assert y["vars"] == {"block": "Inception", "args": []}


# ---------------------------------------------------------------------------
# Shapes, train-mode forward, backward, in-place activations
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("c1,c2", [(24, 32), (64, 40), (16, 16), (48, 8)])
@pytest.mark.parametrize("hw", [(32, 32), (24, 40)])
@pytest.mark.parametrize("k", [5, 3])
def test_output_shape(c1, c2, hw, k):
    m = inc.Inception(c1, c2, k).eval()
    with torch.no_grad():
        y = m(torch.randn(2, c1, *hw))
    assert y.shape == (2, c2, *hw)


def test_train_mode_batch1_forward_256():
    m = inc.Inception(8, 16).train()
    y = m(torch.randn(1, 8, 256, 256))
    assert y.shape == (1, 16, 256, 256)
    assert torch.isfinite(y).all()


def _assert_every_parameter_gets_gradient(m, x):
    m(x).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    _assert_every_parameter_gets_gradient(inc.Inception(16, 32).train(), torch.randn(2, 16, 16, 16))


def _mimic_initialize_weights(model):
    """What the targets' initialize_weights does to a freshly built model."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eps, mod.momentum = 1e-3, 0.03
        elif type(mod) in (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU):
            mod.inplace = True


def test_survives_inplace_activations():
    torch.manual_seed(0)
    m = inc.Inception(16, 32).train()
    _mimic_initialize_weights(m)
    assert any(getattr(mod, "inplace", False) for mod in m.modules())
    x = torch.randn(2, 16, 16, 24, requires_grad=True) * 1.0
    before = x.detach().clone()
    out = m(x)
    assert torch.equal(x.detach(), before)
    out.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    ref = inc.Inception(16, 32)
    ref.load_state_dict(m.state_dict())
    _mimic_initialize_weights(ref)
    for mod in ref.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    m.eval(), ref.eval()
    with torch.no_grad():
        assert torch.allclose(m(before), ref(before), atol=1e-6)


@pytest.mark.parametrize("k", [5, 3])
def test_every_conv_bn_pair_folds(k):
    torch.manual_seed(0)
    assert check_fuses(inc.Inception(48, 64, k), torch.randn(2, 48, 16, 24)) == 6
