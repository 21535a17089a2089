"""The amp and fuse steps of the verify runner on our own small models (no target): which layer a low-precision
forward blames, how the synthetic batch is cut to one image, and what the fuse step reports."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from yolopatch.verify.protocol import StepFailure
from yolopatch.verify.runner.amp import DtypeTrace, _low_precision_forward, first_image, layer_label
from yolopatch.verify.runner.fuse import batchnorms, fuse_step
from yolopatch.verify.runner.layers import NewModule

RUNTIME = Path(__file__).resolve().parents[1] / "yolopatch" / "runtime" / "yolopatch_fuse.py"


def _runtime():
    spec = importlib.util.spec_from_file_location("yolopatch_fuse_for_steps", RUNTIME)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Rows(nn.Module):
    """Stands for a target's model: `model` holds the rows, each with its row number `i`; fuse() is the
    patched one (the target's loop, then the folding of the new classes)."""

    def __init__(self, *layers, new=()):
        super().__init__()
        self.model = nn.Sequential(*layers)
        for k, layer in enumerate(self.model):
            layer.i = k
        self.stride = torch.tensor([8.0, 16.0, 32.0])
        self.new_classes = tuple(new)

    def forward(self, x):
        return self.model(x)

    def fuse(self, verbose=True):
        _runtime().fold_batchnorms(self.model, self.new_classes)
        return self


class Stage(nn.Module):
    def __init__(self, c1=3, c2=8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c1, c2, 3, 2, 1, bias=False), nn.BatchNorm2d(c2), nn.SiLU())

    def forward(self, x):
        return self.body(x)


class Float32Stage(Stage):
    """Adds a coordinate-like tensor made in the default dtype: a low-precision input comes out float32."""

    def forward(self, x):
        return self.body(x) + torch.zeros(1, 1, 1, 1)


class PreNormStage(Stage):
    """A BatchNorm that no conv precedes: nothing can fold it."""

    def __init__(self):
        super().__init__(8, 8)
        self.norm = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.body(self.norm(x))


class DroppingUnit(nn.Module):
    """The Conv protocol with a forward_fuse that forgets the activation."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.conv(x)


def _news(model):
    return [NewModule(k, k, layer) for k, layer in enumerate(model.model) if type(layer) in model.new_classes]


def _trained_stats(model):
    """BatchNorm statistics away from their initial values, as after training."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64) * 3 + 1)
    return model.eval()


def test_low_precision_forward_names_the_float32_layer_and_the_one_that_raises():
    torch.manual_seed(0)
    model = Rows(Stage(3, 8), Float32Stage(8, 8), Stage(8, 8), new=(Float32Stage,))
    with pytest.raises(StepFailure) as failure:
        _low_precision_forward(model, _news(model), "cpu", torch.bfloat16)
    message = str(failure.value)
    assert "fails in Stage (row 2): body.0 (Conv2d): RuntimeError" in message
    assert message.endswith("first float32 output from bfloat16 input: Float32Stage (row 1)")


def test_low_precision_forward_passes_a_clean_model():
    model = Rows(Stage(3, 8), Stage(8, 8), new=(Stage,))
    assert _low_precision_forward(model, _news(model), "cpu", torch.bfloat16) == "bfloat16 forward runs, finite outputs"


class CastingRows(Rows):
    """Each row's output cast back to the input's dtype, as a stock layer that returns float32 harmlessly
    (RT-DETR's decoder does) leaves the next layer a low-precision input."""

    def forward(self, x):
        for layer in self.model:
            x = layer(x).to(x.dtype)
        return x


def test_trace_prefers_a_new_module_over_an_earlier_stock_one():
    model = CastingRows(Float32Stage(3, 8), Float32Stage(8, 8)).to(torch.bfloat16)
    trace = DtypeTrace(model, torch.bfloat16, new_prefixes=["model.1"])
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32, dtype=torch.bfloat16))
    trace.remove()
    assert (trace.first_fp32, trace.first_new_fp32, trace.suspect) == ("model.0", "model.1", "model.1")
    assert layer_label(model, "model.0.body.1") == "Float32Stage (row 0): body.1 (BatchNorm2d)"
    assert layer_label(model, "model.1") == "Float32Stage (row 1)"


