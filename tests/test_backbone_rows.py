"""The support module's row alignment, in a look-alike of the targets' forward loop (no real target):
YAML row i is layer i with `.i == i`, the placeholders carry no parameters and keep nothing between
forwards (deepcopy and pickling after a training forward), and the outputs equal those of the same
network written as plain rows."""

import copy
import importlib.util
import io
import pickle
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "recipes" / "toy"))


def _load_support():
    spec = importlib.util.spec_from_file_location("yolopatch_support", ROOT / "yolopatch" / "runtime" / "yolopatch_support.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["yolopatch_support"] = module  # pickling finds the placeholder class here
    spec.loader.exec_module(module)
    return module


support = _load_support()
from toy import ToyBackbone, conv_bn_act  # noqa: E402  (the fixture recipe's module: strides 4..32)


class Undeclared(nn.Module):
    """A tutorial-style backbone: three outputs (strides 8, 16, 32), no declared channels or strides."""

    def __init__(self, c1=3):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(c1, 8, 3, 2), conv_bn_act(8, 8, 3, 2), conv_bn_act(8, 12, 3, 2))
        self.down = nn.ModuleList([conv_bn_act(12, 20, 3, 2), conv_bn_act(20, 24, 3, 2)])

    def forward(self, x):
        outs = [self.stem(x)]
        for layer in self.down:
            outs.append(layer(outs[-1]))
        return outs


class Cat(nn.Module):
    def forward(self, xs):
        return torch.cat(xs, 1)


class Pick(nn.Module):  # stands in for the head: returns its inputs
    def forward(self, xs):
        return xs


def build(rows):
    """A parse_model look-alike with the three statements yolopatch adds (rows: (from, module, c1 or None))."""
    layers, save, ch = [], [], [3]
    backbone_extra_rows = 0
    for i, (f, make) in enumerate(rows):
        i += backbone_extra_rows
        m_ = make(ch, f)
        c2 = None if hasattr(m_, "forward_is_backbone") else getattr(m_, "c2", None)
        m_.i, m_.f, m_.type, m_.np = i, f, type(m_).__name__, sum(p.numel() for p in m_.parameters())
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(m_)
        if i == 0:
            ch = []
        ch.append(c2)
        backbone_extra_rows += support.claim_backbone_rows(m_, ch, layers, [3])
    return nn.Sequential(*layers), sorted(save), ch


class Model(nn.Module):
    def __init__(self, rows):
        super().__init__()
        self.model, self.save, self.ch = build(rows)

    def forward(self, x):  # the shape of every release's loop, with the statement after the save step
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
            x = support.route_backbone_levels(m, x, y, self.save)
        return x


def backbone(cls):
    def make(ch, f):
        module = cls(ch[f])
        module.forward_is_backbone = True
        return module
    return make


def layer(factory, c2):
    def make(ch, f):
        module = factory(ch, f)
        module.c2 = c2(ch, f)
        return module
    return make


def tutorial_rows(backbone_cls):
    """Rows in the tutorials' convention: the backbone fills rows 0-4, the rows after it read rows 2-4."""
    return [
        (-1, backbone(backbone_cls)),
        (-1, layer(lambda ch, f: conv_bn_act(ch[f], 32, 1, 1), lambda ch, f: 32)),   # 5, from P5
        (-1, layer(lambda ch, f: nn.Upsample(scale_factor=2), lambda ch, f: ch[f])),  # 6
        ([-1, 3], layer(lambda ch, f: Cat(), lambda ch, f: sum(ch[x] for x in f))),  # 7: with P4
        ([2, 7, 4], layer(lambda ch, f: Pick(), lambda ch, f: 0)),                    # 8: the "head" inputs
    ]


def test_row_i_is_layer_i_and_placeholders_hold_no_parameters():
    model = Model(tutorial_rows(ToyBackbone))
    assert [m.i for m in model.model] == list(range(len(model.model)))
    assert [type(m).__name__ for m in model.model][:6] == ["ToyBackbone"] + ["BackboneLevel"] * 4 + ["Sequential"]
    levels = model.model[1:5]
    assert [m.level for m in levels] == [1, 2, 3, 4] and [m.f for m in levels] == [0] * 4
    assert all(m.np == 0 and not list(m.parameters()) and m.backbone is model.model[0] for m in levels)
    assert model.ch[:5] == [0, 16, 32, 64, 128]  # channels per row: row 0 (stride 2) is empty
    # the backbone's parameters appear once, under row 0 (so freeze=5 freezes rows 0-4)
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(set(names))
    assert {name.split(".")[1] for name in names if name.split(".")[1] in "01234"} == {"0"}


