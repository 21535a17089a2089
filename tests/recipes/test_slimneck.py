"""Tests of the Slim-neck blocks (recipes/slimneck/slimneck.py)."""

import math

import pytest
import torch
import torch.nn as nn

from fusing import check_fuses
from recipe_loader import RECIPES, count_params, load_recipe_module

sn = load_recipe_module("slimneck", "slimneck.py")


# ---------------------------------------------------------------------------
# Analytic parameter counts, written from the paper's / reference's structure.
# A Conv is Conv2d(bias=False) + BatchNorm2d (weight and bias: 2 per channel).
# ---------------------------------------------------------------------------

def conv_params(c1, c2, k=1, g=1):
    return (c1 // g) * c2 * k * k + 2 * c2


def gsconv_params(c1, c2, k=1):
    h = c2 // 2
    # dense k x k conv to c2/2 + BN, then depthwise 5x5 on c2/2 + BN
    return c1 * h * k * k + 2 * h + h * 25 + 2 * h


def gsconvns_params(c1, c2, k=1):
    return gsconv_params(c1, c2, k) + c2 * c2  # plus the 1x1 "shuffle" conv, no bias


def gsbottleneck_params(c1, c2, k=3, e=0.5):
    c_ = int(c2 * e)
    return gsconv_params(c1, c_, 1) + gsconv_params(c_, c2, k) + conv_params(c1, c2, 1)


def gsbottleneckc_params(c1, c2, k=3, e=0.5):
    c_ = int(c2 * e)
    shortcut = conv_params(c1, c2, k, g=math.gcd(c1, c2))
    return gsconv_params(c1, c_, 1) + gsconv_params(c_, c2, k) + shortcut


def vovgscsp_params(c1, c2, n=1, e=0.5):
    c_ = int(c2 * e)
    stem = 2 * conv_params(c1, c_, 1)
    return stem + n * gsbottleneck_params(c_, c_, 3, e=1.0) + conv_params(2 * c_, c2, 1)


def vovgscspc_params(c1, c2, n=1, e=0.5):
    c_ = int(c2 * e)
    stem = 2 * conv_params(c1, c_, 1)
    return stem + n * gsbottleneckc_params(c_, c_, 3, e=0.5) + conv_params(2 * c_, c2, 1)


@pytest.mark.parametrize("c1,c2,k", [(3, 16, 1), (16, 32, 3), (64, 128, 1), (24, 48, 5), (128, 64, 3)])
def test_gsconv_param_count(c1, c2, k):
    m = sn.GSConv(c1, c2, k)
    assert count_params(m) == gsconv_params(c1, c2, k)
    # written out once more for the formula in the paper's notation
    assert count_params(m) == c1 * (c2 // 2) * k * k + 2 * (c2 // 2) + (c2 // 2) * 25 + 2 * (c2 // 2)


@pytest.mark.parametrize("c1,c2,k", [(16, 32, 1), (64, 128, 3)])
def test_gsconvns_param_count(c1, c2, k):
    assert count_params(sn.GSConvns(c1, c2, k)) == gsconvns_params(c1, c2, k)


@pytest.mark.parametrize("c1,c2", [(32, 32), (64, 128)])
def test_gsbottleneck_param_count(c1, c2):
    assert count_params(sn.GSBottleneck(c1, c2)) == gsbottleneck_params(c1, c2)


@pytest.mark.parametrize("c1,c2", [(32, 32), (48, 64)])
def test_gsbottleneckc_param_count(c1, c2):
    m = sn.GSBottleneckC(c1, c2)
    assert count_params(m) == gsbottleneckc_params(c1, c2)
    assert m.shortcut.conv.groups == math.gcd(c1, c2)


@pytest.mark.parametrize("c1,c2,n", [(64, 64, 1), (96, 128, 3)])
def test_vovgscsp_param_count(c1, c2, n):
    m = sn.VoVGSCSP(c1, c2, n)
    assert count_params(m) == vovgscsp_params(c1, c2, n)
    assert len(m.gsb) == n


@pytest.mark.parametrize("c1,c2,n", [(64, 64, 1), (96, 128, 2)])
def test_vovgscspc_param_count(c1, c2, n):
    m = sn.VoVGSCSPC(c1, c2, n)
    assert count_params(m) == vovgscspc_params(c1, c2, n)
    assert len(m.gsb) == n


def test_vovgscsp_concrete_count():
    # VoVGSCSP(128, 256, 1): c_ = 128
    #   cv1, cv2: 2 * (128*128 + 256)                         = 33_280
    #   GSBottleneck(128, 128, e=1): GSConv(128,128,1) = 128*64 + 128 + 64*25 + 128 = 10_048
    #                                GSConv(128,128,3) = 128*64*9 + 128 + 1_600 + 128 = 75_584
    #                                shortcut 128*128 + 256                           = 16_640
    #   cv3: 256*256 + 512                                     = 66_048
    assert count_params(sn.VoVGSCSP(128, 256, 1)) == 33_280 + 10_048 + 75_584 + 16_640 + 66_048


# ---------------------------------------------------------------------------
# Channel shuffle
# ---------------------------------------------------------------------------

def test_channel_shuffle_interleaves_halves():
    c = 6
    first = torch.arange(c, dtype=torch.float32)  # 0..5
    second = 100 + torch.arange(c, dtype=torch.float32)  # 100..105
    x = torch.cat((first, second)).view(1, 2 * c, 1, 1).expand(2, 2 * c, 3, 4).contiguous()
    y = sn.channel_shuffle(x, 2)
    expected = torch.tensor([0, 100, 1, 101, 2, 102, 3, 103, 4, 104, 5, 105], dtype=torch.float32)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                assert torch.equal(y[b, :, i, j], expected)


def test_channel_shuffle_is_a_permutation():
    x = torch.randn(2, 8, 5, 7)
    y = sn.channel_shuffle(x, 2)
    assert y.shape == x.shape
    assert torch.equal(y[:, 0::2], x[:, :4])
    assert torch.equal(y[:, 1::2], x[:, 4:])


def test_gsconv_output_interleaves_dense_and_depthwise_branches():
    torch.manual_seed(0)
    m = sn.GSConv(8, 16, 3).eval()
    x = torch.randn(1, 8, 10, 12)
    with torch.no_grad():
        dense = m.cv1(x)
        cheap = m.cv2(dense)
        y = m(x)
    assert torch.allclose(y[:, 0::2], dense)
    assert torch.allclose(y[:, 1::2], cheap)
    assert m.cv2.conv.groups == 8 and m.cv2.conv.kernel_size == (5, 5)


def test_gsconvns_replaces_shuffle_with_1x1_conv_and_relu():
    torch.manual_seed(0)
    m = sn.GSConvns(8, 16, 3, 2).eval()
    x = torch.randn(1, 8, 10, 12)
    with torch.no_grad():
        dense = m.cv1(x)
        halves = torch.cat((dense, m.cv2(dense)), 1)
        expected = torch.relu(nn.functional.conv2d(halves, m.shuf.weight))
        y = m(x)
    assert y.shape == (1, 16, 5, 6)
    assert torch.allclose(y, expected)
    assert (y >= 0).all()


def test_gsconv_rejects_odd_output_channels():
    with pytest.raises(ValueError, match="c2=15"):
        sn.GSConv(8, 15)


# ---------------------------------------------------------------------------
# Shapes, train-mode forward, backward, in-place activations
# ---------------------------------------------------------------------------

# (constructor, expected output spatial divisor)
BLOCKS = {
    "GSConv": (lambda c1, c2: sn.GSConv(c1, c2, 1, 1), 1),
    "GSConv-s2": (lambda c1, c2: sn.GSConv(c1, c2, 3, 2), 2),
    "GSConvns": (lambda c1, c2: sn.GSConvns(c1, c2, 1, 1), 1),
    "GSBottleneck": (lambda c1, c2: sn.GSBottleneck(c1, c2), 1),
    "GSBottleneckC": (lambda c1, c2: sn.GSBottleneckC(c1, c2), 1),
    "VoVGSCSP": (lambda c1, c2: sn.VoVGSCSP(c1, c2, 2), 1),
    "VoVGSCSPC": (lambda c1, c2: sn.VoVGSCSPC(c1, c2, 2), 1),
    # the argument list the authors' SNc-yolov5s.yaml passes: [c2, False]
    "VoVGSCSPC-yaml": (lambda c1, c2: sn.VoVGSCSPC(c1, c2, 1, False), 1),
}


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("hw", [(32, 32), (24, 40)])
def test_output_shape_with_channel_change(name, hw):
    build, div = BLOCKS[name]
    m = build(24, 32).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 24, *hw))
    assert y.shape == (2, 32, hw[0] // div, hw[1] // div)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_train_mode_batch1_forward_256(name):
    build, div = BLOCKS[name]
    m = build(8, 16).train()
    y = m(torch.randn(1, 8, 256, 256))
    assert y.shape == (1, 16, 256 // div, 256 // div)
    assert torch.isfinite(y).all()


def _assert_every_parameter_gets_gradient(m, x):
    loss = m(x).square().mean()
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("name", list(BLOCKS))
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    build, _ = BLOCKS[name]
    m = build(16, 32).train()
    _assert_every_parameter_gets_gradient(m, torch.randn(2, 16, 16, 16))


def _mimic_initialize_weights(model):
    """What the targets' initialize_weights does to a freshly built model."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eps = 1e-3
            mod.momentum = 0.03
        elif isinstance(mod, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
            mod.inplace = True


# The same blocks with the SiLU option (the activation the targets' initialize_weights makes in-place).
SILU_BLOCKS = {
    "GSConv": lambda c1, c2: sn.GSConv(c1, c2, 1, 1, act="silu"),
    "GSConvns": lambda c1, c2: sn.GSConvns(c1, c2, 1, 1, act="silu"),
    "GSBottleneck": lambda c1, c2: sn.GSBottleneck(c1, c2, act="silu"),
    "GSBottleneckC": lambda c1, c2: sn.GSBottleneckC(c1, c2, act="silu"),
    "VoVGSCSP": lambda c1, c2: sn.VoVGSCSP(c1, c2, 2, act="silu"),
    "VoVGSCSPC": lambda c1, c2: sn.VoVGSCSPC(c1, c2, 2, act="silu"),
}


@pytest.mark.parametrize("name", list(SILU_BLOCKS))
def test_survives_inplace_activations(name):
    torch.manual_seed(0)
    build = SILU_BLOCKS[name]
    m = build(16, 32).train()
    _mimic_initialize_weights(m)
    assert any(getattr(mod, "inplace", False) for mod in m.modules())
    x = torch.randn(2, 16, 16, 24)
    _assert_every_parameter_gets_gradient(m, x)
    # and the in-place model computes the same function as a fresh copy with the same weights
    ref = build(16, 32).train()
    ref.load_state_dict(m.state_dict())
    for a, b in zip(ref.modules(), m.modules()):
        if isinstance(a, nn.BatchNorm2d):
            a.eps, a.momentum = b.eps, b.momentum
    m.eval(), ref.eval()
    with torch.no_grad():
        assert torch.allclose(m(x), ref(x), atol=1e-6)


def test_vovgscsp_structure():
    m = sn.VoVGSCSP(64, 128, 3)
    # one-shot aggregation: a single concatenation of the pass-through and bottleneck branches
    assert m.cv3.conv.in_channels == 2 * 64
    assert all(isinstance(b, sn.GSBottleneck) for b in m.gsb)
    assert all(b.conv_lighting[1].cv1.conv.kernel_size == (3, 3) for b in m.gsb)
    c = sn.VoVGSCSPC(64, 128, 2)
    assert all(isinstance(b, sn.GSBottleneckC) for b in c.gsb)
    assert all(b.shortcut.conv.groups == 64 for b in c.gsb)


# ---------------------------------------------------------------------------
# Activation: Mish as in the authors' Conv, SiLU as an option
# ---------------------------------------------------------------------------

def _activated_convs(block):
    return [m for m in block.modules() if isinstance(m, sn.Conv) and not isinstance(m.act, nn.Identity)]


@pytest.mark.parametrize("name", list(BLOCKS))
def test_default_activation_is_mish(name):
    build, _ = BLOCKS[name]
    convs = _activated_convs(build(16, 32))
    assert convs and all(type(c.act) is nn.Mish for c in convs)


def test_conv_computes_mish_of_batchnorm_by_default():
    torch.manual_seed(0)
    m = sn.Conv(8, 16, 3).eval()
    x = torch.randn(2, 8, 10, 12)
    with torch.no_grad():
        z = m.bn(m.conv(x))
        expected = z * torch.tanh(nn.functional.softplus(z))  # Mish, written out
        assert torch.allclose(m(x), expected, atol=1e-6)
        assert not torch.allclose(m(x), nn.functional.silu(z), atol=1e-3)


@pytest.mark.parametrize("name", list(SILU_BLOCKS))
def test_silu_option_changes_only_the_activation(name):
    build = SILU_BLOCKS[name]
    block, default = build(16, 32), BLOCKS[name][0](16, 32)
    convs = _activated_convs(block)
    assert convs and all(type(c.act) is nn.SiLU for c in convs)
    assert count_params(block) == count_params(default)


def test_activation_from_yaml_arguments():
    # A YAML row [-1, 3, VoVGSCSP, [512, False, 1, 0.5, silu]] reaches the constructor as these arguments.
    m = sn.VoVGSCSP(64, 128, 1, False, 1, 0.5, "silu")
    assert {type(c.act) for c in _activated_convs(m)} == {nn.SiLU}
    with pytest.raises(ValueError, match="'relu6'.*mish, silu"):
        sn.VoVGSCSP(64, 128, 1, False, 1, 0.5, "relu6")


def test_recipe_notes_document_the_activation_option():
    import tomllib

    notes = tomllib.loads((RECIPES / "slimneck" / "recipe.toml").read_text())["notes"]
    assert "Mish" in notes and "silu" in notes


# ---------------------------------------------------------------------------
# Fused inference: every conv+BN pair folds
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(BLOCKS))
def test_every_conv_bn_pair_folds(name):
    torch.manual_seed(0)
    build, _ = BLOCKS[name]
    block = build(16, 32)
    pairs = sum(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert check_fuses(block, torch.randn(2, 16, 16, 24)) == pairs > 0
