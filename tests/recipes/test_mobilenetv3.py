"""Tests of the MobileNetV3 backbones (recipes/mobilenetv3/mobilenetv3.py).

References: torchvision `mobilenet_v3_small/large().features` (stem, blocks and the final 1x1 conv,
no classifier) and timm `mobilenetv3_small_100` / `mobilenetv3_large_100` with features_only=True;
both hold exactly the layers of these backbones.
"""

import copy
import tomllib

import pytest
import torch
import torch.nn as nn

from fusing import check_fuses
from init_stats import assert_batchnorms, assert_convs_follow, kaiming_fan_out_std, rejects_pytorch_default
from recipe_loader import RECIPES, count_params, emulate_initialize_weights, load_recipe_module

mnv3 = load_recipe_module("mobilenetv3", "mobilenetv3.py")
RECIPE = tomllib.loads((RECIPES / "mobilenetv3" / "recipe.toml").read_text())
INPLACE_TYPES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.LeakyReLU, nn.SiLU)

# class name -> (torchvision builder, timm name, expected channels)
VARIANTS = {
    "MobileNetV3Small": ("mobilenet_v3_small", "mobilenetv3_small_100", (16, 16, 24, 48, 576)),
    "MobileNetV3Large": ("mobilenet_v3_large", "mobilenetv3_large_100", (16, 24, 40, 112, 960)),
}
# Measured with the references above (the tests below compare live).
EXPECTED_PARAMS = {"MobileNetV3Small": 927_008, "MobileNetV3Large": 2_971_952}


def forward_backward(model, x):
    """Forward, then backward of a random projection of every output (a plain sum would give zero
    gradients through a final BatchNorm in train mode)."""
    gen = torch.Generator().manual_seed(0)
    outs = model(x)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    loss.backward()
    return outs


def last_channels_per_stride(layers, size=64):
    """Run a reference nn.Sequential layer by layer; channels of the last layer at each stride."""
    x, found = torch.zeros(1, 3, size, size), {}
    with torch.no_grad():
        for layer in layers.eval():
            x = layer(x)
            found[size // x.shape[-1]] = x.shape[1]
    return found


@pytest.mark.parametrize("cls", VARIANTS)
def test_matches_torchvision_features(cls):
    tv = pytest.importorskip("torchvision")
    ref = getattr(tv.models, VARIANTS[cls][0])(weights=None).features
    model = getattr(mnv3, cls)()
    assert count_params(model) == count_params(ref)
    ref_levels = last_channels_per_stride(ref)
    assert model.feature_channels == tuple(ref_levels[s] for s in model.feature_strides)
    # Same modules of each kind (SE convs, depthwise convs, activations), not just the same total.
    for kind in (nn.Conv2d, nn.BatchNorm2d, nn.Hardswish, nn.Hardsigmoid):
        assert sum(isinstance(m, kind) for m in model.modules()) == sum(isinstance(m, kind) for m in ref.modules())


@pytest.mark.parametrize("cls", VARIANTS)
def test_matches_timm_features_only(cls):
    timm = pytest.importorskip("timm")
    ref = timm.create_model(VARIANTS[cls][1], pretrained=False, features_only=True)
    model = getattr(mnv3, cls)()
    assert count_params(model) == count_params(ref)
    assert list(model.feature_channels) == ref.feature_info.channels()
    assert list(model.feature_strides) == ref.feature_info.reduction()


@pytest.mark.parametrize("cls", VARIANTS)
def test_default_param_count(cls):
    assert count_params(getattr(mnv3, cls)()) == EXPECTED_PARAMS[cls]


def test_recipe_declares_module_channels_and_strides():
    decls = {d["name"]: d for d in RECIPE["modules"]}
    assert set(decls) == set(VARIANTS)
    for cls, (_, _, channels) in VARIANTS.items():
        model = getattr(mnv3, cls)()
        assert decls[cls]["role"] == "backbone"
        assert tuple(decls[cls]["channels"]) == model.feature_channels == channels
        assert tuple(decls[cls]["strides"]) == model.feature_strides == (2, 4, 8, 16, 32)
    assert all(y["vars"]["backbone"] == "MobileNetV3Small" for y in RECIPE["yamls"])


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("hw", [(256, 256), (192, 320)])
def test_output_shapes(cls, hw):
    model = getattr(mnv3, cls)().eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    assert len(outs) == len(model.feature_channels)
    for o, c, s in zip(outs, model.feature_channels, model.feature_strides):
        assert tuple(o.shape) == (1, c, hw[0] // s, hw[1] // s)


def test_input_channels_argument():
    model = mnv3.MobileNetV3Small(1).eval()
    with torch.no_grad():
        outs = model(torch.zeros(1, 1, 64, 64))
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4, 2]


@pytest.mark.parametrize("cls", VARIANTS)
def test_train_mode_batch1_backward_reaches_every_parameter(cls):
    model = getattr(mnv3, cls)().train()
    forward_backward(model, torch.randn(1, 3, 256, 256))
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    for name, m in model.named_modules():
        own = list(m.parameters(recurse=False))
        if own:
            assert any(p.grad.abs().sum() > 0 for p in own), name


@pytest.mark.parametrize("cls", VARIANTS)
def test_survives_initialize_weights_inplace(cls):
    """In-place activations must give the same outputs and gradients as out-of-place ones."""
    torch.manual_seed(0)
    reference = getattr(mnv3, cls)().train()
    patched = emulate_initialize_weights(copy.deepcopy(reference))
    for m in reference.modules():  # same BatchNorm settings, activations left out-of-place
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    assert any(isinstance(m, nn.Hardswish) and m.inplace for m in patched.modules())
    x = torch.randn(1, 3, 128, 128)
    for a, b in zip(forward_backward(patched, x), forward_backward(reference, x)):
        torch.testing.assert_close(a, b)
    for (name, pa), pb in zip(patched.named_parameters(), reference.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


@pytest.mark.parametrize("cls", VARIANTS)
def test_every_conv_bn_pair_folds(cls):
    model = getattr(mnv3, cls)()
    pairs = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert check_fuses(model, torch.randn(1, 3, 64, 96)) == pairs > 30


@pytest.mark.parametrize("cls", VARIANTS)
def test_initialisation_follows_torchvision(cls):
    """torchvision's scheme (Kaiming normal, fan_out; conv biases of the SE layers 0; BN 1 / 0), which the
    targets' initialize_weights leaves alone."""
    torch.manual_seed(0)
    model = emulate_initialize_weights(getattr(mnv3, cls)())
    convs = assert_convs_follow(model, kaiming_fan_out_std)
    assert any(c.bias is not None for c in convs)
    assert rejects_pytorch_default(convs, kaiming_fan_out_std) > 0.9
    assert_batchnorms(model)