def test_outputs_are_the_backbone_levels_and_nothing_stays_on_the_modules():
    torch.manual_seed(0)
    model = Model(tutorial_rows(ToyBackbone))
    x = torch.rand(2, 3, 64, 96)
    features = model(x)
    outs = model.model[0](x)
    assert [f.shape[1] for f in features] == [32, 32 + 64, 128]
    assert torch.equal(features[0], outs[1]) and torch.equal(features[2], outs[3])  # rows 2 and 4: strides 8, 32
    assert torch.equal(features[1][:, 32:], outs[2])  # row 3 (stride 16), concatenated at row 7
    # a training forward keeps non-leaf tensors alive only in its own y: deepcopy (EMA) and pickling work
    loss = sum(f.sum() for f in features)
    loss.backward()
    copy.deepcopy(model)
    pickle.loads(pickle.dumps(model))
    restored = torch.load(io.BytesIO(_saved(model)), weights_only=False)
    assert restored.model[1].backbone is restored.model[0]
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(restored(x), model(x)))


def _saved(model) -> bytes:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def test_same_outputs_as_the_network_written_as_plain_rows():
    """The tutorial-convention model computes exactly what the same network computes as ordinary rows
    (the stride-2 stem conv as row 0, one conv per level after it), for the same seed."""
    torch.manual_seed(0)
    aligned = Model(tutorial_rows(ToyBackbone))
    plain_rows = [
        (-1, layer(lambda ch, f: conv_bn_act(ch[f], 16, 3, 2), lambda ch, f: 16)),
        (-1, layer(lambda ch, f: conv_bn_act(ch[f], 16, 3, 2), lambda ch, f: 16)),
        (-1, layer(lambda ch, f: conv_bn_act(ch[f], 32, 3, 2), lambda ch, f: 32)),
        (-1, layer(lambda ch, f: conv_bn_act(ch[f], 64, 3, 2), lambda ch, f: 64)),
        (-1, layer(lambda ch, f: conv_bn_act(ch[f], 128, 3, 2), lambda ch, f: 128)),
        *tutorial_rows(ToyBackbone)[1:],
    ]
    torch.manual_seed(0)
    plain = Model(plain_rows)
    assert [m.i for m in plain.model] == [m.i for m in aligned.model]
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(aligned(x), plain(x)))


def test_an_undeclared_backbone_is_measured_and_its_empty_rows_are_zero_channel_maps():
    model = Model(tutorial_rows(Undeclared))
    bb = model.model[0]
    assert bb.feature_channels == (12, 20, 24) and bb.feature_strides == (8, 16, 32)
    assert model.ch[:5] == [0, 0, 12, 20, 24]
    assert bb.training  # measured in eval mode, handed back in train mode
    y = []
    x = torch.rand(1, 3, 64, 64)
    out = bb(x)
    y.append(None)
    first = support.route_backbone_levels(bb, out, y, model.save)
    assert first.shape == (1, 0, 1, 1)  # row 0 (stride 2) is not an output: 0 channels, nothing to show
    assert [t.shape[1] for t in y[0]] == [0, 0, 12, 20, 24]


def test_claim_leaves_every_other_row_alone():
    ch, layers = [3, 16], [nn.Identity()]
    assert support.claim_backbone_rows(layers[0], ch, layers, [3]) == 0
    assert ch == [3, 16] and len(layers) == 1


def test_a_backbone_returning_the_wrong_number_of_outputs_is_named():
    model = Model(tutorial_rows(ToyBackbone))
    with pytest.raises(ValueError, match="ToyBackbone returned 3 outputs but declares 4"):
        support.route_backbone_levels(model.model[0], [torch.zeros(1)] * 3, [None], [])


def test_traced_model_equals_eager():
    torch.manual_seed(0)
    model = Model(tutorial_rows(ToyBackbone)).eval()
    x = torch.rand(1, 3, 64, 64)
    traced = torch.jit.trace(model, x, strict=False, check_trace=False)
    other = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(traced(other), model(other)))
