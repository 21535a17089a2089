"""StarNet backbones and the StarBlock (recipes/starnet/starnet.py) against timm's starnet_* (features_only=True)
and timm's star block."""

import copy
import re
import tomllib

import pytest
import timm
import torch
from timm.models import starnet as timm_starnet
from torch import nn

from module_checks import (assert_every_parameter_gets_gradient, batchnorms, expected_shapes, fold_conv_bn,
                           random_projection_loss, randomise_batchnorms)
from recipe_loader import RECIPES, count_params, emulate_initialize_weights, load_recipe_module

sn = load_recipe_module("starnet", "starnet.py")
RECIPE = tomllib.loads((RECIPES / "starnet" / "recipe.toml").read_text())

# our class -> timm model; parameter counts of timm 1.0 features_only=True (final norm and classifier left out)
VARIANTS = {
    "StarNetS1": ("starnet_s1", 2_675_784),
    "StarNetS2": ("starnet_s2", 3_424_512),
    "StarNetS3": ("starnet_s3", 5_493_280),
    "StarNetS4": ("starnet_s4", 7_225_216),
    "StarNetS050": ("starnet_s050", 413_472),
    "StarNetS100": ("starnet_s100", 881_960),
    "StarNetS150": ("starnet_s150", 1_367_232),
}
BACKBONES = ["StarNet", *VARIANTS]


def timm_key_to_ours(key: str) -> str:
    """timm's features_only flattens `stem.0` / `stages.i` to `stem_0` / `stages_i`; the rest is the same."""
    return re.sub(r"^(stem|stages)_(\d+)\.", r"\1.\2.", key)


def build(name, **kwargs):
    torch.manual_seed(0)
    return getattr(sn, name)(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# Backbones against timm
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_outputs_and_parameters_equal_timm(name):
    """Every variant: equal parameter count, declared outputs, and with timm's weights copied in (BatchNorm
    statistics randomised) the same four feature maps."""
    timm_name, recorded = VARIANTS[name]
    ref = randomise_batchnorms(timm.create_model(timm_name, features_only=True)).eval()
    model = build(name).eval()
    assert count_params(model) == count_params(ref) == recorded
    assert list(model.feature_channels) == ref.feature_info.channels()
    assert list(model.feature_strides) == ref.feature_info.reduction()
    mapped = {timm_key_to_ours(k): v for k, v in ref.state_dict().items()}
    assert set(mapped) == set(model.state_dict())
    model.load_state_dict(mapped)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
    assert [tuple(o.shape) for o in ours] == expected_shapes(model, 2, 64, 96)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


@pytest.mark.parametrize("name", BACKBONES)
def test_recipe_declares_what_the_default_constructor_builds(name):
    with torch.device("meta"):
        model = getattr(sn, name)()
    declared = {m["name"]: m for m in RECIPE["modules"]}[name]
    assert declared["role"] == "backbone"
    assert tuple(declared["channels"]) == model.feature_channels
    assert tuple(declared["strides"]) == model.feature_strides == (4, 8, 16, 32)


def test_generic_starnet_defaults_to_s1_and_builds_custom_configurations():
    generic, s1 = sn.StarNet(), sn.StarNetS1()
    assert {k: v.shape for k, v in generic.state_dict().items()} == {k: v.shape for k, v in s1.state_dict().items()}
    custom = sn.StarNet(3, 16, [1, 1, 2, 1], 3)
    assert custom.feature_channels == (16, 32, 64, 128)
    assert sum(isinstance(m, sn.StarBlock) for m in custom.modules()) == 5
    with pytest.raises(ValueError, match="4 stages"):
        sn.StarNet(3, 16, [1, 1, 1])


def test_stochastic_depth_rates_equal_timm():
    model = sn.StarNetS2(drop_path_rate=0.1)
    ref = timm.create_model("starnet_s2", features_only=True, drop_path_rate=0.1)
    ours = [b.drop_path for b in model.modules() if isinstance(b, sn.StarBlock)]
    theirs = [getattr(b.drop_path, "drop_prob", 0.0) for b in ref.modules() if isinstance(b, timm_starnet.Block)]
    assert ours == pytest.approx(theirs) and ours[-1] == pytest.approx(0.1)


# ----------------------------------------------------------------------------------------------------------
# Backbone in a detector
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(256, 256), (192, 320)])
def test_output_shapes_square_and_non_square(hw):
    model = build("StarNetS1").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *hw))
    assert isinstance(out, list) and [tuple(o.shape) for o in out] == expected_shapes(model, 1, *hw)


def test_input_channels_argument():
    model = build("StarNetS050", c1=1).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 64, 96))
    assert [tuple(o.shape) for o in out] == expected_shapes(model, 1, 64, 96)


def test_train_mode_batch1_256_backward_reaches_every_parameter():
    model = build("StarNetS1").train()
    out = model(torch.randn(1, 3, 256, 256))
    assert [tuple(o.shape) for o in out] == expected_shapes(model, 1, 256, 256)
    random_projection_loss(out).backward()
    assert_every_parameter_gets_gradient(model)


