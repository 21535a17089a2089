"""Tests of DySample (recipes/dysample/dysample.py).

Reference: the paper's sampling formulation worked out below pixel by pixel (offsets from a 1x1 conv,
added to the initial sub-pixel positions, bilinear sampling clamped at the border), the identity
"zero offsets = bilinear upsampling" the paper builds on, and the parameter counts of the authors'
module definition (tiny-smart/dysample dysample.py, newest version: the scope conv has no bias).
"""

import io
import tomllib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import module_checks as checks
from recipe_loader import RECIPES, count_params, load_recipe_module

dys = load_recipe_module("dysample", "dysample.py")
RECIPE = tomllib.loads((RECIPES / "dysample" / "recipe.toml").read_text())
CONFIGS = [("lp", False), ("lp", True), ("pl", False), ("pl", True)]


def authors_params(c1, scale=2, style="lp", groups=4, dyscope=False):
    if style == "pl":
        c_in, c_out = c1 // scale ** 2, 2 * groups
    else:
        c_in, c_out = c1, 2 * groups * scale ** 2
    return c_in * c_out + c_out + (c_in * c_out if dyscope else 0)   # offset conv (+ bias), scope conv


@pytest.mark.parametrize("c1,scale,groups", [(64, 2, 4), (128, 2, 4), (256, 2, 4), (256, 2, 8), (72, 3, 4), (64, 4, 2)])
@pytest.mark.parametrize("style,dyscope", CONFIGS)
def test_parameter_count_equals_authors_definition(c1, scale, groups, style, dyscope):
    m = dys.DySample(c1, scale, style, groups, dyscope)
    assert count_params(m) == authors_params(c1, scale, style, groups, dyscope)


def test_concrete_parameter_counts():
    # lp: 256 -> 2*4*4 = 32 offsets: 256*32 + 32 = 8_224, dynamic scope + 256*32 = 16_416
    # pl: 256/4 = 64 -> 2*4 = 8 offsets: 64*8 + 8 = 520, dynamic scope + 64*8 = 1_032
    assert count_params(dys.DySample(256)) == 8_224
    assert count_params(dys.DySample(256, dyscope=True)) == 16_416
    assert count_params(dys.DySample(256, style="pl")) == 520
    assert count_params(dys.DySample(256, style="pl", dyscope=True)) == 1_032


def test_initial_positions_by_hand():
    q = 0.25  # sub-pixel centres of a 2x upsampling sit a quarter pixel from the source centre
    m = dys.DySample(16, 2, groups=2)
    xs, ys = [-q, q, -q, q], [-q, -q, q, q]   # sub-pixels in row-major order (0,0) (0,1) (1,0) (1,1)
    assert m.init_pos.flatten().tolist() == xs * 2 + ys * 2
    third = 1 / 3
    m3 = dys.DySample(9, 3, groups=1)
    row = [-third, 0.0, third]
    torch.testing.assert_close(m3.init_pos.flatten(), torch.tensor(row * 3 + [v for v in row for _ in range(3)]))


def test_initialisation_as_the_authors():
    torch.manual_seed(0)
    m = dys.DySample(256, dyscope=True)
    assert 0.0008 < m.offset.weight.std().item() < 0.0012
    assert not m.offset.bias.any() and not m.scope.weight.any() and m.scope.bias is None


def zero_offsets(m):
    with torch.no_grad():
        m.offset.weight.zero_(), m.offset.bias.zero_()
    return m


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("style,dyscope", CONFIGS)
def test_zero_offsets_give_bilinear_upsampling(scale, style, dyscope):
    torch.manual_seed(0)
    m = zero_offsets(dys.DySample(36, scale, style, 2, dyscope))
    x = torch.randn(2, 36, 5, 7)
    expected = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)


def bilinear_at(img, u, v):
    """img (H, W) at column u, row v (pixel centres at integers), clamped to the image."""
    h, w = img.shape
    u, v = min(max(u, 0.0), w - 1.0), min(max(v, 0.0), h - 1.0)
    u0, v0 = int(u), int(v)
    u1, v1 = min(u0 + 1, w - 1), min(v0 + 1, h - 1)
    fu, fv = u - u0, v - v0
    return ((1 - fv) * ((1 - fu) * img[v0, u0] + fu * img[v0, u1])
            + fv * ((1 - fu) * img[v1, u0] + fu * img[v1, u1]))


