"""Tests of MobileNeXt and the sandglass block (recipes/mobilenext/mobilenext.py).

No library ships MobileNeXt, so parameter counts are derived here from the layer table and block rules
of the authors' code (zhoudaquan/rethinking_bottleneck_design, mobilenext/codebase/models/mnext.py),
written out independently of the module: every conv is bias-free and followed by BatchNorm.
"""

import copy
import math
import tomllib

import pytest
import torch
import torch.nn as nn

from fusing import check_fuses
from init_stats import assert_batchnorms, assert_convs_follow, kaiming_fan_out_std, rejects_pytorch_default
from recipe_loader import RECIPES, count_params, emulate_initialize_weights, load_recipe_module

mnx = load_recipe_module("mobilenext", "mobilenext.py")
RECIPE = tomllib.loads((RECIPES / "mobilenext" / "recipe.toml").read_text())
INPLACE_TYPES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.LeakyReLU, nn.SiLU)

# The official layer table: (t, c, n, s) after a 3x3 stride-2 stem with 32 channels.
OFFICIAL_TABLE = [
    (2, 96, 1, 2),
    (6, 144, 1, 1),
    (6, 192, 3, 2),
    (6, 288, 3, 2),
    (6, 384, 4, 1),
    (6, 576, 4, 2),
    (6, 960, 3, 1),
    (6, 1280, 1, 1),
]


# ---------------------------------------------------------------------------
# Analytic parameter counts
# ---------------------------------------------------------------------------

def round_to(v, divisor):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_bn(c_in, c_out, k=1, depthwise=False):
    weights = c_out * k * k * (1 if depthwise else c_in)
    return weights + 2 * c_out


def sandglass_params(inp, oup, stride, t, keep_3x3=False):
    """The official block's four cases, in the official order."""
    hidden = inp // t
    if hidden < oup / 6.0:
        hidden = round_to(math.ceil(oup / 6.0), 16)
    bottleneck = conv_bn(inp, hidden) + conv_bn(hidden, oup)  # 1x1 reduce, 1x1 expand
    dw_in, dw_out = conv_bn(inp, inp, 3, True), conv_bn(oup, oup, 3, True)
    if t == 2:
        return dw_in + bottleneck + dw_out
    if inp != oup and stride == 1 and not keep_3x3:
        return bottleneck
    if inp != oup and stride == 2 and not keep_3x3:
        return bottleneck + dw_out
    return dw_in + bottleneck + dw_out


def official_block_list(width=1.0):
    """(inp, oup, stride, t, keep_3x3) of every block of the official network, plus the stem width."""
    divisor = 4 if width == 0.1 else 8
    stem = round_to(32 * width, divisor)
    blocks, c_in = [], stem
    for t, c, n, s in OFFICIAL_TABLE:
        c_out = 1280 if (c == 1280 and width < 1) else round_to(c * width, divisor)
        blocks.append((c_in, c_out, s, t, n == 1 and s == 1))
        blocks += [(c_out, c_out, 1, t, False)] * (n - 1)
        c_in = c_out
    return stem, blocks


def official_features_params(width=1.0):
    stem, blocks = official_block_list(width)
    return conv_bn(3, stem, 3) + sum(sandglass_params(*b) for b in blocks)


def forward_backward(model, x):
    """Forward, then backward of a random projection of every output (a plain sum would give zero
    gradients through a final BatchNorm in train mode)."""
    gen = torch.Generator().manual_seed(0)
    outs = model(x)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    loss.backward()
    return outs


def assert_every_module_gets_gradient(model):
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    for name, m in model.named_modules():
        own = list(m.parameters(recurse=False))
        if own:
            assert any(p.grad.abs().sum() > 0 for p in own), name


# ---------------------------------------------------------------------------
# SGBlock
# ---------------------------------------------------------------------------

def test_sgblock_params_same_width_stride1():
    # 64 -> 64, t=6: hidden 64 // 6 = 10 < 64 / 6, so ceil(10.67) = 11 rounded to 16 channels.
    # dw3x3(64) + 1x1 64->16 + 1x1 16->64 + dw3x3(64), each with BN.
    expected = (9 * 64 + 2 * 64) + (64 * 16 + 2 * 16) + (16 * 64 + 2 * 64) + (9 * 64 + 2 * 64)
    assert expected == sandglass_params(64, 64, 1, 6) == 3_616
    assert count_params(mnx.SGBlock(64, 64, 1, 6)) == expected


def test_sgblock_params_neck_width_change():
    # Neck use, 256 -> 128 at stride 1, t=6: hidden 256 // 6 = 42 (>= 128 / 6); the official block
    # keeps only the two 1x1 convs when it changes width at stride 1.
    expected = (256 * 42 + 2 * 42) + (42 * 128 + 2 * 128)
    assert expected == sandglass_params(256, 128, 1, 6) == 16_468
    assert count_params(mnx.SGBlock(256, 128, 1, 6)) == expected
    # keep_3x3 adds dw3x3(256) and dw3x3(128) back.
    with_dw = expected + (9 * 256 + 2 * 256) + (9 * 128 + 2 * 128)
    assert with_dw == sandglass_params(256, 128, 1, 6, True)
    assert count_params(mnx.SGBlock(256, 128, 1, 6, True)) == with_dw


def test_sgblock_params_downsampling():
    # 96 -> 192 at stride 2: hidden 96 // 6 = 16 < 192 / 6 = 32 -> 32; 1x1, 1x1, dw3x3 stride 2.
    expected = (96 * 32 + 2 * 32) + (32 * 192 + 2 * 192) + (9 * 192 + 2 * 192)
    assert count_params(mnx.SGBlock(96, 192, 2, 6)) == expected == 11_776


