"""MobileNetV4 backbones: structure against timm, declared outputs, training-mode robustness."""

import math

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

import pytest
import torch
import torch.nn as nn

from fusing import check_fuses
from init_stats import assert_batchnorms, goog_std, matches_std
from recipe_loader import RECIPES, count_params, load_recipe_module

mnv4 = load_recipe_module("mobilenetv4", "mobilenetv4.py")
RECIPE = tomllib.loads((RECIPES / "mobilenetv4" / "recipe.toml").read_text())

# our class -> (timm model name, declared channels)
VARIANTS = {
    "MobileNetV4ConvSmall": ("mobilenetv4_conv_small", (32, 32, 64, 96, 960)),
    "MobileNetV4ConvMedium": ("mobilenetv4_conv_medium", (32, 48, 80, 160, 960)),
    "MobileNetV4ConvLarge": ("mobilenetv4_conv_large", (24, 48, 96, 192, 960)),
    "MobileNetV4HybridMedium": ("mobilenetv4_hybrid_medium", (32, 48, 80, 160, 960)),
    "MobileNetV4HybridLarge": ("mobilenetv4_hybrid_large", (24, 48, 96, 192, 960)),
}
STRIDES = (2, 4, 8, 16, 32)
LIGHT = ["MobileNetV4ConvSmall", "MobileNetV4ConvMedium", "MobileNetV4HybridMedium"]

