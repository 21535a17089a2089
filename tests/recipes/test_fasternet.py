"""FasterNet backbones and the PConv / FasterBlock / C2f_Faster blocks (recipes/fasternet/fasternet.py) against
timm's fasternet_* (features_only=True), timm's own PConv and block, and ultralytics' C2f."""

import copy
import re
import tomllib

import pytest
import timm
import torch
from timm.models import fasternet as timm_fasternet
from torch import nn

from module_checks import (assert_every_parameter_gets_gradient, batchnorms, expected_shapes, fold_conv_bn,
                           random_projection_loss, randomise_batchnorms)
from recipe_loader import RECIPES, count_params, emulate_initialize_weights, load_recipe_module

fn = load_recipe_module("fasternet", "fasternet.py")
RECIPE = tomllib.loads((RECIPES / "fasternet" / "recipe.toml").read_text())

# our class -> timm model; parameter counts of timm 1.0 features_only=True (the 1280 head is not a feature)
VARIANTS = {
    "FasterNetT0": ("fasternet_t0", 2_214_900),
    "FasterNetT1": ("fasternet_t1", 5_659_008),
    "FasterNetT2": ("fasternet_t2", 12_718_848),
    "FasterNetS": ("fasternet_s", 28_589_312),
    "FasterNetM": ("fasternet_m", 50_765_904),
    "FasterNetL": ("fasternet_l", 90_218_112),
}
BACKBONES = ["FasterNet", *VARIANTS]


def timm_key_to_ours(key: str) -> str:
    """timm (features_only flattens `stages.i` to `stages_i`) -> our state-dict keys."""
    key = re.sub(r"^stages_(\d+)\.", r"stages.\1.", key)
    for theirs, ours in (("patch_embed.proj.", "patch_embed.conv."), ("patch_embed.norm.", "patch_embed.bn."),
                         ("downsample.reduction.", "downsample.conv."), ("downsample.norm.", "downsample.bn."),
                         ("spatial_mixing.partial_conv3.", "spatial_mixing.conv.")):
        key = key.replace(theirs, ours)
    return key


def load_timm_weights(model: nn.Module, ref: nn.Module) -> None:
    mapped = {timm_key_to_ours(k): v for k, v in ref.state_dict().items()}
    assert set(mapped) == set(model.state_dict()), set(mapped) ^ set(model.state_dict())
    model.load_state_dict(mapped)


def build(name, **kwargs):
    torch.manual_seed(0)
    return getattr(fn, name)(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# Backbones against timm
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_count_equals_timm(name):
    timm_name, recorded = VARIANTS[name]
    with torch.device("meta"):
        model = getattr(fn, name)()
        ref = timm.create_model(timm_name, features_only=True)
    assert count_params(model) == count_params(ref) == recorded
    assert list(model.feature_channels) == ref.feature_info.channels()
    assert list(model.feature_strides) == ref.feature_info.reduction()


@pytest.mark.parametrize("name", BACKBONES)
def test_recipe_declares_what_the_default_constructor_builds(name):
    with torch.device("meta"):
        model = getattr(fn, name)()
    declared = {m["name"]: m for m in RECIPE["modules"]}[name]
    assert declared["role"] == "backbone"
    assert tuple(declared["channels"]) == model.feature_channels
    assert tuple(declared["strides"]) == model.feature_strides == (4, 8, 16, 32)


def test_generic_fasternet_defaults_to_t0_and_builds_custom_configurations():
    generic, t0 = fn.FasterNet(), fn.FasterNetT0()
    assert {k: v.shape for k, v in generic.state_dict().items()} == {k: v.shape for k, v in t0.state_dict().items()}
    custom = fn.FasterNet(3, 32, [1, 1, 2, 1], "relu")
    assert custom.feature_channels == (32, 64, 128, 256)
    assert sum(isinstance(m, fn.FasterBlock) for m in custom.modules()) == 5
    with pytest.raises(ValueError, match="4 stages"):
        fn.FasterNet(3, 32, [1, 1, 1])


@pytest.mark.parametrize("name, hw", [("FasterNetT0", (64, 96)), ("FasterNetT1", (96, 64)),
                                      ("FasterNetT2", (64, 64)), ("FasterNetS", (64, 96))])
def test_outputs_equal_timm_with_copied_weights(name, hw):
    """Same weights in, same four feature maps out: checks block order, PConv split, activations (GELU for
    T0/T1, ReLU after) and the merging layers, not only the tensor shapes."""
    ref = randomise_batchnorms(timm.create_model(VARIANTS[name][0], features_only=True)).eval()
    model = build(name).eval()
    load_timm_weights(model, ref)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
    assert [tuple(o.shape) for o in ours] == expected_shapes(model, 2, *hw)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_stochastic_depth_rates_equal_timm():
    """drop_path_rate rises linearly over all blocks, as in the authors' code and timm."""
    model = fn.FasterNetT1(drop_path_rate=0.02)
    ref = timm.create_model("fasternet_t1", features_only=True, drop_path_rate=0.02)
    ours = [b.drop_path for b in model.modules() if isinstance(b, fn.FasterBlock)]
    theirs = [getattr(b.drop_path, "drop_prob", 0.0) for b in ref.modules()
              if isinstance(b, timm_fasternet.MLPBlock)]
    assert ours == pytest.approx(theirs) and ours[-1] == pytest.approx(0.02) and ours[0] == 0.0


# ----------------------------------------------------------------------------------------------------------
# Backbone in a detector: shapes, train mode, initialize_weights, fuse, reduced precision
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(256, 256), (192, 320)])
def test_output_shapes_square_and_non_square(hw):
    model = build("FasterNetT0").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *hw))
    assert isinstance(out, list) and [tuple(o.shape) for o in out] == expected_shapes(model, 1, *hw)


