"""Tests of ECA (recipes/eca/eca.py) against timm's EcaModule and the paper's adaptive kernel size."""

import tomllib

import pytest
import torch

import module_checks as checks
from recipe_loader import RECIPES, count_params, load_recipe_module

eca = load_recipe_module("eca", "eca.py")
RECIPE = tomllib.loads((RECIPES / "eca" / "recipe.toml").read_text())

# k = |log2(C)/2 + 1/2| made odd, at least 3, worked out by hand:
# C=64: 3.5 -> 3; C=127: 3.49 -> 3; C=128: 4.0 -> 5; C=1024: 5.5 -> 5; C=2048: 6.0 -> 7; C=8: 2.0 -> 3
KERNELS = {8: 3, 16: 3, 64: 3, 127: 3, 128: 5, 256: 5, 512: 5, 1024: 5, 2047: 5, 2048: 7}


@pytest.mark.parametrize("c1", list(KERNELS))
def test_adaptive_kernel_size_and_parameter_count(c1):
    m = eca.ECA(c1)
    assert m.conv.kernel_size == (KERNELS[c1],)
    assert m.conv.padding == ((KERNELS[c1] - 1) // 2,)
    assert count_params(m) == KERNELS[c1]


def test_kernel_size_equals_timm_for_every_width():
    from timm.layers import EcaModule

    for c1 in range(1, 4097, 7):
        assert eca.ECA(c1).conv.kernel_size == EcaModule(c1).conv.kernel_size, c1


def test_gamma_and_b_arguments():
    # gamma=1, b=1, C=64: |6 + 1| = 7 -> 7; gamma=3, b=3, C=512: |(9 + 3) / 3| = 4 -> 5
    assert eca.ECA(64, 1, 1).conv.kernel_size == (7,)
    assert eca.ECA(512, 3, 3).conv.kernel_size == (5,)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("c1", [32, 128, 2048])
def test_outputs_equal_timm_with_copied_weights(c1, mode):
    from timm.layers import EcaModule

    torch.manual_seed(0)
    ref = EcaModule(c1)
    m = eca.ECA(c1)
    assert count_params(m) == count_params(ref)
    m.load_state_dict(ref.state_dict())
    getattr(ref, mode)(), getattr(m, mode)()
    x = torch.randn(2, c1, 5, 7)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)


def test_formula_by_hand():
    """Gate of channel i = sigmoid(sum_j w_j * mean_{i+j-(k-1)/2}), zero beyond the first and last channel."""
    torch.manual_seed(0)
    m = eca.ECA(128)  # k = 5
    x = torch.randn(1, 128, 3, 3)
    w = m.conv.weight[0, 0]
    means = [x[0, c].sum().item() / 9 for c in range(128)]
    gates = []
    for i in range(128):
        s = sum(w[j].item() * means[i + j - 2] for j in range(5) if 0 <= i + j - 2 < 128)
        gates.append(torch.sigmoid(torch.tensor(s)))
    with torch.no_grad():
        torch.testing.assert_close(m(x), x * torch.stack(gates).view(1, 128, 1, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 32, 8, 8), (2, 256, 6, 10), (2, 16, 1, 1)])
def test_same_width_shapes(shape):
    m = eca.ECA(shape[1])
    for mode in (m.train, m.eval):
        mode()
        assert m(torch.randn(shape)).shape == shape


def test_gradient_reaches_every_parameter():
    checks.assert_every_parameter_gets_gradient(eca.ECA(32).train(), torch.randn(2, 32, 8, 8))


def test_survives_initialize_weights():
    checks.assert_survives_initialize_weights(lambda: eca.ECA(32), torch.randn(2, 32, 8, 8))


def test_has_no_batchnorm_to_fold():
    checks.assert_folding_keeps_outputs(eca.ECA(32), torch.randn(2, 32, 8, 8), expected_pairs=0)


def test_bfloat16():
    checks.assert_bfloat16_works(lambda: eca.ECA(128), torch.randn(2, 128, 8, 8))


def test_stride_probe():
    assert checks.stride_probe(lambda: eca.ECA(16), 16).shape == (1, 16, 256, 256)


def test_recipe_declares_same_width_module():
    (module,) = RECIPE["modules"]
    assert (module["name"], module["file"], module["role"]) == ("ECA", "eca.py", "same-width")
    assert {y["target"] for y in RECIPE["yamls"]} == {"ultralytics", "yolov5"}
    assert all(y["vars"]["module"] == "ECA" for y in RECIPE["yamls"])
