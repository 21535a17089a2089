"""Tests for the RevCol backbone recipe (recipes/revcol/revcol.py)."""

import tomllib

import pytest
import torch
import torch.nn as nn

from fusing import check_fuses
from recipe_loader import RECIPES, count_params, load_recipe_module

R = load_recipe_module("revcol", "revcol.py")

# Variant table of the reference builders (models/revcol.py of megvii-research/RevCol), written out
# here independently of the module: channels, blocks per level, columns.
REFERENCE = {
    "tiny": ((64, 128, 256, 512), (2, 2, 4, 2), 4),
    "small": ((64, 128, 256, 512), (2, 2, 4, 2), 8),
    "base": ((72, 144, 288, 576), (1, 1, 3, 2), 16),
    "large": ((128, 256, 512, 1024), (1, 2, 6, 2), 8),
    "xlarge": ((224, 448, 896, 1792), (1, 2, 6, 2), 8),
}
# Published ImageNet-1k model sizes (README of the official repository), in millions. They are rounded
# and include a 1000-class head (LayerNorm + Linear on the last level).
PUBLISHED_M = {"tiny": 30, "small": 60, "base": 138, "large": 273}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # The test machines share few cores; intra-op threads then mostly wait on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def analytic_params(channels, layers, columns, c1=3, k=3):
    """Parameter count of the backbone written out from the architecture description."""
    block = lambda c: (k * k * c + c) + 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c) + c  # noqa: E731
    stem = c1 * 16 * channels[0] + channels[0] + 2 * channels[0]
    per_column = sum(n * block(c) for c, n in zip(channels, layers))
    down = sum(4 * channels[i - 1] * channels[i] + channels[i] + 2 * channels[i] for i in range(1, 4))
    up = sum(channels[i + 1] * channels[i] + channels[i] + 2 * channels[i] for i in range(3))
    alphas = sum(channels)
    # The first column has no up-fusion and no alphas (it has no previous column).
    return stem + columns * (per_column + down) + (columns - 1) * (up + alphas)


def build(name, meta=False, **kw):
    cls = getattr(R, f"revcol_{name}")
    if meta:  # parameters without storage: counts only, no memory or init time
        with torch.device("meta"):
            return cls(**kw)
    return cls(**kw)


@pytest.mark.parametrize("name", ["tiny", "small", "base", "large", "xlarge"])
def test_param_count_matches_analytic_formula(name):
    model = build(name, meta=True)
    channels, layers, columns = REFERENCE[name]
    n = count_params(model)
    print(f"revcol_{name}: {n:,} parameters")
    assert n == analytic_params(channels, layers, columns)
    assert model.feature_channels == channels
    assert model.num_subnet == columns


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_param_count_near_published(name):
    n = count_params(build(name, meta=True))
    c_last = REFERENCE[name][0][-1]
    head = 2 * c_last + c_last * 1000 + 1000
    published = PUBLISHED_M[name] * 1_000_000
    low, high = published - 500_000 - head, published + 500_000
    print(f"revcol_{name}: backbone {n / 1e6:.2f}M, +1k head {(n + head) / 1e6:.2f}M, published {published / 1e6:.0f}M")
    assert low <= n <= high


def test_defaults():
    model = build("tiny", meta=True)
    assert model.save_memory is False
    assert model.feature_strides == (4, 8, 16, 32)
    assert model.feature_channels == (64, 128, 256, 512)
    rates = [b.drop_path.p for b in model.subnet1.modules() if isinstance(b, R.ConvNeXtBlock)
             and isinstance(b.drop_path, R.DropPath)]
    assert max(rates) == pytest.approx(0.1)  # reference default for tiny
    assert not hasattr(model.subnet0, "alpha0") and hasattr(model.subnet1, "alpha0")


def _check_shapes(model, outs, h, w):
    assert len(outs) == len(model.feature_channels)
    for o, c, s in zip(outs, model.feature_channels, model.feature_strides):
        assert tuple(o.shape) == (o.shape[0], c, h // s, w // s)


def test_train_forward_256_batch1():
    torch.manual_seed(0)
    model = build("tiny").train()
    outs = model(torch.zeros(1, 3, 256, 256))
    _check_shapes(model, outs, 256, 256)
    assert all(torch.isfinite(o).all() for o in outs)


def test_shapes_non_square_and_channels():
    torch.manual_seed(0)
    model = build("tiny", c1=4).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 4, 192, 320))
    _check_shapes(model, outs, 192, 320)


