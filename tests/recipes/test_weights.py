"""Pretrained weights for the backbones with an exact reference (recipes/_shared/yolopatch_weights.py).

For each reference (timm, torchvision, the authors' code): a reference model, randomly initialised, is saved in
every format the loader reads; our backbone loads it by its `weights` argument and returns the reference's
feature maps. timm and torchvision build their own models; for MobileNeXt and RevCol, whose official code is
not a package, the reference's tensor names come from the official code's structure written out here, and the
reference outputs from a functional forward of that structure. Then the three bad cases: a missing file, another
model's checkpoint, a tag not in the cache, each a one-line error naming it.
"""

import functools
import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recipe_loader import RECIPES, load_recipe_module

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
safetensors_torch = pytest.importorskip("safetensors.torch")

FORMATS = ["pth", "pt", "safetensors"]


def randomise(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BatchNorm parameters and statistics and layer scales, so that every tensor shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
        for name, p in model.named_parameters():
            if name.endswith("gamma"):  # layer scale, 1e-5 at initialisation
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
    return model


def save(state: dict, folder, fmt: str):
    """The state dict as a file: a bare .pth, a training-script style {'model': ...} .pt, a .safetensors."""
    path = folder / f"reference.{fmt}"
    state = {k: v.contiguous() for k, v in state.items()}
    if fmt == "safetensors":
        safetensors_torch.save_file(state, str(path))
    elif fmt == "pt":
        torch.save({"epoch": 3, "model": state}, path)
    else:
        torch.save(state, path)
    return path


def shared_helper(module):
    """The yolopatch_weights module a recipe module imports (from the package it was loaded into)."""
    return importlib.import_module(f"{module.__package__}.yolopatch_weights")


def assert_same_features(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(1.0, b.abs().max().item()))


# ----------------------------------------------------------------------------------------------------------
# timm and torchvision references
# ----------------------------------------------------------------------------------------------------------

def timm_features(name, state, **kwargs):
    """timm's own features_only model holding `state` (its classifier head left out)."""
    model = timm.create_model(name, pretrained=False, features_only=True, **kwargs).eval()
    result = model.load_state_dict(state, strict=False)
    assert not result.missing_keys
    return lambda x: model(x)


def torchvision_features(layers, strides):
    """Run an nn.Sequential of torchvision layers; the last output at each of `strides`."""
    def run(x):
        found = {}
        for layer in layers.eval():
            x = layer(x)
            found[128 // x.shape[-1]] = x
        return [found[s] for s in strides]
    return run


def shufflenet_features(tv):
    def run(x):
        outs = [tv.maxpool(tv.conv1(x))]
        for stage in (tv.stage2, tv.stage3, tv.stage4):
            outs.append(stage(outs[-1]))
        return outs
    return run


def tv_model(name, **kwargs):
    return getattr(torchvision.models, name)(weights=None, **kwargs)


# id: (recipe, module file, class, constructor args, make reference -> (state dict, features function))
CASES = {
    "mobilenetv1-timm": ("mobilenetv1", "MobileNetV1", {"act": "relu6"},
                         lambda: _timm("mobilenetv1_100")),
    "mobilenetv2-timm": ("mobilenetv2", "MobileNetV2", {},
                         lambda: _timm("mobilenetv2_100", out_indices=(1, 2, 3, 4))),
    "mobilenetv2-torchvision": ("mobilenetv2", "MobileNetV2", {},
                                lambda: _tv(tv_model("mobilenet_v2"), lambda m: torchvision_features(m.features[:18], (4, 8, 16, 32)))),
    "mobilenetv2x0.5-torchvision": ("mobilenetv2", "MobileNetV2", {"width": 0.5},
                                    lambda: _tv(tv_model("mobilenet_v2", width_mult=0.5), lambda m: torchvision_features(m.features[:18], (4, 8, 16, 32)))),
    "mobilenetv3s-timm": ("mobilenetv3", "MobileNetV3Small", {}, lambda: _timm("mobilenetv3_small_100")),
    "mobilenetv3l-timm": ("mobilenetv3", "MobileNetV3Large", {}, lambda: _timm("mobilenetv3_large_100")),
    "mobilenetv3s-torchvision": ("mobilenetv3", "MobileNetV3Small", {},
                                 lambda: _tv(tv_model("mobilenet_v3_small"), lambda m: torchvision_features(m.features, (2, 4, 8, 16, 32)))),
    "mobilenetv3l-torchvision": ("mobilenetv3", "MobileNetV3Large", {},
                                 lambda: _tv(tv_model("mobilenet_v3_large"), lambda m: torchvision_features(m.features, (2, 4, 8, 16, 32)))),
    "mobilenetv4cs-timm": ("mobilenetv4", "MobileNetV4ConvSmall", {}, lambda: _timm("mobilenetv4_conv_small")),
    "mobilenetv4hm-timm": ("mobilenetv4", "MobileNetV4HybridMedium", {}, lambda: _timm("mobilenetv4_hybrid_medium")),
    "shufflenetv2-torchvision": ("shufflenetv2", "ShuffleNetV2", {},
                                 lambda: _tv(tv_model("shufflenet_v2_x1_0"), shufflenet_features)),
}


@functools.lru_cache(maxsize=None)
def _timm(name, **feature_kwargs):
    torch.manual_seed(0)
    state = randomise(timm.create_model(name, pretrained=False)).state_dict()
    return state, timm_features(name, state, **feature_kwargs), 1e-5


def _tv(model, features):
    torch.manual_seed(0)
    randomise(model).eval()
    eps = next(m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d))  # mobilenet_v3: 1e-3
    return model.state_dict(), features(model), eps


@functools.lru_cache(maxsize=None)
def reference(case):
    """(state dict, features function, BatchNorm eps) of a case's randomly initialised reference."""
    return CASES[case][3]()


def with_eps(model, eps):
    """BatchNorm eps as the reference's (the targets' initialize_weights sets 1e-3, torchvision's MobileNetV3's)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = eps
    return model


def build(case, **kwargs):
    recipe, cls, args, _ = CASES[case]
    module = load_recipe_module(recipe, f"{recipe}.py")
    return getattr(module, cls)(**{**args, **kwargs})


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(CASES))
def test_loads_reference_checkpoint_and_gives_its_features(case, fmt, tmp_path):
    state, features, eps = reference(case)
    path = save(state, tmp_path, fmt)
    model = with_eps(build(case, weights=str(path)), eps).eval()
    assert model.loaded_weights.startswith(str(path.resolve()))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert_same_features(model(x), features(x))


# Every variant's layout names exactly the reference's tensors, with their shapes (no file needed).
LAYOUT_CASES = [
    ("mobilenetv1", "MobileNetV1", {"width": 1.25}, lambda: timm.create_model("mobilenetv1_125"), "timm"),
    ("mobilenetv2", "MobileNetV2", {"width": 1.4}, lambda: timm.create_model("mobilenetv2_140"), "timm"),
    ("mobilenetv2", "MobileNetV2", {"width": 1.4}, lambda: tv_model("mobilenet_v2", width_mult=1.4), "torchvision"),
    ("mobilenetv4", "MobileNetV4ConvMedium", {}, lambda: timm.create_model("mobilenetv4_conv_medium"), "timm"),
    ("mobilenetv4", "MobileNetV4ConvLarge", {}, lambda: timm.create_model("mobilenetv4_conv_large"), "timm"),
    ("mobilenetv4", "MobileNetV4HybridLarge", {}, lambda: timm.create_model("mobilenetv4_hybrid_large"), "timm"),
    ("shufflenetv2", "ShuffleNetV2", {"width": 2.0}, lambda: tv_model("shufflenet_v2_x2_0"), "torchvision"),
]


@pytest.mark.parametrize("recipe, cls, kwargs, reference, layout", LAYOUT_CASES,
                         ids=[f"{c[1]}-{c[4]}-{c[2]}" for c in LAYOUT_CASES])
def test_layout_names_every_reference_tensor(recipe, cls, kwargs, reference, layout):
    module = load_recipe_module(recipe, f"{recipe}.py")
    helper = shared_helper(module)
    with torch.device("meta"):
        model, ref = getattr(module, cls)(**kwargs), reference()
    (name, (names, head)), = [(k, v) for k, v in model.reference_layouts().items() if k.startswith(layout)]
    mapping = helper.expand_names(model, names)
    theirs = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith(head)}
    assert sorted(mapping.values()) == sorted(theirs)
    ours = model.state_dict()
    assert all(ours[k].shape == theirs[r] for k, r in mapping.items())


# ----------------------------------------------------------------------------------------------------------
# MobileNeXt against the authors' code (zhoudaquan/rethinking_bottleneck_design, mobilenext/codebase/models/
# mnext.py): MXNet.features is a Sequential of the stem (conv, BN, ReLU6) and one SGBlock per row of its table,
# each SGBlock.conv a flat Sequential whose layers depend on the block's case.
# ----------------------------------------------------------------------------------------------------------

MNEXT_TABLE = [(2, 96, 1, 2), (6, 144, 1, 1), (6, 192, 3, 2), (6, 288, 3, 2), (6, 384, 4, 1), (6, 576, 4, 2),
               (6, 960, 3, 1), (6, 1280, 1, 1)]


def _divisible(v, d):
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def official_mnext_layers(width=1.0):
    """[(kind, args)] of MXNet.features: ('stem', ...) then ('block', flat layers, identity, stride)."""
    d = 4 if width == 0.1 else 8
    c_in = _divisible(32 * width, d)
    net = [("stem", [("conv", 3, c_in, 3, 2, 1), ("bn", c_in), ("relu6",)])]
    for t, c, n, s in MNEXT_TABLE:
        c_out = 1280 if c == 1280 and width < 1 else _divisible(c * width, d)
        for i in range(n):
            inp, stride, keep = (c_in, s, n == 1 and s == 1) if i == 0 else (c_out, 1, False)
            hidden = inp // t
            if hidden < c_out / 6.0:
                hidden = _divisible(math.ceil(c_out / 6.0), 16)
            dw_in = [("conv", inp, inp, 3, 1, inp), ("bn", inp), ("relu6",)]
            pws = [("conv", inp, hidden, 1, 1, 1), ("bn", hidden), ("conv", hidden, c_out, 1, 1, 1), ("bn", c_out),
                   ("relu6",)]
            dw_out = [("conv", c_out, c_out, 3, stride, c_out), ("bn", c_out)]
            identity = False
            if t == 2:
                layers = dw_in + pws + dw_out
            elif inp != c_out and stride == 1 and not keep:
                layers = pws
            elif inp != c_out and stride == 2 and not keep:
                layers = pws + dw_out
            else:
                identity = not keep
                layers = dw_in + pws + [("conv", c_out, c_out, 3, 1, c_out), ("bn", c_out)]
            net.append(("block", layers, identity))
            c_in = c_out
    return net


def official_mnext_state(width=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, (kind, layers, *_) in enumerate(official_mnext_layers(width)):
        prefix = f"features.{i}." if kind == "stem" else f"features.{i}.conv."
        for j, layer in enumerate(layers):
            if layer[0] == "conv":
                _, c1, c2, k, _, groups = layer
                state[f"{prefix}{j}.weight"] = torch.randn(c2, c1 // groups, k, k, generator=g) * math.sqrt(2 / (k * k * c2))
            elif layer[0] == "bn":
                c = layer[1]
                state[f"{prefix}{j}.weight"] = 0.5 + torch.rand(c, generator=g)
                state[f"{prefix}{j}.bias"] = 0.1 * torch.randn(c, generator=g)
                state[f"{prefix}{j}.running_mean"] = 0.1 * torch.randn(c, generator=g)
                state[f"{prefix}{j}.running_var"] = 0.5 + torch.rand(c, generator=g)
                state[f"{prefix}{j}.num_batches_tracked"] = torch.tensor(7)
    state["classifier.1.weight"] = torch.randn(1000, 1280, generator=g) * 0.01
    state["classifier.1.bias"] = torch.zeros(1000)
    return state


def official_mnext_features(state, x, width=1.0):
    """Functional eval forward of MXNet.features; the output of the last block at strides 4, 8, 16, 32."""
    found = {}
    size = x.shape[-1]
    for i, (kind, layers, *rest) in enumerate(official_mnext_layers(width)):
        prefix = f"features.{i}." if kind == "stem" else f"features.{i}.conv."
        y = x
        for j, layer in enumerate(layers):
            p = f"{prefix}{j}."
            if layer[0] == "conv":
                _, _, _, k, stride, groups = layer
                y = F.conv2d(y, state[p + "weight"], None, stride, k // 2, 1, groups)
            elif layer[0] == "bn":
                y = F.batch_norm(y, state[p + "running_mean"], state[p + "running_var"], state[p + "weight"],
                                 state[p + "bias"], False, 0.0, 1e-5)
            else:
                y = F.relu6(y)
        x = y + x if kind == "block" and rest[0] else y
        found[size // x.shape[-1]] = x
    return [found[s] for s in (4, 8, 16, 32)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_mobilenext_loads_the_authors_checkpoint(fmt, tmp_path):
    mnx = load_recipe_module("mobilenext", "mobilenext.py")
    state = official_mnext_state()
    model = mnx.MobileNeXt(weights=str(save(state, tmp_path, fmt))).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert_same_features(model(x), official_mnext_features(state, x))


@pytest.mark.parametrize("width", [0.5, 1.4])
def test_mobilenext_layout_names_every_official_tensor(width):
    mnx = load_recipe_module("mobilenext", "mobilenext.py")
    helper = shared_helper(mnx)
    with torch.device("meta"):
        model = mnx.MobileNeXt(width=width)
    (names, head), = model.reference_layouts().values()
    state = official_mnext_state(width)
    mapping = helper.expand_names(model, names)
    assert sorted(mapping.values()) == sorted(k for k in state if not k.startswith(head))
    assert all(model.state_dict()[k].shape == state[r].shape for k, r in mapping.items())


# ----------------------------------------------------------------------------------------------------------
# RevCol against the official code (megvii-research/RevCol models/revcol.py, modules.py): FullNet's stem,
# subnet0..N-1 (alpha0..3 and level0..3: Fusion down / up, ConvNextBlocks), plus classification heads and, with
# intermediate supervision, decoders, which a detection backbone leaves out.
# ----------------------------------------------------------------------------------------------------------

REVCOL_TINY = ((64, 128, 256, 512), (2, 2, 4, 2), 4)


def official_revcol_state(channels, layers, columns, seed=0):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape, scale=0.02: scale * torch.randn(*shape, generator=g)  # noqa: E731
    ones = lambda c: 1 + 0.1 * torch.randn(c, generator=g)  # noqa: E731
    state = {"stem.0.weight": rnd(channels[0], 3, 4, 4, scale=0.1), "stem.0.bias": rnd(channels[0]),
             "stem.1.weight": ones(channels[0]), "stem.1.bias": rnd(channels[0])}
    for k in range(columns):
        for i, c in enumerate(channels):
            p = f"subnet{k}."
            state[f"{p}alpha{i}"] = 0.3 + 0.7 * torch.rand(1, c, 1, 1, generator=g)
            lv = f"{p}level{i}."
            if i > 0:
                state[lv + "fusion.down.0.weight"] = rnd(c, channels[i - 1], 2, 2, scale=0.05)
                state[lv + "fusion.down.0.bias"] = rnd(c)
                state[lv + "fusion.down.1.weight"], state[lv + "fusion.down.1.bias"] = ones(c), rnd(c)
            if k > 0 and i < 3:
                state[lv + "fusion.up.channel_reschedule.0.weight"] = rnd(c, channels[i + 1], scale=0.05)
                state[lv + "fusion.up.channel_reschedule.0.bias"] = rnd(c)
                state[lv + "fusion.up.channel_reschedule.1.weight"] = ones(c)
                state[lv + "fusion.up.channel_reschedule.1.bias"] = rnd(c)
            for b in range(layers[i]):
                bl = f"{lv}blocks.{b}."
                state[bl + "dwconv.weight"], state[bl + "dwconv.bias"] = rnd(c, 1, 3, 3, scale=0.2), rnd(c)
                state[bl + "norm.weight"], state[bl + "norm.bias"] = ones(c), rnd(c)
                state[bl + "pwconv1.weight"], state[bl + "pwconv1.bias"] = rnd(4 * c, c, scale=0.05), rnd(4 * c)
                state[bl + "pwconv2.weight"], state[bl + "pwconv2.bias"] = rnd(c, 4 * c, scale=0.05), rnd(c)
                state[bl + "gamma"] = 0.5 + 0.5 * torch.rand(c, generator=g)
    c = channels[-1]  # one of the intermediate-supervision heads: Classifier(LayerNorm, Linear)
    state["cls_blocks.0.classifier.0.weight"], state["cls_blocks.0.classifier.0.bias"] = ones(c), rnd(c)
    state["cls_blocks.0.classifier.1.weight"], state["cls_blocks.0.classifier.1.bias"] = rnd(1000, c), rnd(1000)
    state["decoder_blocks.0.projback.0.weight"] = rnd(48, c, 1, 1)
    return state


def official_revcol_forward(state, x, channels, layers, columns):
    """Functional eval forward of the official FullNet backbone (non-reversible path): the last column."""
    def ln_first(t, p):
        u = t.mean(1, keepdim=True)
        s = (t - u).pow(2).mean(1, keepdim=True)
        t = (t - u) / torch.sqrt(s + 1e-6)
        return state[p + "weight"][:, None, None] * t + state[p + "bias"][:, None, None]

    def block(t, p):
        y = F.conv2d(t, state[p + "dwconv.weight"], state[p + "dwconv.bias"], 1, 1, 1, t.shape[1])
        y = F.layer_norm(y.permute(0, 2, 3, 1), (t.shape[1],), state[p + "norm.weight"], state[p + "norm.bias"], 1e-6)
        y = F.linear(F.gelu(F.linear(y, state[p + "pwconv1.weight"], state[p + "pwconv1.bias"])),
                     state[p + "pwconv2.weight"], state[p + "pwconv2.bias"])
        return t + (state[p + "gamma"] * y).permute(0, 3, 1, 2)

    def level(i, k, c_down, c_up):
        p = f"subnet{k}.level{i}."
        t = c_down
        if i > 0:
            t = ln_first(F.conv2d(c_down, state[p + "fusion.down.0.weight"], state[p + "fusion.down.0.bias"], 2),
                         p + "fusion.down.1.")
        if k > 0 and i < 3:
            u = F.linear(c_up.permute(0, 2, 3, 1), state[p + "fusion.up.channel_reschedule.0.weight"],
                         state[p + "fusion.up.channel_reschedule.0.bias"])
            u = F.layer_norm(u, (u.shape[-1],), state[p + "fusion.up.channel_reschedule.1.weight"],
                             state[p + "fusion.up.channel_reschedule.1.bias"], 1e-6)
            t = t + F.interpolate(u.permute(0, 3, 1, 2), scale_factor=2, mode="nearest")
        for b in range(layers[i]):
            t = block(t, f"{p}blocks.{b}.")
        return t

    x = ln_first(F.conv2d(x, state["stem.0.weight"], state["stem.0.bias"], 4), "stem.1.")
    c = [0, 0, 0, 0]
    for k in range(columns):
        for i in range(4):
            f = level(i, k, x if i == 0 else c[i - 1], c[i + 1] if i < 3 else None)
            c[i] = state[f"subnet{k}.alpha{i}"] * c[i] + f
    return c


@pytest.mark.parametrize("fmt", FORMATS)
def test_revcol_loads_the_official_checkpoint(fmt, tmp_path):
    revcol = load_recipe_module("revcol", "revcol.py")
    state = official_revcol_state(*REVCOL_TINY)
    model = revcol.revcol_tiny(weights=str(save(state, tmp_path, fmt))).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert_same_features(model(x), official_revcol_forward(state, x, *REVCOL_TINY))


# ----------------------------------------------------------------------------------------------------------
# timm tags from the local Hugging Face cache (never downloaded)
# ----------------------------------------------------------------------------------------------------------

def fake_hub_cache(root, repo, state, fmt="safetensors", revision="0123abcd"):
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<rev>/<file>}."""
    folder = root / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    name = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
    if fmt == "safetensors":
        safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / name))
    else:
        torch.save(state, snapshot / name)
    return snapshot / name


