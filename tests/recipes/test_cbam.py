"""Tests of CBAM (recipes/cbam/cbam.py) against timm's CbamModule and the paper's equations 2 and 3."""

import tomllib

import pytest
import torch

import module_checks as checks
from recipe_loader import RECIPES, count_params, load_recipe_module

cbam = load_recipe_module("cbam", "cbam.py")
RECIPE = tomllib.loads((RECIPES / "cbam" / "recipe.toml").read_text())


def cbam_params(c1, hidden, k=7):
    # MLP without biases, 2->1 kxk conv without bias, BatchNorm(1) weight and bias
    return 2 * c1 * hidden + 2 * k * k + 2


# (c1, reduction) -> MLP width by hand: c1/reduction rounded to the nearest integer, at least 1
HIDDEN = {(16, 16): 1, (24, 16): 2, (40, 16): 3, (64, 16): 4, (256, 16): 16, (1024, 16): 64, (64, 8): 8,
          (8, 16): 1}


@pytest.mark.parametrize("c1,reduction", list(HIDDEN))
def test_parameter_count(c1, reduction):
    m = cbam.CBAM(c1, reduction)
    assert m.channel.fc1.out_channels == HIDDEN[c1, reduction]
    assert count_params(m) == cbam_params(c1, HIDDEN[c1, reduction])


@pytest.mark.parametrize("c1,reduction,k", [(16, 16, 7), (24, 16, 7), (64, 16, 7), (256, 16, 7), (64, 8, 3)])
def test_parameter_count_equals_timm(c1, reduction, k):
    from timm.layers.cbam import CbamModule

    ref = CbamModule(c1, rd_ratio=1 / reduction, spatial_kernel_size=k)
    assert count_params(cbam.CBAM(c1, reduction, k)) == count_params(ref)


def test_concrete_parameter_count():
    # CBAM(256): MLP 2 * 256 * 16 = 8_192, spatial conv 2 * 49 = 98, BatchNorm 2
    assert count_params(cbam.CBAM(256)) == 8_292


def timm_state_for(module, ref):
    """timm names the spatial conv+BN `spatial.conv.conv` / `spatial.conv.bn`; ours is a Sequential."""
    state = {k.replace("spatial.conv.conv.", "spatial.conv.0.").replace("spatial.conv.bn.", "spatial.conv.1."): v
             for k, v in ref.state_dict().items()}
    assert set(state) == set(module.state_dict())
    return state


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("c1,reduction,k", [(24, 16, 7), (64, 16, 7), (128, 8, 5)])
def test_outputs_equal_timm_with_copied_weights(c1, reduction, k, mode):
    from timm.layers.cbam import CbamModule

    torch.manual_seed(0)
    ref = CbamModule(c1, rd_ratio=1 / reduction, spatial_kernel_size=k)
    with torch.no_grad():  # non-trivial BatchNorm state so that eval mode is tested too
        bn = ref.spatial.conv.bn
        bn.weight.fill_(1.3), bn.bias.fill_(-0.2), bn.running_mean.fill_(0.1), bn.running_var.fill_(2.0)
    m = cbam.CBAM(c1, reduction, k)
    m.load_state_dict(timm_state_for(m, ref))
    getattr(ref, mode)(), getattr(m, mode)()
    x = torch.randn(2, c1, 9, 7)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)


def test_equations_by_hand():
    """Eq. 2: Mc = sigmoid(W1 relu(W0 avg) + W1 relu(W0 max)); eq. 3: Ms = sigmoid(BN(conv7x7([avg; max])))."""
    torch.manual_seed(0)
    m = cbam.CBAM(8, 4).eval()
    x = torch.randn(1, 8, 5, 6)
    w0, w1 = m.channel.fc1.weight[:, :, 0, 0], m.channel.fc2.weight[:, :, 0, 0]
    flat = x[0].reshape(8, -1)
    avg, mx = flat.sum(1) / 30, flat.max(1).values
    mc = torch.sigmoid(w1 @ torch.relu(w0 @ avg) + w1 @ torch.relu(w0 @ mx))
    f1 = x[0] * mc.view(8, 1, 1)
    pooled = torch.stack((f1.sum(0) / 8, f1.max(0).values))  # (2, 5, 6), mean first
    conv, bn = m.spatial.conv[0], m.spatial.conv[1]
    padded = torch.nn.functional.pad(pooled, (3, 3, 3, 3))
    s = torch.empty(5, 6)
    for i in range(5):
        for j in range(6):
            s[i, j] = (padded[:, i:i + 7, j:j + 7] * conv.weight[0]).sum()
    s = (s - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    expected = f1 * torch.sigmoid(s)
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0], expected, rtol=1e-5, atol=1e-6)


def test_rejects_even_spatial_kernel():
    with pytest.raises(ValueError, match="kernel_size=4"):
        cbam.CBAM(16, 16, 4)


@pytest.mark.parametrize("shape", [(1, 32, 8, 8), (2, 64, 6, 10), (2, 16, 1, 1)])
def test_same_width_shapes(shape):
    m = cbam.CBAM(shape[1])
    for mode in (m.train, m.eval):
        mode()
        assert m(torch.randn(shape)).shape == shape


def test_gradient_reaches_every_parameter():
    checks.assert_every_parameter_gets_gradient(cbam.CBAM(32).train(), torch.randn(2, 32, 8, 8))


def test_survives_initialize_weights():
    checks.assert_survives_initialize_weights(lambda: cbam.CBAM(32), torch.randn(2, 32, 8, 8))


def test_folding_spatial_conv_and_batchnorm():
    checks.assert_folding_keeps_outputs(cbam.CBAM(32), torch.randn(2, 32, 8, 8), expected_pairs=1)


def test_bfloat16():
    checks.assert_bfloat16_works(lambda: cbam.CBAM(64), torch.randn(2, 64, 8, 8))


def test_stride_probe():
    assert checks.stride_probe(lambda: cbam.CBAM(16), 16).shape == (1, 16, 256, 256)


def test_recipe_declares_same_width_module():
    (module,) = RECIPE["modules"]
    assert (module["name"], module["file"], module["role"]) == ("CBAM", "cbam.py", "same-width")
    assert {y["target"] for y in RECIPE["yamls"]} == {"ultralytics", "yolov5"}
    assert all(y["vars"]["module"] == "CBAM" for y in RECIPE["yamls"])
