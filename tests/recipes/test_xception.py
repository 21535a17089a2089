"""Tests of the Xception blocks (recipes/xception/xception.py)."""

import tomllib

import pytest
import torch
import torch.nn as nn

from recipe_loader import RECIPES, count_params, load_recipe_module

xc = load_recipe_module("xception", "xception.py")
RECIPE = tomllib.loads((RECIPES / "xception" / "recipe.toml").read_text())


# ---------------------------------------------------------------------------
# Analytic parameter counts
# ---------------------------------------------------------------------------

def sepconv_params(c1, c2, k=3):
    return c1 * k * k + c1 * c2  # depthwise k x k + pointwise 1x1, no biases


def block_params(c1, c2, reps=2, s=1, grow_first=True):
    if grow_first:
        widths = [(c1 if i == 0 else c2, c2) for i in range(reps)]
    else:
        widths = [(c1, c1 if i < reps - 1 else c2) for i in range(reps)]
    total = sum(sepconv_params(a, b) + 2 * b for a, b in widths)  # each separable conv + BN
    if c1 != c2 or s != 1:
        total += c1 * c2 + 2 * c2  # 1x1 shortcut conv + BN
    return total


@pytest.mark.parametrize("c1,c2,k", [(16, 32, 3), (64, 64, 3), (32, 16, 5)])
def test_separable_conv_param_count(c1, c2, k):
    assert count_params(xc.SeparableConv2d(c1, c2, k)) == sepconv_params(c1, c2, k)


@pytest.mark.parametrize(
    "c1,c2,reps,s,grow_first",
    [
        (64, 128, 2, 2, True),  # entry flow block 1
        (256, 728, 2, 2, True),  # entry flow block 3
        (728, 728, 3, 1, True),  # middle flow
        (728, 1024, 2, 2, False),  # exit flow
        (64, 32, 2, 1, True),  # neck use: narrowing at stride 1
    ],
)
def test_block_param_count(c1, c2, reps, s, grow_first):
    m = xc.XceptionBlock(c1, c2, reps, s, True, grow_first)
    assert count_params(m) == block_params(c1, c2, reps, s, grow_first)


def test_block_param_count_concrete():
    # XceptionBlock(64, 128, 2, 2): sepconv 64->128: 576 + 8192 + 256 BN; 128->128: 1152 + 16384 + 256;
    # shortcut 64*128 + 256
    assert count_params(xc.XceptionBlock(64, 128, 2, 2)) == 9_024 + 17_792 + 8_448


# ---------------------------------------------------------------------------
# Cross-check with timm's Xception Block (same structure, same parameter order)
# ---------------------------------------------------------------------------

TIMM_CASES = [
    (64, 128, 2, 2, False, True),
    (728, 728, 3, 1, True, True),
    (96, 160, 2, 2, True, False),
    (48, 32, 2, 1, True, True),
]


