"""Tests of the BlazeFace blocks (recipes/blazeblock/blazeblock.py)."""

import tomllib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fusing import check_fuses
from recipe_loader import RECIPES, count_params, load_recipe_module

bb = load_recipe_module("blazeblock", "blazeblock.py")
RECIPE = tomllib.loads((RECIPES / "blazeblock" / "recipe.toml").read_text())


# ---------------------------------------------------------------------------
# Analytic parameter counts (every conv is bias-free and followed by BN: 2 per channel)
# ---------------------------------------------------------------------------

def dw5_params(c):
    return 25 * c + 2 * c


def pw_params(c1, c2):
    return c1 * c2 + 2 * c2


def shortcut_params(c1, c2):
    return pw_params(c1, c2) if c2 < c1 else 0  # only a narrowing shortcut has weights


def blaze_params(c1, c2):
    return dw5_params(c1) + pw_params(c1, c2) + shortcut_params(c1, c2)


def double_blaze_params(c1, c2, mid):
    return dw5_params(c1) + pw_params(c1, mid) + dw5_params(mid) + pw_params(mid, c2) + shortcut_params(c1, c2)


@pytest.mark.parametrize("c1,c2,s", [(24, 24, 1), (24, 28, 1), (28, 32, 2), (48, 48, 2), (64, 32, 1)])
def test_blazeblock_param_count(c1, c2, s):
    assert count_params(bb.BlazeBlock(c1, c2, s)) == blaze_params(c1, c2)


@pytest.mark.parametrize("c1,c2,s,mid", [(48, 96, 2, 24), (96, 96, 1, 24), (96, 96, 2, None), (128, 64, 1, None)])
def test_double_blazeblock_param_count(c1, c2, s, mid):
    expected_mid = mid if mid is not None else c2 // 4
    assert count_params(bb.DoubleBlazeBlock(c1, c2, s, mid)) == double_blaze_params(c1, c2, expected_mid)


def test_param_count_concrete_paper_layers():
    # Table 4: single BlazeBlock 24 -> 28: 25*24+48 + 24*28+56 = 648 + 728
    assert count_params(bb.BlazeBlock(24, 28)) == 1_376
    # double BlazeBlock 48 -> 24 -> 96, stride 2: 25*48+96 + 48*24+48 + 25*24+48 + 24*96+192
    assert count_params(bb.DoubleBlazeBlock(48, 96, 2, 24)) == 1_296 + 1_200 + 648 + 2_496
    assert bb.DoubleBlazeBlock(48, 96, 2).pw1[0].out_channels == 24


# ---------------------------------------------------------------------------
# Shortcut behaviour: max-pool + zero channel padding
# ---------------------------------------------------------------------------

def _silence_residual_branch(block):
    """Zero the last BN of the conv branch so the block computes ReLU(shortcut(x))."""
    last_bn = block.pw[1] if isinstance(block, bb.BlazeBlock) else block.pw2[1]
    nn.init.zeros_(last_bn.weight)
    nn.init.zeros_(last_bn.bias)


@pytest.mark.parametrize("cls", [bb.BlazeBlock, bb.DoubleBlazeBlock])
def test_stride2_shortcut_is_maxpool_then_zero_channel_padding(cls):
    torch.manual_seed(0)
    m = cls(8, 12, 2).eval()
    _silence_residual_branch(m)
    x = torch.randn(1, 8, 10, 14)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (1, 12, 5, 7)
    assert torch.allclose(y[:, :8], F.relu(F.max_pool2d(x, 2, 2)))
    assert torch.count_nonzero(y[:, 8:]) == 0


@pytest.mark.parametrize("cls", [bb.BlazeBlock, bb.DoubleBlazeBlock])
def test_stride1_shortcut_is_identity(cls):
    torch.manual_seed(0)
    m = cls(8, 8, 1).eval()
    _silence_residual_branch(m)
    x = torch.randn(1, 8, 9, 11)
    with torch.no_grad():
        assert torch.allclose(m(x), F.relu(x))


def test_narrowing_shortcut_is_a_projection():
    m = bb.BlazeBlock(32, 16)
    assert isinstance(m.shortcut.project[0], nn.Conv2d) and m.shortcut.project[0].kernel_size == (1, 1)
    assert m.shortcut.pad == 0
    assert isinstance(bb.BlazeBlock(16, 32).shortcut.project, nn.Identity)


@pytest.mark.parametrize("cls", [bb.BlazeBlock, bb.DoubleBlazeBlock])
def test_odd_sizes_at_stride2(cls):
    m = cls(8, 16, 2).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 8, 11, 15)).shape == (1, 16, 6, 8)


