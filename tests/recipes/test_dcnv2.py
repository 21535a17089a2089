"""DCNv2 (recipes/dcnv2/dcnv2.py) against torchvision.ops.DeformConv2d with copied weights, against the regular
conv it starts as (zero-initialised offsets, modulation sigmoid(0) = 0.5), and against bilinear sampling worked
out by hand for whole- and half-pixel offsets."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d, deform_conv2d

from module_checks import (assert_every_parameter_gets_gradient, batchnorms, fold_conv_bn, random_projection_loss,
                           randomise_batchnorms)
from recipe_loader import count_params, emulate_initialize_weights, load_recipe_module

dcn = load_recipe_module("dcnv2", "dcnv2.py")

CONFIGS = [  # c1, c2, k, s, p, g, d, deform_groups
    (8, 16, 3, 1, None, 1, 1, 1),
    (8, 16, 3, 2, None, 1, 1, 1),
    (8, 12, 5, 1, None, 2, 1, 2),
    (6, 8, 3, 1, None, 1, 2, 1),
    (4, 8, 1, 1, None, 1, 1, 1),
]


def build(c1, c2, k, s, p, g, d, dg):
    return dcn.DCNv2(c1, c2, k, s, p, g, d, True, dg)


def randomise_offsets(m, scale=1.0, seed=0):
    """Offsets of a few pixels (fractional, some out of the image) and modulation away from 0.5."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.conv_offset.weight.copy_(torch.randn(m.conv_offset.weight.shape, generator=g) * 0.3 * scale)
        m.conv_offset.bias.copy_(torch.randn(m.conv_offset.bias.shape, generator=g) * scale)
    return m


