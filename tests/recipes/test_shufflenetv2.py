"""Tests of the ShuffleNet V2 backbone (recipes/shufflenetv2/shufflenetv2.py)."""

import functools
import tomllib

import pytest
import torch
import torch.nn as nn

from fusing import check_fuses
from init_stats import assert_batchnorms, assert_convs_follow, rejects_pytorch_default
from recipe_loader import RECIPES, count_params, load_recipe_module

sn2 = load_recipe_module("shufflenetv2", "shufflenetv2.py")
RECIPE = tomllib.loads((RECIPES / "shufflenetv2" / "recipe.toml").read_text())

TORCHVISION = {0.5: "shufflenet_v2_x0_5", 1.0: "shufflenet_v2_x1_0", 1.5: "shufflenet_v2_x1_5", 2.0: "shufflenet_v2_x2_0"}


def _torchvision_model(width):
    pytest.importorskip("torchvision")
    return _build_torchvision_model(width)


@functools.lru_cache(maxsize=None)
def _build_torchvision_model(width):
    import torchvision.models as models

    return getattr(models, TORCHVISION[width])(weights=None)


def _torchvision_backbone_params(tv):
    """Everything but the classifier head: conv5 (1x1 to 1024/2048) and fc are not part of the backbone."""
    return count_params(tv) - count_params(tv.conv5) - count_params(tv.fc)


@pytest.mark.parametrize("width", [0.5, 1.0, 1.5, 2.0])
def test_param_count_equals_torchvision(width):
    tv = _torchvision_model(width)
    assert count_params(sn2.ShuffleNetV2(3, width)) == _torchvision_backbone_params(tv)


def test_param_count_concrete_x1_0():
    # Written out from Table 5 for 1.0x (every conv bias-free + BN):
    def down(c1, c2):
        h = c2 // 2
        left = 9 * c1 + 2 * c1 + c1 * h + 2 * h
        right = c1 * h + 2 * h + 9 * h + 2 * h + h * h + 2 * h
        return left + right

    def basic(c):
        h = c // 2
        return h * h + 2 * h + 9 * h + 2 * h + h * h + 2 * h

    expected = 3 * 24 * 9 + 48
    c_in = 24
    for n, c in zip((4, 8, 4), (116, 232, 464)):
        expected += down(c_in, c) + (n - 1) * basic(c)
        c_in = c
    assert count_params(sn2.ShuffleNetV2()) == expected == 776_420


@pytest.mark.parametrize("width", [0.5, 1.0])
def test_features_equal_torchvision_with_the_same_weights(width):
    """Same layers in the same order: torchvision's weights load 1:1 and give the same stage outputs."""
    torch.manual_seed(0)
    tv = _torchvision_model(width).eval()
    mine = sn2.ShuffleNetV2(3, width).eval()
    src = {k: v for k, v in tv.state_dict().items() if not k.startswith(("conv5.", "fc."))}
    dst = mine.state_dict()
    assert len(src) == len(dst)
    for (_, a), (k, b) in zip(src.items(), dst.items()):
        assert a.shape == b.shape, k
    mine.load_state_dict(dict(zip(dst.keys(), src.values())))
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = [tv.maxpool(tv.conv1(x))]
        for stage in (tv.stage2, tv.stage3, tv.stage4):
            expected.append(stage(expected[-1]))
        got = mine(x)
    assert len(got) == 4
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-5)


def test_unit_structure():
    m = sn2.ShuffleNetV2()
    units = [u for stage in m.stages for u in stage]
    assert [u.stride for u in units] == [2, 1, 1, 1, 2] + [1] * 7 + [2, 1, 1, 1]
    # no group convolutions other than the depthwise ones
    for conv in (mod for mod in m.modules() if isinstance(mod, nn.Conv2d)):
        assert conv.groups in (1, conv.in_channels)
    assert not any(mod.out_channels in (1024, 2048) for mod in m.modules() if isinstance(mod, nn.Conv2d))


def test_stride1_unit_keeps_the_first_half_and_shuffles():
    torch.manual_seed(0)
    u = sn2.ShuffleUnitV2(8, 8, 1).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        y = u(x)
        transformed = u.right(x[:, 4:])
    assert torch.equal(y[:, 0::2], x[:, :4])
    assert torch.allclose(y[:, 1::2], transformed)


def test_declared_channels_match_recipe():
    (decl,) = RECIPE["modules"]
    m = sn2.ShuffleNetV2()
    assert tuple(decl["channels"]) == m.feature_channels == (24, 116, 232, 464)
    assert tuple(decl["strides"]) == m.feature_strides == (4, 8, 16, 32)


def test_bad_width_is_refused():
    with pytest.raises(ValueError, match="width"):
        sn2.ShuffleNetV2(3, 0.75)


# ---------------------------------------------------------------------------
# Forward shapes, training, in-place activations
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("width,hw", [(1.0, (256, 256)), (1.0, (192, 320)), (0.5, (192, 320))])
def test_output_shapes_match_declaration(width, hw):
    m = sn2.ShuffleNetV2(3, width).eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, *hw))
    assert len(outs) == len(m.feature_channels)
    for y, c, s in zip(outs, m.feature_channels, m.feature_strides):
        assert y.shape == (1, c, hw[0] // s, hw[1] // s)


def test_train_mode_batch1_forward_256():
    m = sn2.ShuffleNetV2().train()
    outs = m(torch.randn(1, 3, 256, 256))
    assert all(torch.isfinite(o).all() for o in outs)


def _assert_every_parameter_gets_gradient(m, x):
    sum(o.square().mean() for o in m(x)).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    _assert_every_parameter_gets_gradient(sn2.ShuffleNetV2().train(), torch.randn(2, 3, 64, 64))


def _mimic_initialize_weights(model):
    """What the targets' initialize_weights does to a freshly built model."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eps, mod.momentum = 1e-3, 0.03
        elif type(mod) in (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU):
            mod.inplace = True


def test_survives_inplace_activations():
    torch.manual_seed(0)
    m = sn2.ShuffleNetV2().train()
    _mimic_initialize_weights(m)
    assert any(getattr(mod, "inplace", False) for mod in m.modules())
    x = torch.randn(2, 3, 64, 64)
    _assert_every_parameter_gets_gradient(m, x)
    ref = sn2.ShuffleNetV2()
    ref.load_state_dict(m.state_dict())
    _mimic_initialize_weights(ref)
    for mod in ref.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    m.eval(), ref.eval()
    with torch.no_grad():
        for a, b in zip(m(x), ref(x)):
            assert torch.allclose(a, b, atol=1e-6)


def test_every_conv_bn_pair_folds():
    model = sn2.ShuffleNetV2()
    pairs = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert check_fuses(model, torch.randn(1, 3, 64, 96)) == pairs == 1 + 3 * 16 + 3 * 2


def authors_std(stem):
    """ShuffleNet-Series network.py: the first conv N(0, 0.01), the others N(0, 1 / input channels per group)."""
    return lambda conv: 0.01 if conv is stem else 1.0 / (conv.in_channels // conv.groups)


def test_initialisation_follows_the_authors():
    torch.manual_seed(0)
    model = sn2.ShuffleNetV2()
    expected = authors_std(model.stem[0])
    convs = assert_convs_follow(model, expected)
    assert rejects_pytorch_default(convs, expected) > 0.9
    assert_batchnorms(model, bias=1e-4)
