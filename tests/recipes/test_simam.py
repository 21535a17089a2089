"""Tests of SimAM (recipes/simam/simam.py) against the paper's energy function worked out by hand."""

import math
import tomllib

import pytest
import torch

import module_checks as checks
from recipe_loader import RECIPES, count_params, load_recipe_module

simam = load_recipe_module("simam", "simam.py")
RECIPE = tomllib.loads((RECIPES / "simam" / "recipe.toml").read_text())
LAMBDA = 1e-4


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def minimal_energy(t, values, lam=LAMBDA):
    """The paper's minimal energy of neuron t: 4 (s2 + lam) / ((t - mu)^2 + 2 s2 + 2 lam), with the
    channel's mean and its variance divided by M - 1 (M = number of positions)."""
    mu = sum(values) / len(values)
    s2 = sum((v - mu) ** 2 for v in values) / (len(values) - 1)
    return 4 * (s2 + lam) / ((t - mu) ** 2 + 2 * s2 + 2 * lam)


@pytest.mark.parametrize("c1", [0, 16, 256])
def test_has_no_parameters_buffers_or_submodules(c1):
    m = simam.SimAM(c1)
    assert count_params(m) == 0
    assert not list(m.buffers()) and not list(m.children())


def test_two_by_two_channel_by_hand():
    # channel [[1, 2], [3, 4]]: mu = 2.5, squared deviations 2.25, 0.25, 0.25, 2.25, sigma^2 = 5 / 3
    # t = 1: e = 4 (5/3 + lam) / (2.25 + 10/3 + 2 lam); t = 2: e = 4 (5/3 + lam) / (0.25 + 10/3 + 2 lam)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 5.0], [5.0, 5.0]]]])
    y = simam.SimAM(2)(x)
    s2 = 5 / 3
    e1 = 4 * (s2 + LAMBDA) / (2.25 + 2 * s2 + 2 * LAMBDA)
    e2 = 4 * (s2 + LAMBDA) / (0.25 + 2 * s2 + 2 * LAMBDA)
    expected_first = [[1 * sigmoid(1 / e1), 2 * sigmoid(1 / e2)], [3 * sigmoid(1 / e2), 4 * sigmoid(1 / e1)]]
    torch.testing.assert_close(y[0, 0], torch.tensor(expected_first))
    # a constant channel: no deviation, 1 / e = 0 / (4 lam) + 1/2 everywhere
    torch.testing.assert_close(y[0, 1], torch.full((2, 2), 5 * sigmoid(0.5)))


@pytest.mark.parametrize("e_lambda", [1e-4, 0.1])
def test_random_tensor_against_energy_function(e_lambda):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    y = simam.SimAM(3, e_lambda)(x)
    for b in range(2):
        for c in range(3):
            values = x[b, c].flatten().tolist()
            for i in range(3):
                for j in range(4):
                    t = x[b, c, i, j].item()
                    expected = t * sigmoid(1 / minimal_energy(t, values, e_lambda))
                    assert y[b, c, i, j].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_lambda_matters():
    x = torch.randn(1, 4, 5, 5)
    assert not torch.allclose(simam.SimAM(4, 1e-4)(x), simam.SimAM(4, 10.0)(x))


def test_one_by_one_map_is_finite():
    x = torch.randn(2, 8, 1, 1)
    torch.testing.assert_close(simam.SimAM(8)(x), x * sigmoid(0.5))


@pytest.mark.parametrize("shape", [(1, 32, 8, 8), (2, 64, 6, 10), (2, 16, 1, 1)])
def test_same_width_shapes(shape):
    m = simam.SimAM(shape[1])
    for mode in (m.train, m.eval):
        mode()
        assert m(torch.randn(shape)).shape == shape


def test_gradient_reaches_the_input():
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    checks.random_projection_loss(simam.SimAM(8)(x)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_has_no_batchnorm_to_fold():
    checks.assert_folding_keeps_outputs(simam.SimAM(32), torch.randn(2, 32, 8, 8), expected_pairs=0)


def test_bfloat16():
    checks.assert_bfloat16_works(lambda: simam.SimAM(64), torch.randn(2, 64, 16, 16))


def test_stride_probe():
    assert checks.stride_probe(lambda: simam.SimAM(16), 16).shape == (1, 16, 256, 256)


def test_recipe_declares_same_width_module():
    (module,) = RECIPE["modules"]
    assert (module["name"], module["file"], module["role"]) == ("SimAM", "simam.py", "same-width")
    assert {y["target"] for y in RECIPE["yamls"]} == {"ultralytics", "yolov5"}
    assert all(y["vars"] == {"module": "SimAM", "args": [LAMBDA]} for y in RECIPE["yamls"])
