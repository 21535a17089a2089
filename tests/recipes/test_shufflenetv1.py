"""Tests of the ShuffleNet v1 backbone (recipes/shufflenetv1/shufflenetv1.py)."""

import tomllib

import pytest
import torch
import torch.nn as nn

from fusing import check_fuses
from init_stats import assert_batchnorms, assert_convs_follow, rejects_pytorch_default
from recipe_loader import RECIPES, count_params, load_recipe_module

sn1 = load_recipe_module("shufflenetv1", "shufflenetv1.py")
RECIPE = tomllib.loads((RECIPES / "shufflenetv1" / "recipe.toml").read_text())


# ---------------------------------------------------------------------------
# Analytic parameter count from the paper's Table 1 (written out independently of the module).
# Every conv has no bias and is followed by BN (2 parameters per channel).
# ---------------------------------------------------------------------------

# groups -> (stem channels, stage 2/3/4 output channels) of "ShuffleNet 1x" (Table 1)
TABLE1 = {3: (24, (240, 480, 960)), 8: (24, (384, 768, 1536))}
REPEATS = (4, 8, 4)


def unit_params(c_in, c_out, g, stride, grouped_first):
    mid = c_out // 4
    branch = c_out - c_in if stride == 2 else c_out
    first = c_in * mid // (g if grouped_first else 1) + 2 * mid  # 1x1 (group) conv + BN
    dw = 9 * mid + 2 * mid  # 3x3 depthwise + BN
    last = mid * branch // g + 2 * branch  # 1x1 group conv + BN
    return first + dw + last


def backbone_params(c1, g, stem, stages):
    total = c1 * stem * 9 + 2 * stem
    c_in = stem
    for s, (n, c_out) in enumerate(zip(REPEATS, stages)):
        total += unit_params(c_in, c_out, g, 2, grouped_first=s > 0)
        total += (n - 1) * unit_params(c_out, c_out, g, 1, grouped_first=True)
        c_in = c_out
    return total


@pytest.mark.parametrize("groups", [3, 8])
def test_param_count_matches_table1(groups):
    stem, stages = TABLE1[groups]
    m = sn1.ShuffleNetV1(3, groups, 1.0)
    assert count_params(m) == backbone_params(3, groups, stem, stages)


def test_param_count_concrete_g3():
    # g=3, 1x: stem 3*24*9 + 48 = 696
    # stage 2 unit 1 (24 -> 240, dense first conv): 24*60+120 + 9*60+120 + 60*216/3+432 = 1_560+660+4_752
    assert unit_params(24, 240, 3, 2, False) == 1_560 + 660 + 4_752
    # a stride-1 unit at 240: 240*60/3+120 + 660 + 60*240/3+480
    assert unit_params(240, 240, 3, 1, True) == 4_920 + 660 + 5_280
    assert count_params(sn1.ShuffleNetV1()) == backbone_params(3, 3, 24, (240, 480, 960))


# Published totals (backbone + bias-free 1000-way fc) of the authors' released models, in millions,
# rounded to one decimal (ShuffleNet-Series README).
PUBLISHED_M = {
    (3, 0.5): 0.7, (3, 1.0): 1.9, (3, 1.5): 3.4, (3, 2.0): 5.4,
    (8, 0.5): 1.0, (8, 1.0): 2.4, (8, 1.5): 4.3, (8, 2.0): 6.5,
}


@pytest.mark.parametrize("groups,width", list(PUBLISHED_M))
def test_param_count_matches_published_models(groups, width):
    m = sn1.ShuffleNetV1(3, groups, width)
    with_fc = count_params(m) + m.feature_channels[-1] * 1000
    assert round(with_fc / 1e6, 1) == PUBLISHED_M[(groups, width)]
    stem, stages = m.feature_channels[0], m.feature_channels[1:]
    assert count_params(m) == backbone_params(3, groups, stem, stages)


# ---------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------

def test_only_the_first_pointwise_conv_is_dense():
    m = sn1.ShuffleNetV1(3, 8)
    units = [u for stage in m.stages for u in stage]
    assert len(units) == sum(REPEATS)
    assert units[0].reduce[0].groups == 1
    assert all(u.reduce[0].groups == 8 for u in units[1:])
    assert all(u.expand[0].groups == 8 for u in units)
    assert all(u.depthwise[0].groups == u.depthwise[0].in_channels for u in units)
    assert [u.stride for u in units] == [2, 1, 1, 1, 2] + [1] * 7 + [2, 1, 1, 1]


