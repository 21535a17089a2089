"""Tests of the BiFPN fusion node (recipes/bifpn/bifpn.py)."""

import pytest
import torch
import torch.nn as nn

from recipe_loader import RECIPES, count_params, load_recipe_module

bf = load_recipe_module("bifpn", "bifpn.py")

EPS = 1e-4


def bifpn_params(n, c, conv=True):
    # n fusion weights; depthwise 3x3 (c*9) + pointwise 1x1 without bias (c*c) + BN (2c)
    return n + (c * 9 + c * c + 2 * c if conv else 0)


@pytest.mark.parametrize("n,c", [(2, 64), (3, 64), (2, 256), (3, 17)])
def test_param_count(n, c):
    assert count_params(bf.BiFPN([c] * n)) == bifpn_params(n, c)
    assert count_params(bf.BiFPN([c] * n, False)) == bifpn_params(n, c, conv=False) == n


def test_concrete_param_count():
    # BiFPN([128, 128, 128]): 3 + 128*9 + 128*128 + 2*128 = 3 + 1_152 + 16_384 + 256
    assert count_params(bf.BiFPN([128, 128, 128])) == 17_795


def test_weights_initialised_to_one():
    m = bf.BiFPN([32, 32, 32])
    assert torch.equal(m.w.detach(), torch.ones(3))
    assert torch.allclose(m.fusion_weights(), torch.full((3,), 1 / (3 + EPS)))


def test_weights_nonnegative_after_negative_raw_values():
    m = bf.BiFPN([8, 8, 8], False)
    with torch.no_grad():
        m.w.copy_(torch.tensor([-2.0, 0.5, -0.1]))
    w = m.fusion_weights()
    assert (w >= 0).all()
    assert w[0] == 0 and w[2] == 0
    assert torch.allclose(w[1], torch.tensor(0.5 / (0.5 + EPS)))
    # inputs with a negative raw weight contribute nothing
    a, b, c = torch.full((1, 8, 2, 2), 7.0), torch.full((1, 8, 2, 2), 3.0), torch.full((1, 8, 2, 2), -5.0)
    assert torch.allclose(m([a, b, c]), b * 0.5 / (0.5 + EPS))


@pytest.mark.parametrize("raw", [[1.0, 1.0], [2.0, 0.5], [0.3, 4.0, 1.5]])
def test_exact_fast_normalised_fusion(raw):
    n = len(raw)
    m = bf.BiFPN([4] * n, False)
    with torch.no_grad():
        m.w.copy_(torch.tensor(raw))
    xs = [torch.arange(4 * 3 * 5, dtype=torch.float32).view(1, 4, 3, 5) * (i + 1) - i for i in range(n)]
    expected = sum(w * x for w, x in zip(raw, xs)) / (EPS + sum(raw))
    assert torch.allclose(m(xs), expected, rtol=1e-6, atol=1e-6)


def test_fusion_by_hand_two_inputs():
    m = bf.BiFPN([1, 1], False)
    with torch.no_grad():
        m.w.copy_(torch.tensor([3.0, 1.0]))
    x0 = torch.tensor([[[[1.0, 2.0]]]])
    x1 = torch.tensor([[[[5.0, -2.0]]]])
    # (3*1 + 1*5) / (4 + 1e-4) and (3*2 + 1*(-2)) / (4 + 1e-4)
    expected = torch.tensor([[[[8.0 / 4.0001, 4.0 / 4.0001]]]])
    assert torch.allclose(m([x0, x1]), expected)


def test_post_conv_structure_matches_efficientdet_node():
    m = bf.BiFPN([16, 16])
    act, dw, pw, bn = m.post
    assert isinstance(act, nn.SiLU)
    assert dw.kernel_size == (3, 3) and dw.groups == 16 and dw.bias is None
    assert pw.kernel_size == (1, 1) and pw.groups == 1 and pw.bias is None
    assert isinstance(bn, nn.BatchNorm2d)
    # the forward is exactly: fuse -> swish -> depthwise -> pointwise -> BN
    m.eval()
    xs = [torch.randn(1, 16, 8, 12), torch.randn(1, 16, 8, 12)]
    with torch.no_grad():
        fused = (xs[0] + xs[1]) / (2 + EPS)
        expected = bn(pw(dw(torch.nn.functional.silu(fused))))
        assert torch.allclose(m(xs), expected, atol=1e-6)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("hw", [(32, 32), (24, 40)])