def test_input_channels_argument():
    model = build("FasterNetT0", c1=1).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 64, 96))
    assert [tuple(o.shape) for o in out] == expected_shapes(model, 1, 64, 96)


def test_train_mode_batch1_256_backward_reaches_every_parameter():
    model = build("FasterNetT0").train()
    out = model(torch.randn(1, 3, 256, 256))
    assert [tuple(o.shape) for o in out] == expected_shapes(model, 1, 256, 256)
    random_projection_loss(out).backward()
    assert_every_parameter_gets_gradient(model)


def test_survives_initialize_weights():
    """In-place activations and the targets' BatchNorm settings: same outputs and gradients as out-of-place."""
    reference = build("FasterNetT2").train()
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
    model = randomise_batchnorms(build("FasterNetT0")).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
        # patch embedding, 3 merging layers, one BN in each of the 13 blocks' MLP
        assert fold_conv_bn(model) == 1 + 3 + 13
        after = model(x)
    assert batchnorms(model) == []
    for a, b in zip(after, before):
        assert (a - b).abs().max() < 1e-4


def test_bfloat16_autocast_and_bfloat16_weights():
    model = build("FasterNetT0").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(x)
    with torch.no_grad():
        half = model.to(torch.bfloat16)(x.to(torch.bfloat16))
    for outs in (mixed, half):
        assert [tuple(o.shape) for o in outs] == expected_shapes(model, 1, 64, 96)
        assert all(o.dtype == torch.bfloat16 and torch.isfinite(o).all() for o in outs)


# ----------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c1, c2, k, n_div", [(64, 64, 3, 4), (64, 128, 3, 4), (96, 48, 5, 4), (32, 64, 3, 2)])
def test_pconv_parameters(c1, c2, k, n_div):
    # partial k x k conv on c1 // n_div channels (no bias), then 1x1 conv + BN (weight and bias) to c2
    expected = (c1 // n_div) ** 2 * k * k + c1 * c2 + 2 * c2
    assert count_params(fn.PConv(c1, c2, k, n_div)) == expected


def test_pconv_partial_part_equals_timm_and_leaves_other_channels_untouched():
    ours = fn.PartialConv(64, 4)
    ref = timm_fasternet.Partial_conv3(64, 4, "split_cat")
    ours.conv.weight.data.copy_(ref.partial_conv3.weight)
    x = torch.randn(2, 64, 12, 20)
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, ref(x))
    assert torch.equal(y[:, 16:], x[:, 16:])
    assert not torch.allclose(y[:, :16], x[:, :16])


def test_pconv_block_is_partial_then_pointwise():
    block = randomise_batchnorms(fn.PConv(32, 48)).eval()
    x = torch.randn(1, 32, 16, 24)
    with torch.no_grad():
        y = block(x)
        partial = block.partial(x)
        bn = block.pw.bn
        expected = nn.functional.silu(bn(nn.functional.conv2d(partial, block.pw.conv.weight)))
    assert y.shape == (1, 48, 16, 24)
    torch.testing.assert_close(y, expected)