def test_channel_shuffle_transposes_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    # groups of 2: [0 1][2 3][4 5] -> [0 2 4 1 3 5]
    assert sn1.channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]


def test_stride2_unit_concatenates_pooled_input():
    torch.manual_seed(0)
    u = sn1.ShuffleUnitV1(24, 240, 3, s=2, group_first=False).eval()
    x = torch.relu(torch.randn(1, 24, 8, 10))
    with torch.no_grad():
        y = u(x)
    assert y.shape == (1, 240, 4, 5)
    assert torch.allclose(y[:, :24], nn.functional.avg_pool2d(x, 3, 2, 1))


def test_declared_channels_match_recipe():
    (decl,) = RECIPE["modules"]
    m = sn1.ShuffleNetV1()
    assert tuple(decl["channels"]) == m.feature_channels == (24, 240, 480, 960)
    assert tuple(decl["strides"]) == m.feature_strides == (4, 8, 16, 32)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="groups"):
        sn1.ShuffleNetV1(3, 4)
    with pytest.raises(ValueError, match="width"):
        sn1.ShuffleNetV1(3, 3, 0.75)


# ---------------------------------------------------------------------------
# Forward shapes, training, in-place activations
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("groups,hw", [(3, (256, 256)), (3, (192, 320)), (8, (192, 320))])
def test_output_shapes_match_declaration(groups, hw):
    m = sn1.ShuffleNetV1(3, groups).eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, *hw))
    assert len(outs) == len(m.feature_channels)
    for y, c, s in zip(outs, m.feature_channels, m.feature_strides):
        assert y.shape == (1, c, hw[0] // s, hw[1] // s)


def test_other_input_channels():
    m = sn1.ShuffleNetV1(c1=1, width=0.5).eval()
    with torch.no_grad():
        outs = m(torch.randn(2, 1, 64, 96))
    assert [o.shape[1] for o in outs] == [12, 120, 240, 480]


def test_train_mode_batch1_forward_256():
    m = sn1.ShuffleNetV1().train()
    outs = m(torch.randn(1, 3, 256, 256))
    assert all(torch.isfinite(o).all() for o in outs)


def _assert_every_parameter_gets_gradient(m, x):
    sum(o.square().mean() for o in m(x)).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    _assert_every_parameter_gets_gradient(sn1.ShuffleNetV1().train(), torch.randn(2, 3, 64, 64))


def _mimic_initialize_weights(model):
    """What the targets' initialize_weights does to a freshly built model."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eps, mod.momentum = 1e-3, 0.03
        elif type(mod) in (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU):
            mod.inplace = True


def test_survives_inplace_activations():
    torch.manual_seed(0)
    m = sn1.ShuffleNetV1().train()
    _mimic_initialize_weights(m)
    assert any(getattr(mod, "inplace", False) for mod in m.modules())
    x = torch.randn(2, 3, 64, 64)
    _assert_every_parameter_gets_gradient(m, x)
    # the in-place model computes the same function as an out-of-place copy with the same state
    ref = sn1.ShuffleNetV1()
    ref.load_state_dict(m.state_dict())
    _mimic_initialize_weights(ref)
    for mod in ref.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    m.eval(), ref.eval()
    with torch.no_grad():
        for a, b in zip(m(x), ref(x)):
            assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("groups", [3, 8])
def test_every_conv_bn_pair_folds(groups):
    model = sn1.ShuffleNetV1(3, groups)
    pairs = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert check_fuses(model, torch.randn(1, 3, 64, 96)) == pairs == 1 + 3 * 16


def authors_std(stem):
    """ShuffleNet-Series network.py: the first conv N(0, 0.01), the others N(0, 1 / input channels per group)."""
    return lambda conv: 0.01 if conv is stem else 1.0 / (conv.in_channels // conv.groups)


@pytest.mark.parametrize("groups", [3, 8])
def test_initialisation_follows_the_authors(groups):
    torch.manual_seed(0)
    model = sn1.ShuffleNetV1(3, groups)
    expected = authors_std(model.stem[0])
    convs = assert_convs_follow(model, expected)
    assert rejects_pytorch_default(convs, expected) > 0.9
    assert_batchnorms(model, bias=1e-4)
