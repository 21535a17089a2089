"""Tests of the Squeeze-and-Excitation block (recipes/se/se.py).

Reference: timm's SEModule (the SE block of timm's seresnet* models: 1x1 convs with biases, ReLU,
sigmoid gate, bottleneck = c1/16 rounded to a multiple of 8) and torchvision.ops.SqueezeExcitation
(same computation, bottleneck width given explicitly).
"""

import tomllib

import pytest
import torch
from torch import nn

import module_checks as checks
from recipe_loader import RECIPES, count_params, load_recipe_module

se = load_recipe_module("se", "se.py")
RECIPE = tomllib.loads((RECIPES / "se" / "recipe.toml").read_text())


def se_params(c1, hidden):
    return c1 * hidden + hidden + hidden * c1 + c1  # reduce conv + bias, expand conv + bias


# (c1, reduction) -> bottleneck width, worked out by hand: c1/r rounded to the nearest multiple of 8, >= 8
HIDDEN = {(16, 16): 8, (64, 16): 8, (160, 16): 8, (192, 16): 16, (256, 16): 16, (320, 16): 24,
          (512, 16): 32, (1024, 16): 64, (72, 4): 16, (96, 4): 24, (128, 8): 16}


@pytest.mark.parametrize("c1,reduction", list(HIDDEN))
def test_bottleneck_width_and_parameter_count(c1, reduction):
    m = se.SE(c1, reduction)
    hidden = HIDDEN[c1, reduction]
    assert m.fc1.out_channels == hidden
    assert count_params(m) == se_params(c1, hidden)


@pytest.mark.parametrize("c1,reduction", list(HIDDEN))
def test_parameter_count_equals_timm(c1, reduction):
    from timm.layers import SEModule

    assert count_params(se.SE(c1, reduction)) == count_params(SEModule(c1, rd_ratio=1 / reduction))


def test_concrete_parameter_counts():
    # SE(256): 256*16 + 16 + 16*256 + 256 = 8_464; SE(1024): 1024*64 + 64 + 64*1024 + 1024 = 132_160
    assert count_params(se.SE(256)) == 8_464
    assert count_params(se.SE(1024)) == 132_160


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("c1,reduction", [(64, 16), (160, 16), (256, 16), (72, 4)])
def test_outputs_equal_timm_with_copied_weights(c1, reduction, mode):
    from timm.layers import SEModule

    torch.manual_seed(0)
    ref = SEModule(c1, rd_ratio=1 / reduction)
    m = se.SE(c1, reduction)
    m.load_state_dict(ref.state_dict())
    getattr(ref, mode)(), getattr(m, mode)()
    x = torch.randn(2, c1, 7, 9)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("c1", [32, 256])
def test_outputs_equal_torchvision_squeeze_excitation(c1):
    from torchvision.ops import SqueezeExcitation

    torch.manual_seed(0)
    m = se.SE(c1)
    ref = SqueezeExcitation(c1, m.fc1.out_channels)
    m.load_state_dict(ref.state_dict())
    x = torch.randn(2, c1, 5, 6)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)


def test_equals_every_se_block_inside_timm_seresnet50():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    blocks = [b for b in timm.create_model("seresnet50").modules() if type(b).__name__ == "SEModule"]
    assert len(blocks) == 16
    for block in blocks[:: 5]:  # one per stage width (256, 512, 1024, 2048 channels)
        c1 = block.fc1.in_channels
        m = se.SE(c1)
        assert count_params(m) == count_params(block)
        m.load_state_dict(block.state_dict())
        x = torch.randn(1, c1, 4, 4)
        torch.testing.assert_close(m(x), block(x), rtol=1e-5, atol=1e-6)


def test_formula_by_hand():
    """x * sigmoid(W2 relu(W1 mean(x) + b1) + b2), with each channel's mean taken by hand."""
    torch.manual_seed(0)
    m = se.SE(16).eval()
    x = torch.randn(1, 16, 3, 4)
    means = torch.tensor([x[0, c].sum().item() / 12 for c in range(16)])
    hidden = torch.relu(m.fc1.weight[:, :, 0, 0] @ means + m.fc1.bias)
    gate = torch.sigmoid(m.fc2.weight[:, :, 0, 0] @ hidden + m.fc2.bias)
    with torch.no_grad():
        torch.testing.assert_close(m(x), x * gate.view(1, 16, 1, 1))


@pytest.mark.parametrize("shape", [(1, 32, 8, 8), (2, 64, 6, 10), (2, 24, 1, 1)])
def test_same_width_shapes(shape):
    m = se.SE(shape[1])
    for mode in (m.train, m.eval):
        mode()
        assert m(torch.randn(shape)).shape == shape


def test_gradient_reaches_every_parameter():
    checks.assert_every_parameter_gets_gradient(se.SE(32).train(), torch.randn(2, 32, 8, 8))


def test_survives_initialize_weights():
    assert any(isinstance(m, nn.ReLU) for m in se.SE(32).modules())
    checks.assert_survives_initialize_weights(lambda: se.SE(32), torch.randn(2, 32, 8, 8))


def test_has_no_batchnorm_to_fold():
    checks.assert_folding_keeps_outputs(se.SE(32), torch.randn(2, 32, 8, 8), expected_pairs=0)


def test_bfloat16():
    checks.assert_bfloat16_works(lambda: se.SE(64), torch.randn(2, 64, 8, 8))


def test_stride_probe():
    assert checks.stride_probe(lambda: se.SE(16), 16).shape == (1, 16, 256, 256)


def test_recipe_declares_same_width_module():
    (module,) = RECIPE["modules"]
    assert (module["name"], module["file"], module["role"]) == ("SE", "se.py", "same-width")
    assert {y["target"] for y in RECIPE["yamls"]} == {"ultralytics", "yolov5"}
    assert all(y["vars"]["module"] == "SE" for y in RECIPE["yamls"])
