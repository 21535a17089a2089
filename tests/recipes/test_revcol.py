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
    # The first column has no up-fusion (it has no previous column) but, as in the reference, its alphas.
    return stem + columns * (per_column + down + alphas) + (columns - 1) * up


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


# Drop-path rates of the reference's COCO configs (Detection/configs/revcol/cascade_mask_rcnn_revcol_*_3x_*.py);
# xlarge has none and keeps its model builder's default.
REFERENCE_DROP_PATH = {"tiny": 0.3, "small": 0.4, "base": 0.4, "large": 0.5, "xlarge": 0.5}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_defaults(name):
    model = build(name, meta=True)
    assert model.save_memory is True  # the reference configs' SAVEMM and the paper's memory claim
    assert model.feature_strides == (4, 8, 16, 32)
    assert model.feature_channels == REFERENCE[name][0]
    rates = [b.drop_path.p for b in model.subnet1.modules() if isinstance(b, R.ConvNeXtBlock)
             and isinstance(b.drop_path, R.DropPath)]
    assert max(rates) == pytest.approx(REFERENCE_DROP_PATH[name])
    # The first column holds its four alphas, frozen (they scale a previous column that does not exist).
    assert [a.requires_grad for a in model.subnet0.alphas] == [False] * 4
    assert [a.requires_grad for a in model.subnet1.alphas] == [True] * 4


def official_keys(name):
    """Parameter and buffer names of the reference backbone (megvii-research/RevCol models/revcol.py:
    FullNet's stem and subnets, without the classification / decoder heads), written out from its structure."""
    channels, layers, columns = REFERENCE[name]
    keys = {"stem.0.weight", "stem.0.bias", "stem.1.weight", "stem.1.bias"}
    for k in range(columns):
        for i in range(4):
            col = f"subnet{k}"
            keys.add(f"{col}.alpha{i}")
            lvl = f"{col}.level{i}"
            if i > 0:
                keys |= {f"{lvl}.fusion.down.0.weight", f"{lvl}.fusion.down.0.bias",
                         f"{lvl}.fusion.down.1.weight", f"{lvl}.fusion.down.1.bias"}
            if k > 0 and i < 3:
                keys |= {f"{lvl}.fusion.up.channel_reschedule.{j}.{t}" for j in (0, 1) for t in ("weight", "bias")}
            for b in range(layers[i]):
                blk = f"{lvl}.blocks.{b}"
                keys |= {f"{blk}.{m}.{t}" for m in ("dwconv", "norm", "pwconv1", "pwconv2") for t in ("weight", "bias")}
                keys.add(f"{blk}.gamma")
    return keys


@pytest.mark.parametrize("name", list(REFERENCE))
def test_state_dict_keys_are_the_reference_ones(name):
    model = build(name, meta=True)
    assert set(model.state_dict()) == official_keys(name)
    assert tuple(model.subnet0.alpha0.shape) == (1, REFERENCE[name][0][0], 1, 1)


@pytest.mark.parametrize("save_memory", [False, True])
def test_first_column_alphas_do_not_change_the_output(save_memory):
    torch.manual_seed(0)
    model = build("tiny", drop_path=0.0, save_memory=save_memory).train()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)  # with gradients, so save_memory takes the reversible path
    before = [o.detach() for o in model(x)]
    with torch.no_grad():
        for a in model.subnet0.alphas:
            a.uniform_(-3.0, 3.0)
    after = [o.detach() for o in model(x)]
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("save_memory", [False, True])
def test_first_column_alphas_unfrozen_by_a_trainer_get_zero_gradients(save_memory):
    """ultralytics' and YOLOv5's trainers set requires_grad on every parameter; DDP without
    find_unused_parameters then needs each of them in the graph: they get the reference's zero gradient."""
    torch.manual_seed(0)
    model = build("tiny", drop_path=0.0, save_memory=save_memory).train()
    for p in model.parameters():
        p.requires_grad_(True)
    outs = model(torch.randn(1, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    for a in model.subnet0.alphas:
        assert a.grad is not None and torch.count_nonzero(a.grad) == 0
    assert all(torch.count_nonzero(a.grad) > 0 for a in model.subnet1.alphas)


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
    assert len(grads_a) == sum(p.requires_grad for p in model.parameters()) + 1
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
    model = build("tiny").train()  # default drop path 0.3, layer scale 1e-6, alpha 0.5
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
        if p.requires_grad:  # all but the first column's frozen alphas
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert name.startswith("subnet0.alpha") and p.grad is None, name


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