def fasterblock_params(c1, c2, mlp_ratio=2.0, n_div=4):
    hidden = int(c2 * mlp_ratio)
    adjust = c1 * c2 + 2 * c2 if c1 != c2 else 0
    return adjust + (c2 // n_div) ** 2 * 9 + c2 * hidden + 2 * hidden + hidden * c2


@pytest.mark.parametrize("c1, c2", [(64, 64), (96, 64), (32, 48)])
def test_fasterblock_parameters(c1, c2):
    assert count_params(fn.FasterBlock(c1, c2)) == fasterblock_params(c1, c2)


@pytest.mark.parametrize("act, timm_act", [("relu", nn.ReLU), ("gelu", nn.GELU)])
def test_fasterblock_equals_timm_block_with_copied_weights(act, timm_act):
    ref = timm_fasternet.MLPBlock(48, n_div=4, mlp_ratio=2.0, drop_path=0.0, layer_scale_init_value=0.0,
                                  act_layer=timm_act)
    randomise_batchnorms(ref).eval()
    ours = fn.FasterBlock(48, 48, act=act).eval()
    ours.load_state_dict({timm_key_to_ours(k): v for k, v in ref.state_dict().items()})
    x = torch.randn(2, 48, 10, 14)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_fasterblock_stochastic_depth_keeps_or_drops_the_whole_branch():
    block = fn.FasterBlock(16, 16, drop_path=0.5).train()
    torch.manual_seed(0)
    x = torch.randn(64, 16, 4, 4)
    branch = block.mlp(block.spatial_mixing(x)).detach()
    y = block(x).detach()
    kept = torch.isclose(y, x + 2 * branch, atol=1e-5).flatten(1).all(1)
    dropped = torch.isclose(y, x).flatten(1).all(1)
    assert bool((kept | dropped).all()) and 10 < int(kept.sum()) < 54
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + block.mlp(block.spatial_mixing(x)))


def c2f_faster_params(c1, c2, n, e=0.5):
    c = int(c2 * e)
    return (c1 * 2 * c + 4 * c) + ((2 + n) * c * c2 + 2 * c2) + n * fasterblock_params(c, c)


@pytest.mark.parametrize("c1, c2, n", [(64, 64, 1), (96, 128, 3), (256, 128, 2)])
def test_c2f_faster_parameters(c1, c2, n):
    assert count_params(fn.C2f_Faster(c1, c2, n)) == c2f_faster_params(c1, c2, n)


def test_c2f_faster_equals_ultralytics_c2f_with_fasternet_blocks():
    """The C2f wiring (split, chained blocks, one concatenation) against ultralytics' own C2f."""
    from ultralytics.nn.modules.block import C2f

    ours = randomise_batchnorms(fn.C2f_Faster(48, 64, 2, True)).eval()
    ref = C2f(48, 64, 2, True)
    ref.m = copy.deepcopy(ours.m)
    ref.load_state_dict(ours.state_dict())
    ref.eval()
    x = torch.randn(2, 48, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
    assert all(isinstance(b.mlp[2], nn.SiLU) for b in ours.m)


BLOCKS = {
    "PConv": lambda c1, c2: fn.PConv(c1, c2),
    "FasterBlock": lambda c1, c2: fn.FasterBlock(c1, c2),
    "C2f_Faster": lambda c1, c2: fn.C2f_Faster(c1, c2, 2),
}


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("hw", [(32, 32), (32, 64)])
def test_block_shapes(name, hw):
    block = BLOCKS[name](48, 32).eval()
    with torch.no_grad():
        assert block(torch.randn(2, 48, *hw)).shape == (2, 32, *hw)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_train_mode_batch1_256_and_gradients_after_initialize_weights(name):
    block = emulate_initialize_weights(BLOCKS[name](16, 32)).train()
    y = block(torch.randn(1, 16, 256, 256))
    assert y.shape == (1, 32, 256, 256)
    random_projection_loss(y).backward()
    assert_every_parameter_gets_gradient(block)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_fuse(name):
    block = randomise_batchnorms(BLOCKS[name](48, 32)).eval()
    x = torch.randn(1, 48, 16, 16)
    with torch.no_grad():
        before = block(x)
        assert fold_conv_bn(block) > 0
        after = block(x)
    assert batchnorms(block) == []
    assert (after - before).abs().max() < 1e-4


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_bfloat16(name):
    block = BLOCKS[name](48, 32).eval()
    x = torch.randn(1, 48, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(block(x)).all()
    with torch.no_grad():
        y = block.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