@pytest.mark.parametrize("tag", ["mobilenetv2_100.ra_in1k", "timm/mobilenetv2_100.ra_in1k",
                                 "hf-hub:timm/mobilenetv2_100.ra_in1k", "mobilenetv2_100"])
def test_timm_tag_from_the_local_cache(tag, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    state, features, _ = reference("mobilenetv2-timm")
    file = fake_hub_cache(tmp_path, "timm/mobilenetv2_100.ra_in1k", state)
    model = build("mobilenetv2-timm", weights=tag).eval()
    assert model.loaded_weights.startswith("timm/mobilenetv2_100.ra_in1k (")
    assert str(file) in model.loaded_weights and "[timm mobilenetv2]" in model.loaded_weights
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert_same_features(model(x), features(x))


def test_timm_tag_with_a_pytorch_bin_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    state, features, _ = reference("mobilenetv4cs-timm")
    fake_hub_cache(tmp_path / "hf" / "hub", "timm/mobilenetv4_conv_small.e2400_r224_in1k", state, fmt="bin")
    model = build("mobilenetv4cs-timm", weights="mobilenetv4_conv_small.e2400_r224_in1k").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_same_features(model(x), features(x))


# ----------------------------------------------------------------------------------------------------------
# The three bad cases, and what a YAML sees
# ----------------------------------------------------------------------------------------------------------

def one_line_error(build_model, *needles):
    with pytest.raises(ValueError) as err:
        build_model()
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "mobilenet_v2.pth"
    one_line_error(lambda: build("mobilenetv2-torchvision", weights=str(missing)), "MobileNetV2", str(missing),
                   "not found")


def test_another_models_checkpoint_is_named_with_its_keys(tmp_path):
    torch.manual_seed(0)
    path = save(tv_model("mobilenet_v3_small").state_dict(), tmp_path, "pth")
    message = one_line_error(lambda: build("mobilenetv2-torchvision", weights=str(path)), str(path.resolve()),
                             "not a MobileNetV2 checkpoint", "missing key(s)", "unexpected key(s)")
    assert "torchvision mobilenet_v2" in message


def test_another_width_is_named_with_a_shape(tmp_path):
    torch.manual_seed(0)
    path = save(tv_model("mobilenet_v2", width_mult=1.4).state_dict(), tmp_path, "safetensors")
    one_line_error(lambda: build("mobilenetv2-torchvision", weights=str(path)), str(path.resolve()),
                   "of another shape", "features.0.0.weight")


def test_tag_not_in_the_cache_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    one_line_error(lambda: build("mobilenetv4cs-timm", weights="mobilenetv4_conv_small.e2400_r224_in1k"),
                   "MobileNetV4ConvSmall", "mobilenetv4_conv_small.e2400_r224_in1k", "nothing is downloaded",
                   str(tmp_path))


def test_ambiguous_model_name_lists_the_cached_tags(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    state = {"x": torch.zeros(1)}
    for tag in ("e1200_r224_in1k", "e2400_r224_in1k"):
        fake_hub_cache(tmp_path, f"timm/mobilenetv4_conv_small.{tag}", state)
    one_line_error(lambda: build("mobilenetv4cs-timm", weights="mobilenetv4_conv_small"), "several cached",
                   "timm/mobilenetv4_conv_small.e1200_r224_in1k", "timm/mobilenetv4_conv_small.e2400_r224_in1k")


def test_a_pickled_model_is_refused_without_running_it(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(tv_model("mobilenet_v2"), path)
    one_line_error(lambda: build("mobilenetv2-torchvision", weights=str(path)), str(path.resolve()),
                   "weights_only=True")


def test_no_weights_by_default():
    model = build("mobilenetv2-torchvision")
    assert model.loaded_weights is None


# ----------------------------------------------------------------------------------------------------------
# Where the helper lives: one shared file, listed by every backbone recipe that loads weights
# ----------------------------------------------------------------------------------------------------------

WEIGHT_RECIPES = ["mobilenetv1", "mobilenetv2", "mobilenetv3", "mobilenetv4", "mobilenext", "revcol",
                  "shufflenetv2"]


def test_backbone_recipes_ship_the_one_shared_helper():
    from yolopatch.recipes import SHARED_FOLDER, load_recipe

    for name in WEIGHT_RECIPES:
        recipe = load_recipe(RECIPES / name)
        assert "yolopatch_weights.py" in recipe.files and recipe.shared_files == ("yolopatch_weights.py",)
        assert recipe.source_path("yolopatch_weights.py") == RECIPES / SHARED_FOLDER / "yolopatch_weights.py"
        assert "weights" in recipe.notes
    assert not (RECIPES / "mobilenetv2" / "yolopatch_weights.py").exists()


def test_helper_is_plain_torch():
    import ast

    tree = ast.parse((RECIPES / "_shared" / "yolopatch_weights.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "os", "pathlib", "torch", "safetensors"}


def test_two_backbone_recipes_write_the_helper_once_and_revert_keeps_it_while_needed(cli, tmp_path):
    from lookalikes import make_target, tree_snapshot

    root = make_target(tmp_path / "repo", "ul-frozenset")
    pristine = tree_snapshot(root)
    helper = root / "ultralytics" / "nn" / "modules" / "yolopatch_weights.py"
    assert cli("apply", "mobilenetv2", "revcol", "--repo", root)[0] == 0
    assert helper.read_bytes() == (RECIPES / "_shared" / "yolopatch_weights.py").read_bytes()
    assert cli("revert", "mobilenetv2", "--repo", root)[0] == 0
    assert helper.is_file() and (root / "ultralytics" / "nn" / "modules" / "revcol.py").is_file()
    assert cli("revert", "--repo", root)[0] == 0
    assert tree_snapshot(root) == pristine


def test_a_missing_shared_file_is_refused_naming_it(cli, tmp_path):
    from lookalikes import FIXTURE_RECIPES, make_target, tree_snapshot

    user = tmp_path / "recipes" / "toyshared"
    user.mkdir(parents=True)
    toml = (FIXTURE_RECIPES / "toy" / "recipe.toml").read_text().replace('name = "toy"', 'name = "toyshared"')
    toml += '\n[[files]]\nsource = "no_such_helper.py"\nshared = true\n'
    (user / "recipe.toml").write_text(toml)
    for f in (FIXTURE_RECIPES / "toy").glob("*.py"):
        (user / f.name).write_bytes(f.read_bytes())
    root = make_target(tmp_path / "repo", "ul-set")
    before = tree_snapshot(root)
    code, _, err = cli("--recipes-dir", user.parent, "apply", "toyshared", "--repo", root)
    assert code == 3 and "no_such_helper.py" in err and "_shared" in err and len(err.strip().splitlines()) == 1
    assert tree_snapshot(root) == before