def test_first_image_of_each_label_format():
    imgs = torch.rand(2, 3, 8, 8)
    rows = torch.tensor([[0, 1, .5, .5, .2, .2], [1, 0, .3, .3, .1, .1], [0, 2, .6, .6, .2, .2]])
    one, cut = first_image(imgs, rows)
    assert one.shape[0] == 1 and cut[:, 1].tolist() == [1.0, 2.0]
    labels = {"batch_idx": torch.tensor([0.0, 0.0, 1.0, 1.0]), "cls": torch.tensor([[0.0], [1.0], [2.0], [0.0]]),
              "bboxes": torch.rand(4, 4), "masks": torch.rand(2, 2, 2), "keypoints": torch.rand(4, 5, 3)}
    _, cut = first_image(imgs, labels)
    assert cut["batch_idx"].tolist() == [0.0, 0.0] and cut["cls"].flatten().tolist() == [0.0, 1.0]
    assert cut["bboxes"].shape == (2, 4) and cut["keypoints"].shape == (2, 5, 3) and cut["masks"].shape == (1, 2, 2)
    _, cut = first_image(imgs, {"cls": torch.tensor([1, 0])})     # classification: one label per image
    assert cut["cls"].tolist() == [1]


def test_fuse_step_passes_when_every_pair_folds():
    torch.manual_seed(0)
    model = _trained_stats(Rows(Stage(3, 8), Stage(8, 8), new=(Stage,)))
    message = fuse_step(model, _news(model), "detect")
    assert message.startswith("fuse() folded all 2 BatchNorm layer(s) of new modules; every row's output equals")
    assert batchnorms(model) == []


def test_fuse_step_names_batchnorms_left_and_the_row_that_changes():
    torch.manual_seed(0)
    model = _trained_stats(Rows(Stage(3, 8), PreNormStage(), DroppingUnit(), Stage(8, 8),
                                new=(Stage, PreNormStage, DroppingUnit)))
    with pytest.raises(StepFailure) as failure:
        fuse_step(model, _news(model), "detect")
    message = str(failure.value)
    assert message.startswith("1 of 5 BatchNorm layer(s) of new modules left after fuse(): PreNormStage (row 1): norm;")
    assert "fuse() changes what the model computes: row 2 (DroppingUnit) output 0 differs from the unfused eval " \
           "model's output" in message


def test_fuse_step_reports_an_unpatched_fuse():
    model = _trained_stats(Rows(Stage(3, 8), new=(Stage,)))
    model.new_classes = ()      # a fuse() that folds nothing of the new modules
    model_news = [NewModule(0, 0, model.model[0])]
    with pytest.raises(StepFailure, match=r"^1 of 1 BatchNorm layer\(s\) of new modules left after fuse\(\): "
                                          r"Stage \(row 0\): body\.1$"):
        fuse_step(model, model_news, "detect")


class Overflow(nn.Module):
    """Returns values beyond the floating-point range: non-finite outputs from finite inputs."""

    def forward(self, x):
        return (x * 1e30) * (x * 1e30)


def test_non_finite_outputs_fail_when_a_new_module_makes_them_and_are_noted_otherwise():
    model = Rows(Stage(3, 8), Overflow(), new=(Overflow,))
    with pytest.raises(StepFailure, match=r"gives non-finite outputs: Overflow \(row 1\) is the first to return them"):
        _low_precision_forward(model, _news(model), "cpu", torch.bfloat16)
    model.new_classes = (Stage,)
    message = _low_precision_forward(model, _news(model), "cpu", torch.bfloat16)
    assert message == ("bfloat16 forward runs; its output turns non-finite in Overflow (row 1), a module of the "
                       "target itself, from finite inputs (not caused by the new modules)")


def test_fuse_step_reports_but_passes_batchnorms_left_in_the_users_added_modules():
    """A module file the user added (a local recipe) is folded as far as its structure allows; a BatchNorm its
    structure keeps is named in the message, not a failure. The same module from a shipped recipe fails."""
    from yolopatch.verify.protocol import ModuleDeclaration

    for local in (True, False):
        torch.manual_seed(0)
        model = _trained_stats(Rows(Stage(3, 8), PreNormStage(), Stage(8, 8), new=(Stage, PreNormStage)))
        news = [NewModule(n.position, n.row, n.layer, ModuleDeclaration("same-width", recipe="r", local=local))
                for n in _news(model)]
        if local:
            message = fuse_step(model, news, "detect")
            assert message.startswith("fuse() folded 3 of 4 BatchNorm layer(s) of new modules; left in your added "
                                      "modules, whose structure fuse() cannot fold")
            assert "PreNormStage (row 1): norm; every row's output equals the unfused eval model's" in message
        else:
            with pytest.raises(StepFailure, match=r"^1 of 4 BatchNorm layer\(s\) of new modules left after fuse"):
                fuse_step(model, news, "detect")
