"""The conv + BatchNorm folding written into patched targets (yolopatch/runtime/yolopatch_fuse.py), on our own
small modules: folded convs compute bn(conv(x)), both declared structures are folded inside the given classes
only, and what cannot be folded is left as it is."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

RUNTIME = Path(__file__).resolve().parents[1] / "yolopatch" / "runtime" / "yolopatch_fuse.py"


@pytest.fixture(scope="module")
def fuse():
    spec = importlib.util.spec_from_file_location("yolopatch_fuse_under_test", RUNTIME)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomised(bn: nn.BatchNorm2d, seed: int) -> nn.BatchNorm2d:
    """Statistics and affine parameters far from their initial values, so a wrong formula shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 3 + 0.1)
        if bn.affine:
            bn.weight.copy_(torch.randn(bn.num_features, generator=g))
            bn.bias.copy_(torch.randn(bn.num_features, generator=g))
    return bn.eval()


@pytest.mark.parametrize("kwargs", [
    {"bias": False},
    {"bias": True},
    {"bias": False, "groups": 4},
    {"bias": True, "stride": 2, "dilation": 2, "padding": 2},
    {"bias": False, "padding": "same", "padding_mode": "reflect"},
])
@pytest.mark.parametrize("affine", [True, False])
def test_folded_conv_computes_bn_of_conv(fuse, kwargs, affine):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, **{"padding": 1, **kwargs})
    bn = _randomised(nn.BatchNorm2d(12, affine=affine, eps=1e-3), seed=1)
    x = torch.randn(2, 8, 11, 13)
    with torch.no_grad():
        expected = bn(conv(x))
        fused = fuse.fold_conv_bn(conv, bn)
        actual = fused(x)
    assert fused.bias is not None and not fused.weight.requires_grad
    assert (fused.stride, fused.dilation, fused.groups, fused.padding, fused.padding_mode) == (
        conv.stride, conv.dilation, conv.groups, conv.padding, conv.padding_mode)
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-5), (actual - expected).abs().max()


def test_batchnorm_without_running_statistics_is_not_foldable(fuse):
    conv = nn.Conv2d(4, 4, 3, padding=1)
    assert fuse.foldable(conv, nn.BatchNorm2d(4))
    assert not fuse.foldable(conv, nn.BatchNorm2d(4, track_running_stats=False))
    assert not fuse.foldable(conv, nn.BatchNorm2d(5))                    # another width
    assert not fuse.foldable(nn.ConvTranspose2d(4, 4, 3), nn.BatchNorm2d(4))


class Unit(nn.Module):
    """The YOLO Conv protocol: conv, bn, act, forward and forward_fuse."""

    def __init__(self, c1, c2, seed):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 3, 1, 1, bias=False)
        self.bn = _randomised(nn.BatchNorm2d(c2), seed)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.act(self.conv(x))


class NewBlock(nn.Module):
    """One of each: a unit, a sequence with two pairs, and two BatchNorms no conv precedes."""

    def __init__(self):
        super().__init__()
        self.unit = Unit(3, 8, seed=2)
        self.seq = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), _randomised(nn.BatchNorm2d(8), 3), nn.ReLU(),
                                 nn.Conv2d(8, 8, 1), _randomised(nn.BatchNorm2d(8), 4))
        self.pre_norm = nn.Sequential(_randomised(nn.BatchNorm2d(8), 5), nn.Conv2d(8, 8, 1))
        self.after_add = _randomised(nn.BatchNorm2d(8), 6)

    def forward(self, x):
        x = self.seq(self.unit(x))
        return self.after_add(x + self.pre_norm(x))


class StockBlock(nn.Module):
    """Stands for a module of the target itself: never folded by this code."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), _randomised(nn.BatchNorm2d(8), 7))

    def forward(self, x):
        return self.seq(x)


def _norms(module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def test_folds_both_structures_inside_the_new_classes_only(fuse):
    torch.manual_seed(0)
    model = nn.Sequential(NewBlock(), StockBlock()).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected, stock_expected = model(x), model[1](model[0](x))
    folded = fuse.fold_batchnorms(model, (NewBlock,))
    assert folded == 3                                   # the unit's and both of the sequence's
    new, stock = model
    assert not hasattr(new.unit, "bn") and new.unit.forward == new.unit.forward_fuse
    assert [type(m).__name__ for m in new.seq] == ["Conv2d", "Identity", "ReLU", "Conv2d", "Identity"]
    assert _norms(new) == 2 and isinstance(new.pre_norm[0], nn.BatchNorm2d) and isinstance(new.after_add, nn.BatchNorm2d)
    assert _norms(stock) == 1
    with torch.no_grad():
        actual = model(x)
        assert torch.equal(model[1](model[0](x)), actual)
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-5), (actual - expected).abs().max()
    assert torch.equal(stock_expected, expected)        # the stock block computes bit-identically
    assert fuse.fold_batchnorms(model, (NewBlock,)) == 0   # a second fuse() has nothing left to fold


def test_no_classes_fold_nothing(fuse):
    model = nn.Sequential(NewBlock()).eval()
    assert fuse.fold_batchnorms(model, ()) == 0
    assert _norms(model) == 5


def test_nested_new_classes_are_folded_once(fuse):
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = NewBlock()

        def forward(self, x):
            return self.inner(x)

    model = nn.Sequential(Outer()).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    assert fuse.fold_batchnorms(model, (Outer, NewBlock)) == 3
    with torch.no_grad():
        assert torch.allclose(model(x), expected, rtol=1e-4, atol=1e-5)
