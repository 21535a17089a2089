"""Tests of the MobileNetV1 backbone (recipes/mobilenetv1/mobilenetv1.py).

Reference: timm `mobilenetv1_100` / `mobilenetv1_125` with features_only=True.
"""

import copy
import tomllib

import pytest
import torch
import torch.nn as nn

from fusing import check_fuses
from init_stats import assert_batchnorms, assert_convs_follow, goog_std, rejects_pytorch_default
from recipe_loader import RECIPES, count_params, emulate_initialize_weights, load_recipe_module

mnv1 = load_recipe_module("mobilenetv1", "mobilenetv1.py")
RECIPE = tomllib.loads((RECIPES / "mobilenetv1" / "recipe.toml").read_text())
INPLACE_TYPES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.LeakyReLU, nn.SiLU)


def forward_backward(model, x):
    """Forward, then backward of a random projection of every output (a plain sum would give zero
    gradients through a final BatchNorm in train mode)."""
    gen = torch.Generator().manual_seed(0)
    outs = model(x)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    loss.backward()
    return outs


@pytest.mark.parametrize("name, width", [("mobilenetv1_100", 1.0), ("mobilenetv1_125", 1.25)])
def test_matches_timm_features_only(name, width):
    timm = pytest.importorskip("timm")
    ref = timm.create_model(name, pretrained=False, features_only=True)
    model = mnv1.MobileNetV1(3, width)
    assert count_params(model) == count_params(ref)
    assert list(model.feature_channels) == ref.feature_info.channels()
    assert list(model.feature_strides) == ref.feature_info.reduction()


def test_default_param_count():
    # Measured from timm mobilenetv1_100 features_only=True (see test above for the live comparison).
    assert count_params(mnv1.MobileNetV1()) == 3_206_976


def test_recipe_declares_module_channels_and_strides():
    (decl,) = RECIPE["modules"]
    model = mnv1.MobileNetV1()
    assert decl["name"] == "MobileNetV1" and decl["role"] == "backbone"
    assert tuple(decl["channels"]) == model.feature_channels == (64, 128, 256, 512, 1024)
    assert tuple(decl["strides"]) == model.feature_strides == (2, 4, 8, 16, 32)


@pytest.mark.parametrize("hw", [(256, 256), (192, 320)])
def test_output_shapes(hw):
    model = mnv1.MobileNetV1().eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    assert len(outs) == len(model.feature_channels)
    for o, c, s in zip(outs, model.feature_channels, model.feature_strides):
        assert tuple(o.shape) == (1, c, hw[0] // s, hw[1] // s)


def test_input_channels_argument():
    model = mnv1.MobileNetV1(4).eval()
    with torch.no_grad():
        outs = model(torch.zeros(1, 4, 64, 64))
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4, 2]


def test_train_mode_batch1_backward_reaches_every_parameter():
    model = mnv1.MobileNetV1().train()
    forward_backward(model, torch.randn(1, 3, 256, 256))
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    for name, m in model.named_modules():
        own = list(m.parameters(recurse=False))
        if own:
            assert any(p.grad.abs().sum() > 0 for p in own), name


def test_survives_initialize_weights_inplace():
    """In-place activations must give the same outputs and gradients as out-of-place ones."""
    torch.manual_seed(0)
    reference = mnv1.MobileNetV1().train()
    patched = emulate_initialize_weights(copy.deepcopy(reference))
    for m in reference.modules():  # same BatchNorm settings, activations left out-of-place
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    assert any(getattr(m, "inplace", False) for m in patched.modules())
    x = torch.randn(1, 3, 128, 128)
    for a, b in zip(forward_backward(patched, x), forward_backward(reference, x)):
        torch.testing.assert_close(a, b)
    for (name, pa), pb in zip(patched.named_parameters(), reference.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_every_conv_bn_pair_folds():
    model = mnv1.MobileNetV1()
    pairs = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert check_fuses(model, torch.randn(1, 3, 64, 96)) == pairs == 27


def test_initialisation_follows_timm():
    """timm's scheme (conv std sqrt(2 / fan_out), fan_out divided by the groups; BN 1 / 0), which the targets'
    initialize_weights leaves alone (it only sets BatchNorm eps / momentum and in-place activations)."""
    torch.manual_seed(0)
    model = emulate_initialize_weights(mnv1.MobileNetV1())
    convs = assert_convs_follow(model, goog_std)
    assert rejects_pytorch_default(convs, goog_std) > 0.9
    assert_batchnorms(model)