def test_output_shape(n, hw):
    m = bf.BiFPN([24] * n).eval()
    with torch.no_grad():
        y = m([torch.randn(2, 24, *hw) for _ in range(n)])
    assert y.shape == (2, 24, *hw)


@pytest.mark.parametrize("n", [2, 3])
def test_train_mode_batch1_256(n):
    m = bf.BiFPN([8] * n).train()
    y = m([torch.randn(1, 8, 256, 256) for _ in range(n)])
    assert y.shape == (1, 8, 256, 256)
    assert torch.isfinite(y).all()


def _assert_every_parameter_gets_gradient(m, xs):
    m(xs).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    # every single fusion weight is trained
    assert (m.w.grad != 0).all()


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("conv", [True, False])
def test_gradient_reaches_fusion_weights(n, conv):
    torch.manual_seed(0)
    m = bf.BiFPN([16] * n, conv).train()
    _assert_every_parameter_gets_gradient(m, [torch.randn(2, 16, 8, 8) for _ in range(n)])


def test_survives_inplace_activations():
    torch.manual_seed(0)
    m = bf.BiFPN([16, 16, 16]).train()
    for mod in m.modules():  # what the targets' initialize_weights does
        if isinstance(mod, nn.BatchNorm2d):
            mod.eps, mod.momentum = 1e-3, 0.03
        elif isinstance(mod, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
            mod.inplace = True
    assert m.post[0].inplace
    xs = [torch.randn(2, 16, 8, 12, requires_grad=True) for _ in range(3)]
    copies = [x.detach().clone() for x in xs]
    _assert_every_parameter_gets_gradient(m, xs)
    # the in-place swish must not have overwritten the caller's tensors
    for x, c in zip(xs, copies):
        assert torch.equal(x.detach(), c)
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_width_mismatch_raises_with_widths():
    with pytest.raises(ValueError) as err:
        bf.BiFPN([64, 128, 64])
    msg = str(err.value)
    assert "64" in msg and "128" in msg and "[64, 128, 64]" in msg


def test_rejects_single_input_and_scalar():
    with pytest.raises(ValueError):
        bf.BiFPN([32])
    with pytest.raises(ValueError):
        bf.BiFPN(32)


def test_wrong_number_of_inputs_at_forward():
    m = bf.BiFPN([8, 8, 8])
    with pytest.raises(ValueError, match="3 inputs"):
        m([torch.zeros(1, 8, 4, 4)] * 2)


# ---------------------------------------------------------------------------
# Fused inference: the post-fusion pointwise conv folds with its BatchNorm
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3])
def test_every_conv_bn_pair_folds(n):
    from fusing import check_fuses

    torch.manual_seed(0)
    node = bf.BiFPN([16] * n)
    assert check_fuses(node, [torch.randn(2, 16, 8, 12) for _ in range(n)]) == 1


# ---------------------------------------------------------------------------
# The YAML templates: every fusion joins maps of one stride and width, the bottom-up P4 node has the same-level
# skip, and `repeats` stacks whole BiFPN layers
# ---------------------------------------------------------------------------

TEMPLATES = {  # template -> (target family, head module)
    "ultralytics/bifpn.yaml.j2": ("ultralytics", "Detect"),
    "ultralytics/backbone-bifpn.yaml.j2": ("ultralytics", "Detect"),
    "ultralytics/rtdetr-bifpn.yaml.j2": ("ultralytics", "RTDETRDecoder"),
    "ultralytics/rtdetr-backbone-bifpn.yaml.j2": ("ultralytics", "RTDETRDecoder"),
    "yolov5/bifpn.yaml.j2": ("yolov5", "Detect"),
    "yolov5/backbone-bifpn.yaml.j2": ("yolov5", "Detect"),
}
# Stride and width of what each layer kind outputs, from its YAML arguments (width None: keeps its input's).
KEEPS_STRIDE = {"C2f", "C3", "RepC3", "SPPF", "AIFI", "BiFPN"}