# timm 1.0.x features_only=True parameter counts (measured with timm.create_model; the 1x1 -> 1280 head is
# not part of the features and not part of our backbones either).  Asserted live against timm when installed.
TIMM_FEATURE_PARAMS = {
    "MobileNetV4ConvSmall": 1_261_664,
    "MobileNetV4ConvMedium": 7_203_152,
    "MobileNetV4ConvLarge": 30_078_504,
    "MobileNetV4HybridMedium": 8_562_288,
    "MobileNetV4HybridLarge": 35_252_264,
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small CPU convolutions run far faster on one intra-op thread when the cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build(name, **kwargs):
    torch.manual_seed(0)
    return getattr(mnv4, name)(**kwargs)


def timm_features(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(VARIANTS[name][0], pretrained=False, features_only=True)


def shapes(outputs):
    return [tuple(t.shape) for t in outputs]


def expected_shapes(model, b, h, w):
    return [(b, c, h // s, w // s) for c, s in zip(model.feature_channels, model.feature_strides)]


def simulate_initialize_weights(model):
    """What the targets' initialize_weights does to foreign modules."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
        elif isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.LeakyReLU, nn.SiLU)):
            m.inplace = True


def assert_every_module_gets_gradient(model):
    for p_name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {p_name}"
    for m_name, m in model.named_modules():
        own = list(m.parameters(recurse=False))
        if own:
            assert any(p.grad.abs().sum() > 0 for p in own), f"all-zero gradient in {m_name}"


# ----------------------------------------------------------------------------------------------------------
# Declared outputs
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_declared_channels_and_strides(name):
    model = build(name)
    assert model.feature_channels == VARIANTS[name][1]
    assert model.feature_strides == STRIDES
    declared = {m["name"]: m for m in RECIPE["modules"]}[name]
    assert declared["role"] == "backbone"
    assert tuple(declared["channels"]) == model.feature_channels
    assert tuple(declared["strides"]) == model.feature_strides
    assert count_params(model) == TIMM_FEATURE_PARAMS[name]


@pytest.mark.parametrize("name", LIGHT)
@pytest.mark.parametrize("hw", [(256, 256), (192, 320)])
def test_output_shapes_match_declaration(name, hw):
    model = build(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *hw))
    assert isinstance(out, list)
    assert shapes(out) == expected_shapes(model, 1, *hw)


def test_input_channels_argument():
    model = build("MobileNetV4ConvSmall", c1=1).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 64, 96))
    assert shapes(out) == expected_shapes(model, 1, 64, 96)


# ----------------------------------------------------------------------------------------------------------
# Reference: timm features_only
# ----------------------------------------------------------------------------------------------------------


def _randomise(ref):
    """Give layer scales / BN statistics non-trivial values so every branch shows in the output."""
    g = torch.Generator().manual_seed(1)

    def rand(t, lo, hi):
        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g))

    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):  # timm's BatchNormAct2d is a subclass
                rand(m.weight, 0.5, 1.5)
                rand(m.bias, -0.1, 0.1)
                rand(m.running_mean, -0.1, 0.1)
                rand(m.running_var, 0.5, 1.5)
        for p_name, p in ref.named_parameters():
            if p_name.endswith("gamma"):  # layer scale
                rand(p, 0.5, 1.0)


def _load_timm_weights(model, ref):
    """Both register their tensors in the same order: copy them across positionally, checking shapes."""
    ours, theirs = model.state_dict(), ref.state_dict()
    assert len(ours) == len(theirs)
    mapped = {}
    for (k_ours, v_ours), (k_ref, v_ref) in zip(ours.items(), theirs.items()):
        assert v_ours.shape == v_ref.shape, (k_ours, k_ref)
        mapped[k_ours] = v_ref
    model.load_state_dict(mapped)


@pytest.mark.parametrize(
    "name, hw",
    [
        ("MobileNetV4ConvSmall", (192, 320)),
        ("MobileNetV4ConvMedium", (64, 96)),
        ("MobileNetV4ConvLarge", (64, 96)),
        ("MobileNetV4HybridMedium", (192, 320)),
        ("MobileNetV4HybridLarge", (128, 160)),
    ],
)
def test_matches_timm_features(name, hw):
    """Equal parameter count and outputs, and with the same weights the same feature maps out
    (checks block order, strides, activations and attention, not just the tensor shapes)."""
    ref = timm_features(name).eval()
    model = build(name).eval()
    assert count_params(model) == count_params(ref) == TIMM_FEATURE_PARAMS[name]
    assert list(model.feature_channels) == ref.feature_info.channels()
    assert list(model.feature_strides) == ref.feature_info.reduction()
    _randomise(ref)
    _load_timm_weights(model, ref)
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
    assert shapes(ours) == shapes(theirs) == expected_shapes(model, 1, *hw)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())


# ----------------------------------------------------------------------------------------------------------
# Training-mode robustness (stride probe, initialize_weights side effects, gradients)
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LIGHT)
def test_train_mode_batch1_256_forward_backward_reaches_every_module(name):
    model = build(name).train()
    out = model(torch.zeros(1, 3, 256, 256) + torch.randn(1, 3, 256, 256))
    assert shapes(out) == expected_shapes(model, 1, 256, 256)
    sum(o.float().pow(2).mean() for o in out).backward()
    assert_every_module_gets_gradient(model)


@pytest.mark.parametrize("name", ["MobileNetV4ConvSmall", "MobileNetV4HybridMedium"])
def test_survives_initialize_weights_side_effects(name):
    model = build(name)
    simulate_initialize_weights(model)
    assert any(getattr(m, "inplace", False) for m in model.modules())
    model.train()
    x = torch.randn(2, 3, 192, 320, requires_grad=True)
    out = model(x)
    assert shapes(out) == expected_shapes(model, 2, 192, 320)
    sum(o.mean() for o in out).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert_every_module_gets_gradient(model)


def test_hybrid_large_train_forward_backward_non_square():
    """The heavy variant: one small non-square train-mode step with GELU and attention at both levels."""
    model = build("MobileNetV4HybridLarge")
    simulate_initialize_weights(model)
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    model.train()
    out = model(torch.randn(1, 3, 128, 160))
    assert shapes(out) == expected_shapes(model, 1, 128, 160)
    sum(o.pow(2).mean() for o in out).backward()
    assert_every_module_gets_gradient(model)


# ----------------------------------------------------------------------------------------------------------
# Block-level facts from the paper
# ----------------------------------------------------------------------------------------------------------


def test_uib_variants_are_expressed_by_the_optional_depthwise_convs():
    extra_dw = mnv4.UIB(16, 16, start_k=3, mid_k=5)
    ib = mnv4.UIB(16, 16, start_k=0, mid_k=3)
    convnext = mnv4.UIB(16, 16, start_k=3, mid_k=0)
    ffn = mnv4.UIB(16, 16, start_k=0, mid_k=0, expand=2)
    assert isinstance(extra_dw.dw_start, mnv4.ConvBNAct) and isinstance(extra_dw.dw_mid, mnv4.ConvBNAct)
    assert isinstance(ib.dw_start, nn.Identity) and isinstance(ib.dw_mid, mnv4.ConvBNAct)
    assert isinstance(convnext.dw_start, mnv4.ConvBNAct) and isinstance(convnext.dw_mid, nn.Identity)
    assert isinstance(ffn.dw_start, nn.Identity) and isinstance(ffn.dw_mid, nn.Identity)
    # FFN: two 1x1 convs + BNs only: 16*32 + 32*16 weights, 2*(32+16) BN affine parameters.
    assert count_params(ffn) == 16 * 32 + 32 * 16 + 2 * (32 + 16)
    # A strided ConvNext-like block downsamples in its start depthwise conv.
    y = mnv4.UIB(16, 24, start_k=3, mid_k=0, s=2)(torch.randn(1, 16, 8, 8))
    assert y.shape == (1, 24, 4, 4)


def test_mobile_mqa_shares_one_kv_head_and_downsamples_kv():
    block = mnv4.MobileMQA(64, 64, heads=4, key_dim=16, kv_stride=2, layer_scale=1e-5)
    attn = block.attn
    assert attn.query.out_channels == 4 * 16
    assert attn.key[-1].out_channels == 16 and attn.value[-1].out_channels == 16
    x = torch.randn(1, 64, 6, 10)
    assert attn.key(x).shape[-2:] == (3, 5)
    assert block(x).shape == x.shape
    # Layer scale starts tiny, so the block starts close to identity.
    torch.testing.assert_close(block.eval()(x), x, rtol=0, atol=1e-3)


def test_mobile_mqa_fused_and_explicit_attention_agree(monkeypatch):
    """The fused kernel (eager) and the explicit matmul + softmax (used while tracing for ONNX) compute the
    same attention, so an exported model matches the one that was trained."""
    attn = mnv4.MobileMQA(64, 64, heads=4, key_dim=16, kv_stride=2, layer_scale=None).attn.eval()
    x = torch.randn(2, 64, 6, 10)
    with torch.no_grad():
        fused = attn(x)
        monkeypatch.setattr(mnv4, "_fused_attention", lambda: False)
        explicit = attn(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    assert not torch.equal(fused, torch.zeros_like(fused))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_conv_bn_pair_folds(name):
    """Every conv + BN pair folds. The hybrids' Mobile MQA blocks open with a pre-norm BatchNorm that follows no
    conv (it feeds the query, key and value convs, the last two through a padded depthwise conv), so it is not a
    conv + BN pair and stays."""
    model = build(name)
    pre_norms = {f"{n}.norm" for n, m in model.named_modules() if isinstance(m, mnv4.MobileMQA)}
    assert bool(pre_norms) == ("Hybrid" in name)
    pairs = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) - len(pre_norms)
    assert check_fuses(model, torch.randn(1, 3, 64, 96), allowed_left=pre_norms) == pairs


@pytest.mark.parametrize("name", ["MobileNetV4ConvSmall", "MobileNetV4HybridMedium"])
def test_initialisation_follows_timm(name):
    """timm's scheme: every conv N(0, sqrt(2 / fan_out)) with fan_out divided by the groups (_init_weight_goog),
    then the Mobile MQA projections (query, key / value down-sampling and projection, output) Xavier uniform
    (timm's MultiQueryAttention2d.init_weights); layer scale 1e-5; BatchNorm 1 / 0."""
    model = build(name)
    attention = {id(c) for m in model.modules() if isinstance(m, mnv4.MultiQueryAttention2d)
                 for c in m.modules() if isinstance(c, nn.Conv2d)}
    convs = [(n, c) for n, c in model.named_modules() if isinstance(c, nn.Conv2d)]
    for n, conv in convs:
        if id(conv) in attention:
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(conv.weight)
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert conv.weight.abs().max() <= bound, n
            assert abs(conv.weight.std().item() / (bound / math.sqrt(3)) - 1) < 6 / math.sqrt(2 * conv.weight.numel()) + 0.01, n
        else:
            assert matches_std(conv.weight, goog_std(conv)), n
    assert bool(attention) == ("Hybrid" in name)
    gammas = [m.gamma for m in model.modules() if isinstance(m, mnv4.LayerScale)]
    assert bool(gammas) == ("Hybrid" in name) and all(torch.all(g == 1e-5) for g in gammas)
    assert_batchnorms(model)