@pytest.mark.parametrize("c1, c2, s, args", [(64, 64, 1, ()), (256, 128, 1, ()), (256, 128, 1, (6, True)),
                                             (96, 192, 2, ()), (32, 96, 2, (2,))])
def test_sgblock_shapes(c1, c2, s, args):
    block = mnx.SGBlock(c1, c2, s, *args).eval()
    with torch.no_grad():
        y = block(torch.randn(1, c1, 32, 48))
    assert tuple(y.shape) == (1, c2, 32 // s, 48 // s)


def test_sgblock_shortcut_only_when_shape_kept():
    x = torch.randn(1, 64, 16, 16)
    for block, has_shortcut in [(mnx.SGBlock(64, 64), True), (mnx.SGBlock(64, 96), False)]:
        block.eval()
        last_bn = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)][-1]
        nn.init.zeros_(last_bn.weight)  # the residual branch now outputs exactly zero
        with torch.no_grad():
            y = block(x)
        if has_shortcut:
            torch.testing.assert_close(y, x)
        else:
            assert torch.count_nonzero(y) == 0


def test_sgblock_backward_and_inplace():
    torch.manual_seed(0)
    reference = mnx.SGBlock(64, 32, 1, 6, True).train()
    patched = emulate_initialize_weights(copy.deepcopy(reference))
    for m in reference.modules():  # same BatchNorm settings, activations left out-of-place
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    x = torch.randn(2, 64, 16, 16)
    for a, b in zip(forward_backward(patched, x), forward_backward(reference, x)):
        torch.testing.assert_close(a, b)
    for (name, pa), pb in zip(patched.named_parameters(), reference.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)
    assert_every_module_gets_gradient(patched)


# ---------------------------------------------------------------------------
# MobileNeXt backbone
# ---------------------------------------------------------------------------

def test_backbone_params_match_official_table():
    model = mnx.MobileNeXt()
    assert count_params(model) == official_features_params(1.0)
    # The official network is the stem and 20 sandglass blocks; every block matches its row.
    _, blocks = official_block_list(1.0)
    ours = [m for m in model.modules() if isinstance(m, mnx.SGBlock)]
    assert [count_params(m) for m in ours] == [sandglass_params(*b) for b in blocks]


@pytest.mark.parametrize("width, published_tenths_of_millions", [(1.0, 35), (1.4, 61), (0.5, 21)])
def test_backbone_plus_classifier_matches_published_size(width, published_tenths_of_millions):
    # The authors' README lists the whole classifier's size (features + a 1280 -> 1000 linear layer),
    # truncated to 0.1 M: 3.5 M at width 1.0, 6.1 M at 1.4, 2.1 M at 0.5.
    model = mnx.MobileNeXt(3, width)
    assert count_params(model) == official_features_params(width)
    total = count_params(model) + model.feature_channels[-1] * 1000 + 1000
    assert total // 100_000 == published_tenths_of_millions


def test_recipe_declarations():
    decls = {d["name"]: d for d in RECIPE["modules"]}
    model = mnx.MobileNeXt()
    assert decls["MobileNeXt"]["role"] == "backbone"
    assert tuple(decls["MobileNeXt"]["channels"]) == model.feature_channels == (144, 192, 384, 1280)
    assert tuple(decls["MobileNeXt"]["strides"]) == model.feature_strides == (4, 8, 16, 32)
    assert decls["SGBlock"]["role"] == "block" and decls["SGBlock"]["repeats"] is False


@pytest.mark.parametrize("hw", [(256, 256), (192, 320)])
def test_output_shapes(hw):
    model = mnx.MobileNeXt().eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    assert len(outs) == len(model.feature_channels)
    for o, c, s in zip(outs, model.feature_channels, model.feature_strides):
        assert tuple(o.shape) == (1, c, hw[0] // s, hw[1] // s)


def test_input_channels_argument():
    model = mnx.MobileNeXt(1).eval()
    with torch.no_grad():
        outs = model(torch.zeros(1, 1, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]


def test_train_mode_batch1_backward_reaches_every_parameter():
    model = mnx.MobileNeXt().train()
    forward_backward(model, torch.randn(1, 3, 256, 256))
    assert_every_module_gets_gradient(model)


def test_survives_initialize_weights_inplace():
    """In-place activations must give the same outputs and gradients as out-of-place ones."""
    torch.manual_seed(0)
    reference = mnx.MobileNeXt().train()
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
    model = mnx.MobileNeXt()
    pairs = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert check_fuses(model, torch.randn(1, 3, 64, 96)) == pairs > 70
    block = mnx.SGBlock(64, 32, 1, 6, True)
    assert check_fuses(block, torch.randn(2, 64, 16, 16)) == 4


def test_initialisation_follows_the_authors():
    """MXNet._initialize_weights: conv std sqrt(2 / (k * k * out_channels)), BN 1 / 0; also for a lone SGBlock."""
    torch.manual_seed(0)
    for model in (mnx.MobileNeXt(), mnx.SGBlock(64, 64), mnx.SGBlock(256, 128, 1, 6, True)):
        model = emulate_initialize_weights(model)
        convs = assert_convs_follow(model, kaiming_fan_out_std)
        assert rejects_pytorch_default(convs, kaiming_fan_out_std) > 0.7
        assert_batchnorms(model)