def render(template, **variables):
    from yolopatch.recipes import YamlSpec, load_recipe
    from yolopatch.render import render_yaml

    recipe = load_recipe(RECIPES / "bifpn")
    spec = YamlSpec(name="x", target=TEMPLATES[template][0], template=template, vars=variables)
    extra = {"backbone": "MobileNetV2", "args": []} if "backbone-" in template else None
    return render_yaml(recipe, spec, "scales", extra)


def trace(doc):
    """Rows numbered as the model numbers its layers, and the (stride, width) each outputs."""
    rows, out = [], []
    for f, n, module, args in doc["backbone"] + doc["head"]:
        sources = [f] if isinstance(f, int) else list(f)
        inputs = [out[len(out) + s] if s < 0 else out[s] for s in sources] if out else [(1, 3)]
        rows.append([f, n, module, args])
        if module in ("Detect", "RTDETRDecoder"):
            out.append(("head", inputs))
            continue
        stride, width = inputs[0]
        if module == "MobileNetV2":  # a multi-output backbone fills rows 0-4 (strides 2..32)
            rows += [[-1, 1, "BackboneLevel", []]] * 4
            out += [(2 ** (k + 1), None) for k in range(5)]
            continue
        if module == "BiFPN":
            assert len(set(inputs)) == 1, f"row {len(out)}: BiFPN joins {inputs}"
        elif module == "Conv":
            stride *= args[2] if len(args) > 2 else 1
            width = args[0]
        elif module == "nn.Upsample":
            stride //= args[1]
        else:
            assert module in KEEPS_STRIDE, module
            width = width if module in ("AIFI", "BiFPN") else args[0]
        out.append((stride, width))
    return rows, out


@pytest.mark.parametrize("template", list(TEMPLATES))
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_template_fuses_same_stride_maps_and_stacks_layers(template, layers):
    import yaml

    text = render(template, **({"repeats": layers} if layers > 1 else {})).decode()
    doc = yaml.safe_load(text)
    rows, traced = trace(doc)
    # Row comments number the rows as the model does (the backbone row is "0-4").
    numbered = [line.split("# ")[1].split(" ")[0].split("-")[0].rstrip(",")
                for line in text.split("\nbackbone:")[1].splitlines() if line.startswith("  - [")]
    assert numbered == [str(i) for i, row in enumerate(rows) if row[2] != "BackboneLevel"]
    head_inputs = rows[-1][0]
    assert rows[-1][2] == TEMPLATES[template][1]
    assert [traced[i][0] for i in head_inputs] == [8, 16, 32]
    fusions = [i for i, row in enumerate(rows) if row[2] == "BiFPN"]
    assert len(fusions) == 4 * layers
    # Per layer: P4 top-down, P3, P4 bottom-up (three inputs: the downsampled P3, the layer's P4 input and its
    # top-down P4), P5.
    for layer in range(layers):
        td4, p3, bu4, p5 = fusions[4 * layer: 4 * layer + 4]
        assert [len(rows[i][0]) for i in (td4, p3, bu4, p5)] == [2, 2, 3, 2]
        down, skip, top_down = (i + bu4 if i < 0 else i for i in rows[bu4][0])
        assert down == bu4 - 1 and top_down >= td4 and skip < td4, rows[bu4]
        assert traced[skip][0] == 16
    if layers > 1:  # each further layer is 12 rows on the previous layer's three outputs
        single = yaml.safe_load(render(template).decode())
        assert len(doc["head"]) == len(single["head"]) + 12 * (layers - 1)
        assert doc["head"][: len(single["head"]) - 1] == single["head"][:-1]


def test_rtdetr_bottom_up_p4_takes_the_p4_input():
    import yaml

    rows = yaml.safe_load(render("ultralytics/rtdetr-bifpn.yaml.j2").decode())["head"]
    # rows are numbered from 10 in the head (the YOLOv8-L backbone has ten rows)
    assert rows[23 - 10][:3] == [[-1, 14, 17], 1, "BiFPN"]
    assert rows[14 - 10][0] == 6  # row 14 projects the backbone's P4


def test_recipe_notes_document_repeats_and_skip():
    import tomllib

    notes = tomllib.loads((RECIPES / "bifpn" / "recipe.toml").read_text())["notes"]
    assert "repeats" in notes and "same-level skip" in notes