def conv1x1(weight, bias, x):
    out = torch.einsum("oc,bchw->bohw", weight[:, :, 0, 0], x)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def by_hand(m, x):
    b, c, h, w = x.shape
    s, g = m.scale, m.groups
    if m.style == "pl":  # pixel shuffle from its definition
        source = torch.empty(b, c // (s * s), s * h, s * w, dtype=x.dtype)
        for Y in range(s * h):
            for X in range(s * w):
                source[:, :, Y, X] = x[:, (Y % s) * s + (X % s)::s * s, Y // s, X // s]
    else:
        source = x
    raw = conv1x1(m.offset.weight, m.offset.bias, source)
    if m.scope is None:
        raw = raw * 0.25
    else:
        raw = raw * torch.sigmoid(conv1x1(m.scope.weight, None, source)) * 0.5
    out = torch.empty(b, c, s * h, s * w, dtype=x.dtype)
    per_group = c // g
    for n in range(b):
        for Y in range(s * h):
            for X in range(s * w):
                i, j, y0, x0 = Y % s, X % s, Y // s, X // s
                for gi in range(g):
                    if m.style == "pl":
                        ox, oy = raw[n, gi, Y, X], raw[n, g + gi, Y, X]
                    else:
                        k = gi * s * s + i * s + j
                        ox, oy = raw[n, k, y0, x0], raw[n, g * s * s + k, y0, x0]
                    u = x0 + (j - (s - 1) / 2) / s + ox.item()
                    v = y0 + (i - (s - 1) / 2) / s + oy.item()
                    for ch in range(gi * per_group, (gi + 1) * per_group):
                        out[n, ch, Y, X] = bilinear_at(x[n, ch], u, v)
    return out


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("style,dyscope", CONFIGS)
def test_sampling_by_hand(scale, style, dyscope):
    torch.manual_seed(0)
    m = dys.DySample(18 if scale == 3 else 8, scale, style, 2, dyscope)
    with torch.no_grad():  # offsets of a pixel or more, so that the border clamp is exercised
        for p in m.parameters():
            p.normal_(0, 1.0)
    x = torch.randn(2, m.offset.in_channels * (scale * scale if style == "pl" else 1), 3, 4, dtype=torch.float64)
    m.double()
    with torch.no_grad():  # the initial positions (thirds at scale 3) were rounded to float32
        torch.testing.assert_close(m(x), by_hand(m, x), rtol=1e-6, atol=1e-6)


def test_onnx_path_equals_grid_sample():
    """bilinear_border (used while exporting to ONNX) samples exactly as grid_sample with border padding."""
    torch.manual_seed(0)
    src = torch.randn(3, 4, 6, 9, dtype=torch.float64)
    u = torch.rand(3, 12, 18, dtype=torch.float64) * 13 - 2
    v = torch.rand(3, 12, 18, dtype=torch.float64) * 10 - 2
    grid = torch.stack(((u + 0.5) * 2 / 9 - 1, (v + 0.5) * 2 / 6 - 1), -1)
    expected = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(dys.bilinear_border(src, u, v), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("style", ["lp", "pl"])
def test_onnx_export_at_yolov5_default_opset(style):
    """YOLOv5's exporter defaults to opset 12, which has no GridSample (added in 16)."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    m = dys.DySample(16, 2, style, 4, True).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(1, 16, 4, 6)
    buffer = io.BytesIO()
    torch.onnx.export(m, (x,), buffer, opset_version=12, dynamo=False)
    session = ort.InferenceSession(buffer.getvalue())
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), m(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("hw", [(8, 8), (6, 10)])
@pytest.mark.parametrize("style,dyscope", CONFIGS)
def test_upsample_shapes(style, dyscope, hw, batch):
    m = dys.DySample(32, 2, style, 4, dyscope)
    for mode in (m.train, m.eval):
        mode()
        assert m(torch.randn(batch, 32, *hw)).shape == (batch, 32, 2 * hw[0], 2 * hw[1])


@pytest.mark.parametrize("scale", [1, 3, 4])
def test_other_scales(scale):
    m = dys.DySample(48, scale, "pl" if scale == 4 else "lp", 4, True)
    assert m(torch.randn(1, 48, 5, 3)).shape == (1, 48, 5 * scale, 3 * scale)


@pytest.mark.parametrize("args,message", [
    ((16, 2, "xy"), "style='xy'"),
    ((18, 2, "lp", 4), "groups=4 must divide the input width 18"),
    ((18, 2, "pl", 2), "divisible by scale"),
    ((16, 0), "scale=0"),
])
def test_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        dys.DySample(*args)


@pytest.mark.parametrize("style", ["lp", "pl"])
def test_gradient_reaches_every_parameter(style):
    torch.manual_seed(0)
    m = dys.DySample(32, 2, style, 4, True).train()
    checks.assert_every_parameter_gets_gradient(m, torch.randn(2, 32, 6, 6))


def test_nothing_for_initialize_weights_or_fuse():
    """No BatchNorm and no activation module: the targets' initialize_weights and fuse() leave it as is."""
    for style, dyscope in CONFIGS:
        m = dys.DySample(32, 2, style, 4, dyscope)
        assert all(isinstance(sub, (dys.DySample, nn.Conv2d)) for sub in m.modules())
        checks.assert_folding_keeps_outputs(m, torch.randn(1, 32, 4, 4), expected_pairs=0)


@pytest.mark.parametrize("style,dyscope", CONFIGS)
def test_bfloat16(style, dyscope):
    checks.assert_bfloat16_works(lambda: dys.DySample(32, 2, style, 4, dyscope), torch.randn(2, 32, 8, 8))


def test_bfloat16_keeps_positions_precise_on_wide_maps():
    """A bfloat16 module samples where the float32 module would (positions stay float32): on a map
    320 pixels wide, bfloat16 positions would be off by up to half a pixel."""
    torch.manual_seed(0)
    m = dys.DySample(8, 2, "lp", 4, True).to(torch.bfloat16)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(1, 8, 4, 320).to(torch.bfloat16)
    reference = dys.DySample(8, 2, "lp", 4, True)
    reference.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
    with torch.no_grad():
        out, expected = m(x), reference(x.float())
    assert out.dtype == torch.bfloat16
    assert (out.float() - expected).abs().max().item() < 0.05 * expected.abs().max().item()


@pytest.mark.parametrize("style", ["lp", "pl"])
def test_stride_probe(style):
    assert checks.stride_probe(lambda: dys.DySample(16, 2, style), 16).shape == (1, 16, 512, 512)


def test_recipe_declares_upsample_module():
    (module,) = RECIPE["modules"]
    assert (module["name"], module["file"], module["role"]) == ("DySample", "dysample.py", "upsample")
    assert {y["target"] for y in RECIPE["yamls"]} == {"ultralytics", "yolov5"}
    assert all(y["vars"]["module"] == "DySample" for y in RECIPE["yamls"])