def _randomize(model):
    """Make every branch matter: the default layer scale (1e-6) would hide most of a level's effect."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, R.ConvNeXtBlock):
                m.gamma.uniform_(0.2, 1.0)
            if isinstance(m, R.SubNet):
                for a in m.alphas:
                    a.uniform_(0.3, 1.0)


def _run(model, x, save_memory, seed=123):
    model.save_memory = save_memory
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)  # same drop-path masks in both runs
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = model(x)
    weights = [torch.linspace(0.5, 1.5, o.numel(), dtype=o.dtype).view_as(o) for o in outs]
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    grads["<input>"] = x.grad.clone()
    return [o.detach() for o in outs], grads, sum(saved), outs[0].grad_fn


def _max_rel_error(ref, got):
    """Worst over tensors of max|ref - got| / max|ref|."""
    assert ref.keys() == got.keys()
    return max((ref[k] - got[k]).abs().max().item() / (ref[k].abs().max().item() + 1e-30) for k in ref)


def test_reversible_gradients_equal_plain_with_drop_path(monkeypatch):
    # float64 so that the comparison measures the algorithm, not float32 round-off of the inversion.
    torch.manual_seed(0)
    model = build("tiny", drop_path=0.5).double().train()
    _randomize(model)
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    outs_a, grads_a, saved_a, _ = _run(model, x, save_memory=False)
    outs_b, grads_b, saved_b, fn_b = _run(model, x, save_memory=True)
    assert "ReversibleColumn" in type(fn_b).__name__  # the custom function really ran
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(grads_a) == len(list(model.parameters())) + 1
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-5, atol=1e-8, msg=k)
    # Memory: the reversible path keeps only the column outputs (plus the stem's inputs).
    print(f"saved tensor elements: plain {saved_a:,}, reversible {saved_b:,}")
    assert saved_b < 0.2 * saved_a

    # Control: without restoring the RNG, drop path draws other masks while recomputing and the
    # gradients come out wrong, so the comparison above really exercises the RNG restore.
    monkeypatch.setattr(R, "_rng_restore", lambda snapshot, devices: None)
    _, grads_c, _, _ = _run(model, x, save_memory=True)
    assert _max_rel_error(grads_a, grads_c) > 1e-2


def test_reversible_float32_at_default_init():
    """In float32 the inversion adds round-off only, far below the gradient scale."""
    torch.manual_seed(0)
    model = build("tiny").train()  # default drop path 0.1, layer scale 1e-6, alpha 0.5
    x = torch.randn(2, 3, 64, 96)
    _, grads_a, _, _ = _run(model, x, save_memory=False)
    _, grads_b, _, _ = _run(model, x, save_memory=True)
    err = _max_rel_error(grads_a, grads_b)
    print(f"float32 worst relative gradient error: {err:.2e}")
    assert err < 1e-4


def _initialize_weights_like_targets(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
        elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
            m.inplace = True


def test_inplace_activations_and_every_parameter_gets_gradient():
    torch.manual_seed(0)
    model = build("tiny", drop_path=0.0).train()
    _initialize_weights_like_targets(model)
    outs = model(torch.randn(1, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_reversible_with_inplace_activations():
    """Swap in activations the targets make in-place; both paths must still agree."""
    torch.manual_seed(0)
    model = build("tiny", drop_path=0.2).double().train()
    for i, block in enumerate(b for b in model.modules() if isinstance(b, R.ConvNeXtBlock)):
        block.act = nn.SiLU() if i % 2 else nn.ReLU()
    _initialize_weights_like_targets(model)
    assert all(m.inplace for m in model.modules() if isinstance(m, (nn.SiLU, nn.ReLU)))
    _randomize(model)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    outs_a, grads_a, _, _ = _run(model, x, save_memory=False)
    outs_b, grads_b, _, _ = _run(model, x, save_memory=True)
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-5, atol=1e-8, msg=k)


def test_no_grad_forward_skips_reversible_function():
    model = build("tiny", save_memory=True).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert outs[0].grad_fn is None
    _check_shapes(model, outs, 64, 64)


def test_recipe_toml_declares_module_outputs():
    recipe = tomllib.loads((RECIPES / "revcol" / "recipe.toml").read_text())
    assert recipe["targets"] == ["yolov5", "ultralytics"]
    declared = {m["name"]: m for m in recipe["modules"]}
    assert set(declared) == {f"revcol_{n}" for n in REFERENCE}
    for name, entry in declared.items():
        assert entry["role"] == "backbone" and entry["file"] == "revcol.py"
        model = build(name.removeprefix("revcol_"), meta=True)
        assert tuple(entry["channels"]) == model.feature_channels == REFERENCE[name.removeprefix("revcol_")][0]
        assert tuple(entry["strides"]) == model.feature_strides
    assert {y["name"] for y in recipe["yamls"]} == {"yolov8-revcol", "rtdetr-revcol", "yolov5s-revcol"}
    assert all(y["vars"]["backbone"] == "revcol_tiny" for y in recipe["yamls"])


def test_nothing_to_fold():
    """RevCol normalises with LayerNorm only: no BatchNorm, so fuse() has nothing to do and changes nothing."""
    torch.manual_seed(0)
    model = build("tiny", drop_path=0.0)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert check_fuses(model, torch.randn(1, 3, 64, 64)) == 0
