"""Tests for the timm backbone recipe (recipes/timm/timm_backbone.py)."""

import tomllib

import pytest
import torch
import torch.nn as nn

from recipe_loader import RECIPES, count_params, load_recipe_module

timm = pytest.importorskip("timm")
T = load_recipe_module("timm", "timm_backbone.py")

MODELS = ["resnet18", "mobilenetv3_large_100", "efficientnet_b0"]
INPLACE_TYPES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.LeakyReLU, nn.SiLU)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # The test machines share few cores; intra-op threads then mostly wait on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def emulate_initialize_weights(model):
    """What the targets' initialize_weights does to foreign modules."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
        elif isinstance(m, INPLACE_TYPES):
            m.inplace = True


@pytest.mark.parametrize("name", MODELS)
def test_param_count_equals_timm_features_only(name):
    ours = T.TimmBackbone(3, name, False, [1, 2, 3, 4])
    ref = timm.create_model(name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
    print(f"{name}: {count_params(ours):,} parameters (timm features_only: {count_params(ref):,})")
    assert count_params(ours) == count_params(ref)
    assert ours.feature_channels == tuple(ref.feature_info.channels())


@pytest.mark.parametrize("name", MODELS)
def test_declared_outputs_match_real_shapes(name):
    model = T.TimmBackbone(3, name).eval()
    strides = model.feature_strides
    assert strides == (4, 8, 16, 32)
    assert all(s & (s - 1) == 0 for s in strides)
    with torch.no_grad():
        for h, w in ((256, 256), (192, 320)):
            outs = model(torch.randn(1, 3, h, w))
            assert isinstance(outs, list) and len(outs) == len(model.feature_channels)
            for o, c, s in zip(outs, model.feature_channels, strides):
                assert tuple(o.shape) == (1, c, h // s, w // s)


@pytest.mark.parametrize("name", MODELS)
def test_train_forward_backward_after_initialize_weights(name):
    torch.manual_seed(0)
    model = T.TimmBackbone(3, name).train()
    with torch.no_grad():
        # timm zero-initialises the last norm of residual branches (no gradient reaches the convs
        # before it on the first step); give them a trained-like scale so reachability is visible.
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and not m.weight.any():
                m.weight.fill_(1.0)
    emulate_initialize_weights(model)
    assert any(m.inplace for m in model.modules() if isinstance(m, INPLACE_TYPES))
    outs = model(torch.randn(1, 3, 256, 256))
    for o, c, s in zip(outs, model.feature_channels, model.feature_strides):
        assert tuple(o.shape) == (1, c, 256 // s, 256 // s)
    sum(o.square().mean() for o in outs).backward()
    for mod_name, mod in model.named_modules():
        params = list(mod.parameters(recurse=False))
        if params:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), mod_name


def test_input_channels_and_out_indices():
    model = T.TimmBackbone(1, "resnet18", False, (2, 3, 4))
    assert model.feature_channels == (128, 256, 512)
    assert model.feature_strides == (8, 16, 32)
    with torch.no_grad():
        outs = model.eval()(torch.randn(1, 1, 64, 96))
    assert [tuple(o.shape[1:]) for o in outs] == [(128, 8, 12), (256, 4, 6), (512, 2, 3)]


def test_unknown_model_name():
    with pytest.raises(ValueError, match="no model named"):
        T.TimmBackbone(3, "resnet_does_not_exist")


def test_pretrained_download_failure_is_explained(monkeypatch):
    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("network is unreachable")
        raise AssertionError("only the pretrained path is exercised here")

    monkeypatch.setattr(T.timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="pretrained=False") as info:
        T.TimmBackbone(3, "resnet18", True)
    assert "pre-download" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_non_power_of_two_strides_rejected():
    # A plain ViT keeps stride 16 at every block: not a feature pyramid.
    with pytest.raises(ValueError, match="powers of two"):
        T.TimmBackbone(3, "vit_tiny_patch16_224", False, (1, 2, 3))


def test_recipe_toml():
    recipe = tomllib.loads((RECIPES / "timm" / "recipe.toml").read_text())
    assert recipe["requires"] == ["timm"]
    assert recipe["targets"] == ["yolov5", "ultralytics"]
    (module,) = recipe["modules"]
    assert module["name"] == "TimmBackbone" and module["role"] == "backbone"
    default = T.TimmBackbone()
    assert tuple(module["channels"]) == default.feature_channels
    assert tuple(module["strides"]) == default.feature_strides
    yamls = {y["name"]: y for y in recipe["yamls"]}
    assert set(yamls) == {"yolov8-timm", "rtdetr-timm", "yolov5s-timm"}
    for y in yamls.values():
        assert y["vars"] == {"backbone": "TimmBackbone", "args": ["resnet18", False, [1, 2, 3, 4]]}
        model = T.TimmBackbone(3, *y["vars"]["args"])
        assert model.feature_strides == (4, 8, 16, 32)


def _runtime_fold():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "yolopatch" / "runtime" / "yolopatch_fuse.py"
    spec = importlib.util.spec_from_file_location("yolopatch_fuse_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_statistics(model):
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


@pytest.mark.parametrize("name", MODELS)
def test_patched_fuse_folds_every_batchnorm_and_keeps_the_outputs(name):
    runtime = _runtime_fold()
    m = T.TimmBackbone(3, name).eval()
    _random_statistics(m)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expected = m(x)
    norms = sum(isinstance(k, nn.BatchNorm2d) for k in m.modules())
    assert runtime.fold_batchnorms(m, (T.TimmBackbone,)) == norms > 0
    assert not any(isinstance(k, nn.BatchNorm2d) for k in m.modules())
    with torch.no_grad():
        for got, want in zip(m(x), expected):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


class _SharedConvOutput(nn.Module):
    """A conv whose output feeds its BatchNorm and a residual sum: folding would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.conv(x)
        return [self.bn(y) + y]


def test_a_conv_output_used_elsewhere_is_left_unfolded():
    runtime = _runtime_fold()
    m = T.TimmBackbone(3, "resnet18").eval()
    m.model = _SharedConvOutput().eval()
    _random_statistics(m)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = m(x)[0]
        assert runtime.fold_batchnorms(m, (T.TimmBackbone,)) == 0
        torch.testing.assert_close(m(x)[0], expected)
    assert isinstance(m.model.bn, nn.BatchNorm2d) and m.model.conv.bias is None