def test_survives_initialize_weights():
    """In-place ReLU6 (the star operation reads f1's activation and f2's output) and the targets' BatchNorm
    settings: same outputs and gradients as out-of-place."""
    reference = build("StarNetS2").train()
    patched = emulate_initialize_weights(copy.deepcopy(reference))
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    assert any(getattr(m, "inplace", False) for m in patched.modules())
    x = torch.randn(2, 3, 64, 96)
    out_p, out_r = patched(x), reference(x)
    for a, b in zip(out_p, out_r):
        torch.testing.assert_close(a, b)
    random_projection_loss(out_p).backward()
    random_projection_loss(out_r).backward()
    for (name, p), q in zip(patched.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert_every_parameter_gets_gradient(patched)


def test_fuse_folds_every_batchnorm_and_keeps_outputs():
    model = randomise_batchnorms(build("StarNetS1")).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
        # stem, 4 downsamplers, and dwconv + g in each of the 15 blocks
        assert fold_conv_bn(model) == 1 + 4 + 2 * 15
        after = model(x)
    assert batchnorms(model) == []
    for a, b in zip(after, before):
        assert (a - b).abs().max() < 1e-4


def test_bfloat16_autocast_and_bfloat16_weights():
    model = build("StarNetS1").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(x)
    with torch.no_grad():
        half = model.to(torch.bfloat16)(x.to(torch.bfloat16))
    for outs in (mixed, half):
        assert [tuple(o.shape) for o in outs] == expected_shapes(model, 1, 64, 96)
        assert all(o.dtype == torch.bfloat16 and torch.isfinite(o).all() for o in outs)


# ----------------------------------------------------------------------------------------------------------
# StarBlock
# ----------------------------------------------------------------------------------------------------------


def starblock_params(c1, c2, mlp_ratio=3):
    h = mlp_ratio * c2
    adjust = c1 * c2 + c2 + 2 * c2 if c1 != c2 else 0  # 1x1 conv with bias + BN
    dw = 49 * c2 + c2 + 2 * c2  # dw7x7 with bias + BN
    branches = 2 * (c2 * h + h)  # f1, f2: 1x1 with bias
    g = h * c2 + c2 + 2 * c2  # 1x1 with bias + BN
    dw2 = 49 * c2 + c2
    return adjust + dw + branches + g + dw2


@pytest.mark.parametrize("c1, c2, mlp_ratio", [(32, 32, 3), (64, 32, 3), (24, 48, 4)])
def test_starblock_parameters(c1, c2, mlp_ratio):
    assert count_params(sn.StarBlock(c1, c2, mlp_ratio)) == starblock_params(c1, c2, mlp_ratio)


def test_starblock_equals_timm_block_with_copied_weights():
    ref = randomise_batchnorms(timm_starnet.Block(32, mlp_ratio=3)).eval()
    ours = sn.StarBlock(32, 32, 3).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 32, 12, 20)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_star_operation_is_relu6_of_one_branch_times_the_other():
    """What reaches the 1x1 projection g is ReLU6(f1(h)) * f2(h), h the BN'd depthwise conv of the input."""
    block = randomise_batchnorms(sn.StarBlock(16, 16)).eval()
    seen = []
    block.g.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        y = block(x)
        h = block.dwconv(x)
        star = torch.clamp(block.f1(h), 0, 6) * block.f2(h)
        torch.testing.assert_close(seen[0], star)
        torch.testing.assert_close(y, x + block.dwconv2(block.g(star)))
    assert (block.f1(h) > 6).any() or (block.f1(h) < 0).any()  # the clamp mattered


@pytest.mark.parametrize("hw", [(32, 32), (32, 64)])
def test_starblock_shapes(hw):
    block = sn.StarBlock(48, 32).eval()
    with torch.no_grad():
        assert block(torch.randn(2, 48, *hw)).shape == (2, 32, *hw)


def test_starblock_train_mode_batch1_256_and_gradients_after_initialize_weights():
    block = emulate_initialize_weights(sn.StarBlock(16, 32)).train()
    y = block(torch.randn(1, 16, 256, 256))
    assert y.shape == (1, 32, 256, 256)
    random_projection_loss(y).backward()
    assert_every_parameter_gets_gradient(block)


def test_starblock_fuse():
    block = randomise_batchnorms(sn.StarBlock(48, 32)).eval()
    x = torch.randn(1, 48, 16, 16)
    with torch.no_grad():
        before = block(x)
        assert fold_conv_bn(block) == 3  # projection, dwconv, g
        after = block(x)
    assert batchnorms(block) == []
    assert (after - before).abs().max() < 1e-4


def test_starblock_bfloat16():
    block = sn.StarBlock(48, 32).eval()
    x = torch.randn(1, 48, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(block(x)).all()
    with torch.no_grad():
        y = block.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