@pytest.mark.parametrize("cfg", CONFIGS)
def test_parameter_count(cfg):
    c1, c2, k, s, p, g, d, dg = cfg
    # deformable kernel (no bias: BN follows) + offset/mask conv (3 k^2 per deformable group, with bias) + BN
    expected = c2 * (c1 // g) * k * k + (3 * dg * k * k) * (c1 * k * k + 1) + 2 * c2
    assert count_params(build(*cfg)) == expected
    ref = DeformConv2d(c1, c2, k, s, d * (k - 1) // 2, d, g, bias=False)
    assert count_params(build(*cfg)) == count_params(ref) + count_params(build(*cfg).conv_offset) + 2 * c2


@pytest.mark.parametrize("cfg", CONFIGS)
def test_equals_torchvision_deformconv2d_with_copied_weights(cfg):
    c1, c2, k, s, p, g, d, dg = cfg
    torch.manual_seed(0)
    m = randomise_batchnorms(randomise_offsets(build(*cfg))).eval()
    ref = DeformConv2d(c1, c2, k, s, d * (k - 1) // 2, d, g, bias=False)
    ref.weight.data.copy_(m.conv.weight)
    x = torch.randn(2, c1, 12, 20)
    with torch.no_grad():
        offset, mask = m.offset_and_mask(x)
        assert offset.abs().max() > 1 and (mask - 0.5).abs().max() > 0.2  # really deformed and modulated
        expected = ref(x, offset, mask)
        torch.testing.assert_close(m.deform(x), expected)
        torch.testing.assert_close(m(x), F.silu(m.bn(expected)))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_zero_initialised_offsets_give_half_the_regular_conv(cfg):
    """Offsets and mask logits start at zero (paper, mmcv): dp = 0, dm = sigmoid(0) = 0.5, so the deformable conv
    is 0.5 x the regular conv with the same kernel."""
    c1, c2, k, s, p, g, d, dg = cfg
    m = build(*cfg).eval()
    x = torch.randn(2, c1, 12, 20)
    with torch.no_grad():
        offset, mask = m.offset_and_mask(x)
        assert torch.count_nonzero(offset) == 0 and torch.all(mask == 0.5)
        regular = F.conv2d(x, m.conv.weight, None, s, d * (k - 1) // 2, d, g)
        torch.testing.assert_close(m.deform(x), 0.5 * regular)
        # the mask is what halves it: a modulation of 1 gives the regular conv itself
        full = deform_conv2d(x, offset, m.conv.weight, None, stride=s, padding=d * (k - 1) // 2, dilation=d,
                             mask=torch.ones_like(mask))
        torch.testing.assert_close(full, regular)


def set_offsets(m, dy, dx, mask_logit):
    """Every kernel position of every deformable group gets offset (dy, dx) and modulation sigmoid(mask_logit).
    torchvision reads the offset channels as (dy, dx) pairs per kernel position; our offset is the first two
    thirds of conv_offset's output, in order."""
    kk2 = m.conv_offset.out_channels // 3 * 2
    with torch.no_grad():
        m.conv_offset.weight.zero_()
        m.conv_offset.bias[0:kk2:2] = dy
        m.conv_offset.bias[1:kk2:2] = dx
        m.conv_offset.bias[kk2:] = mask_logit


def test_whole_pixel_offset_samples_the_shifted_image():
    """dy = dx = 1 everywhere: y(p0) = sum_k w_k x(p0 + p_k + (1, 1)), the regular conv of the image moved up and
    left by one pixel (zeros beyond the bottom/right edge); mask logit 0 halves it."""
    m = dcn.DCNv2(4, 6, 3).eval()
    set_offsets(m, 1.0, 1.0, 0.0)
    x = torch.randn(1, 4, 9, 11)
    with torch.no_grad():
        expected = 0.5 * F.conv2d(F.pad(x, (0, 2, 0, 2)), m.conv.weight)
        torch.testing.assert_close(m.deform(x), expected)


def test_half_pixel_offset_is_bilinear_interpolation():
    """dy = 0.5: every sample is the mean of the two vertically neighbouring pixels (bilinear), so the output is
    the mean of the regular conv and the conv of the image moved up one row."""
    m = dcn.DCNv2(4, 6, 3).eval()
    set_offsets(m, 0.5, 0.0, 30.0)  # sigmoid(30) = 1 within float precision
    x = torch.randn(1, 4, 9, 11)
    with torch.no_grad():
        regular = F.conv2d(x, m.conv.weight, padding=1)
        moved_up = F.conv2d(F.pad(x, (1, 1, 0, 2)), m.conv.weight)
        torch.testing.assert_close(m.deform(x), 0.5 * (regular + moved_up))


@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("hw", [(32, 32), (64, 96)])
def test_shapes_like_conv(s, hw):
    m = dcn.DCNv2(16, 32, 3, s).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 16, *hw)).shape == (1, 32, hw[0] // s, hw[1] // s)


@pytest.mark.parametrize("s", [1, 2])
def test_train_mode_batch1_256_and_gradients_after_initialize_weights(s):
    """The offset conv starts at zero yet gets a gradient from the first step (bilinear sampling is
    differentiable in the offsets), and in-place SiLU changes nothing."""
    reference = dcn.DCNv2(8, 16, 3, s).train()
    patched = emulate_initialize_weights(copy.deepcopy(reference))
    assert patched.act.inplace
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    x = torch.randn(1, 8, 256, 256)
    y_p, y_r = patched(x), reference(x)
    assert y_p.shape == (1, 16, 256 // s, 256 // s)
    torch.testing.assert_close(y_p, y_r)
    random_projection_loss(y_p).backward()
    random_projection_loss(y_r).backward()
    for (name, p), q in zip(patched.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert_every_parameter_gets_gradient(patched)


def test_fuse_folds_the_batchnorm_into_the_deformable_kernel():
    m = randomise_batchnorms(randomise_offsets(dcn.DCNv2(16, 32, 3, 2))).eval()
    x = torch.randn(1, 16, 32, 32)
    with torch.no_grad():
        before = m(x)
        assert fold_conv_bn(m) == 1
        after = m(x)
    assert batchnorms(m) == [] and m.conv.bias is not None
    assert (after - before).abs().max() < 1e-4


def test_torchvision_has_no_bfloat16_cpu_kernel():
    """Why DCNv2 samples bfloat16 inputs in float32 (the recipe notes say so)."""
    x = torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="BFloat16"):
        deform_conv2d(x, torch.zeros(1, 18, 8, 8, dtype=torch.bfloat16), torch.randn(6, 4, 3, 3, dtype=torch.bfloat16),
                      padding=1, mask=torch.ones(1, 9, 8, 8, dtype=torch.bfloat16))


def test_bfloat16_autocast_and_bfloat16_weights():
    m = randomise_offsets(dcn.DCNv2(16, 32, 3, 2), scale=0.3).eval()
    x = torch.randn(1, 16, 32, 32)
    with torch.no_grad():
        exact = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = m(x)
            mixed_bf16_input = m(x.to(torch.bfloat16))  # what a preceding autocast conv hands over
        half = copy.deepcopy(m).to(torch.bfloat16)(x.to(torch.bfloat16))
    for y in (mixed, mixed_bf16_input, half):
        assert y.shape == exact.shape and torch.isfinite(y).all()
        assert (y.float() - exact).abs().max() < 0.05 * exact.abs().max()
    assert half.dtype == torch.bfloat16 and mixed_bf16_input.dtype == torch.bfloat16


@pytest.mark.filterwarnings("ignore")
def test_torchscript_onnx_exporter_has_no_symbolic_for_deform_conv2d():
    """What verify's export step meets on the targets (their exporters use dynamo=False): torchvision registers no
    ONNX symbolic for deform_conv2d, at any opset. The recipe notes say so."""
    m = dcn.DCNv2(4, 8, 3).eval()
    with pytest.raises(Exception, match="torchvision::deform_conv2d"):
        torch.onnx.export(m, (torch.randn(1, 4, 16, 16),), io.BytesIO(), opset_version=19, dynamo=False)


def test_nan_input_gives_nan_output_and_does_not_crash_the_process():
    """YOLOv5 profiles every new model on torch.empty input; NaN offsets made torchvision's CPU kernel read
    out of bounds and the interpreter died. Run in a subprocess so a crash fails the test, not the suite."""
    import subprocess
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "recipes" / "dcnv2"
    script = (f"import sys, torch; sys.path.insert(0, {str(folder)!r}); from dcnv2 import DCNv2\n"
              "m = DCNv2(16, 16, 3, 2).eval()\n"
              "x = torch.full((2, 16, 32, 32), float('nan')); x[1] = 1.0\n"
              "with torch.no_grad(): y = m(x)\n"
              "print(bool(torch.isnan(y[0]).all()), bool(torch.isfinite(y[1]).all()))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    assert done.stdout.split() == ["True", "True"]