@pytest.mark.parametrize("c1,c2,reps,s,start_with_relu,grow_first", TIMM_CASES)
def test_block_matches_timm(c1, c2, reps, s, start_with_relu, grow_first):
    timm_xception = pytest.importorskip("timm.models.xception")
    torch.manual_seed(0)
    ref = timm_xception.Block(c1, c2, reps, s, start_with_relu, grow_first).eval()
    mine = xc.XceptionBlock(c1, c2, reps, s, start_with_relu, grow_first).eval()
    assert count_params(mine) == count_params(ref)
    src, dst = ref.state_dict(), mine.state_dict()
    assert [v.shape for v in src.values()] == [v.shape for v in dst.values()]
    mine.load_state_dict(dict(zip(dst.keys(), src.values())))
    x = torch.randn(1, c1, 12, 10)
    with torch.no_grad():
        expected = ref(x.clone())
        got = mine(x)
    assert got.shape == expected.shape == (1, c2, -(-12 // s), -(-10 // s))
    assert torch.allclose(got, expected, atol=1e-5)


# ---------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------

def test_identity_shortcut_only_when_shape_is_kept():
    assert isinstance(xc.XceptionBlock(32, 32, 2, 1).skip, nn.Identity)
    assert isinstance(xc.XceptionBlock(32, 64, 2, 1).skip, nn.Sequential)
    assert isinstance(xc.XceptionBlock(32, 32, 2, 2).skip, nn.Sequential)


def test_start_with_relu_false_begins_with_the_separable_conv():
    first = xc.XceptionBlock(8, 16, 2, 1, start_with_relu=False).rep[0]
    assert isinstance(first, nn.Conv2d) and first.groups == 8 and first.kernel_size == (3, 3)
    assert isinstance(xc.XceptionBlock(8, 16, 2, 1).rep[0], xc.PreActReLU)


@pytest.mark.parametrize("c1,c2,reps,s,start_with_relu,grow_first", TIMM_CASES)
def test_every_conv_bn_pair_folds(c1, c2, reps, s, start_with_relu, grow_first):
    from fusing import check_fuses

    torch.manual_seed(0)
    block = xc.XceptionBlock(c1, c2, reps, s, start_with_relu, grow_first)
    pairs = reps + (0 if isinstance(block.skip, nn.Identity) else 1)
    assert check_fuses(block, torch.randn(2, c1, 12, 10)) == pairs


def test_separable_conv_stride_and_groups():
    m = xc.SeparableConv2d(16, 24, 3, 2)
    assert m.depthwise.groups == 16 and m.depthwise.stride == (2, 2)
    assert m(torch.randn(1, 16, 20, 30)).shape == (1, 24, 10, 15)


def test_recipe_declares_both_blocks_and_the_yaml_args():
    names = {m["name"]: m for m in RECIPE["modules"]}
    assert set(names) == {"SeparableConv2d", "XceptionBlock"}
    assert all(m["role"] == "block" and not m["repeats"] for m in names.values())
    for y in RECIPE["yamls"]:
        assert y["vars"] == {"block": "XceptionBlock", "args": [2, 1]}
        # the neck uses it with a channel change at stride 1
        m = xc.XceptionBlock(48, 32, *y["vars"]["args"])
        assert m(torch.randn(1, 48, 8, 8)).shape == (1, 32, 8, 8)


# ---------------------------------------------------------------------------
# Shapes, train-mode forward, backward, in-place activations
# ---------------------------------------------------------------------------

BLOCKS = {
    "SeparableConv2d": (lambda c1, c2: xc.SeparableConv2d(c1, c2), 1),
    "SeparableConv2d-s2": (lambda c1, c2: xc.SeparableConv2d(c1, c2, 3, 2), 2),
    "XceptionBlock-yaml": (lambda c1, c2: xc.XceptionBlock(c1, c2, 2, 1), 1),
    "XceptionBlock-s2": (lambda c1, c2: xc.XceptionBlock(c1, c2, 2, 2), 2),
    "XceptionBlock-exit": (lambda c1, c2: xc.XceptionBlock(c1, c2, 2, 2, True, False), 2),
    "XceptionBlock-first": (lambda c1, c2: xc.XceptionBlock(c1, c2, 2, 2, False, True), 2),
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
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    build, _ = BLOCKS[name]
    _assert_every_parameter_gets_gradient(build(16, 32).train(), torch.randn(2, 16, 16, 16))


def _mimic_initialize_weights(model):
    """What the targets' initialize_weights does to a freshly built model."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eps, mod.momentum = 1e-3, 0.03
        elif type(mod) in (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU):
            mod.inplace = True


@pytest.mark.parametrize("name", [n for n in BLOCKS if n.startswith("XceptionBlock")])
@pytest.mark.parametrize("c1,c2", [(16, 16), (16, 32)])
def test_survives_inplace_activations(name, c1, c2):
    torch.manual_seed(0)
    build, _ = BLOCKS[name]
    m = build(c1, c2).train()
    _mimic_initialize_weights(m)
    assert any(getattr(mod, "inplace", False) for mod in m.modules())
    # an input that is not a leaf and is also read elsewhere (as a saved layer output would be)
    leaf = torch.randn(2, c1, 16, 24, requires_grad=True)
    x = leaf * 1.0
    before = x.detach().clone()
    out = m(x)
    assert torch.equal(x.detach(), before), "the block wrote into its input"
    (out.square().mean() + x.sum()).backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    # same function as an out-of-place copy with the same state
    ref = build(c1, c2)
    ref.load_state_dict(m.state_dict())
    _mimic_initialize_weights(ref)
    for mod in ref.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    m.eval(), ref.eval()
    with torch.no_grad():
        assert torch.allclose(m(before), ref(before), atol=1e-6)