def test_depthwise_kernels_are_5x5():
    m = bb.DoubleBlazeBlock(16, 32, 2)
    assert m.dw1[0].kernel_size == (5, 5) and m.dw1[0].groups == 16 and m.dw1[0].stride == (2, 2)
    assert m.dw2[0].kernel_size == (5, 5) and m.dw2[0].groups == 8 and m.dw2[0].stride == (1, 1)
    assert bb.BlazeBlock(16, 32).dw[0].kernel_size == (5, 5)


def test_recipe_declares_both_blocks_and_the_yaml_args():
    names = {m["name"]: m for m in RECIPE["modules"]}
    assert set(names) == {"BlazeBlock", "DoubleBlazeBlock"}
    assert all(m["role"] == "block" and not m["repeats"] for m in names.values())
    for y in RECIPE["yamls"]:
        assert y["vars"] == {"block": "DoubleBlazeBlock", "args": [1]}
        m = bb.DoubleBlazeBlock(48, 32, *y["vars"]["args"])
        assert m(torch.randn(1, 48, 8, 8)).shape == (1, 32, 8, 8)


# ---------------------------------------------------------------------------
# Shapes, train-mode forward, backward, in-place activations
# ---------------------------------------------------------------------------

BLOCKS = {
    "BlazeBlock": (lambda c1, c2: bb.BlazeBlock(c1, c2, 1), 1),
    "BlazeBlock-s2": (lambda c1, c2: bb.BlazeBlock(c1, c2, 2), 2),
    "DoubleBlazeBlock": (lambda c1, c2: bb.DoubleBlazeBlock(c1, c2, 1), 1),
    "DoubleBlazeBlock-s2": (lambda c1, c2: bb.DoubleBlazeBlock(c1, c2, 2), 2),
    "DoubleBlazeBlock-mid": (lambda c1, c2: bb.DoubleBlazeBlock(c1, c2, 1, 12), 1),
}


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("hw", [(32, 32), (24, 40)])
@pytest.mark.parametrize("c1,c2", [(24, 32), (32, 16), (16, 16)])
def test_output_shape(name, hw, c1, c2):
    build, div = BLOCKS[name]
    m = build(c1, c2).eval()
    with torch.no_grad():
        y = m(torch.randn(2, c1, *hw))
    assert y.shape == (2, c2, hw[0] // div, hw[1] // div)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_train_mode_batch1_forward_256(name):
    build, div = BLOCKS[name]
    m = build(8, 16).train()
    y = m(torch.randn(1, 8, 256, 256))
    assert y.shape == (1, 16, 256 // div, 256 // div)
    assert torch.isfinite(y).all()


def _assert_every_parameter_gets_gradient(m, x):
    m(x).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("c1,c2", [(16, 32), (32, 16)])
def test_backward_reaches_every_parameter(name, c1, c2):
    torch.manual_seed(0)
    build, _ = BLOCKS[name]
    _assert_every_parameter_gets_gradient(build(c1, c2).train(), torch.randn(2, c1, 16, 16))


def _mimic_initialize_weights(model):
    """What the targets' initialize_weights does to a freshly built model."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eps, mod.momentum = 1e-3, 0.03
        elif type(mod) in (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU):
            mod.inplace = True


@pytest.mark.parametrize("name", list(BLOCKS))
def test_survives_inplace_activations(name):
    torch.manual_seed(0)
    build, _ = BLOCKS[name]
    m = build(16, 24).train()
    _mimic_initialize_weights(m)
    assert any(getattr(mod, "inplace", False) for mod in m.modules())
    x = torch.randn(2, 16, 16, 24, requires_grad=True) * 1.0
    before = x.detach().clone()
    out = m(x)
    assert torch.equal(x.detach(), before), "the block wrote into its input"
    out.square().mean().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    ref = build(16, 24)
    ref.load_state_dict(m.state_dict())
    _mimic_initialize_weights(ref)
    for mod in ref.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    m.eval(), ref.eval()
    with torch.no_grad():
        assert torch.allclose(m(before), ref(before), atol=1e-6)


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("c1,c2", [(24, 32), (32, 16)])  # zero-padded and projected shortcut
def test_every_conv_bn_pair_folds(name, c1, c2):
    torch.manual_seed(0)
    block = BLOCKS[name][0](c1, c2)
    pairs = sum(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert check_fuses(block, torch.randn(2, c1, 16, 24)) == pairs >= 2
