"""RFAConv (recipes/rfaconv/rfaconv.py) against the authors' group-conv module (Liuchen1997/RFAConv, model.py
RFAConv2 = Detection/YOLOv5/models/common.py RFAConv): parameter counts written out from its layers, and the
forward against an independent formulation of receptive-field attention."""

import copy

import pytest
import torch
from torch import nn

from module_checks import (assert_every_parameter_gets_gradient, batchnorms, fold_conv_bn, random_projection_loss,
                           randomise_batchnorms)
from recipe_loader import count_params, emulate_initialize_weights, load_recipe_module

rfa = load_recipe_module("rfaconv", "rfaconv.py")


def authors_params(c1, c2, k):
    """The authors' layers: get_weight = AvgPool + 1x1 conv c1 -> c1 k^2 (groups c1, no bias);
    generate_feature = k x k conv c1 -> c1 k^2 (groups c1, no bias) + BN; conv = k x k stride-k conv c1 -> c2
    (with bias) + BN."""
    fields = c1 * k * k
    get_weight = fields * 1
    generate = fields * k * k + 2 * fields
    conv = c1 * c2 * k * k + c2 + 2 * c2
    return get_weight + generate + conv


@pytest.mark.parametrize("c1, c2, k, s", [(3, 16, 3, 1), (16, 32, 3, 2), (64, 128, 3, 2), (32, 32, 5, 1),
                                          (128, 64, 1, 1), (48, 96, 5, 2)])
def test_parameter_count_equals_the_authors_module(c1, c2, k, s):
    assert count_params(rfa.RFAConv(c1, c2, k, s)) == authors_params(c1, c2, k)


def test_parameter_count_worked_out_by_hand():
    # RFAConv(64, 128, 3, 2): 64*9 (attention 1x1) + 64*9*9 + 2*576 (feature conv + BN)
    #                         + 64*128*9 + 128 + 2*128 (stride-3 conv with bias + BN)
    assert count_params(rfa.RFAConv(64, 128, 3, 2)) == 576 + 5_184 + 1_152 + 73_728 + 128 + 256 == 81_024


def reference_forward(m, x):
    """Receptive-field attention written directly: output pixel (i, j) of channel o is
    sum over input channels c and field positions q of W[o, c, q] * F[c, q, i, j] * A[c, q, i, j] + bias,
    A the softmax over q of the pooled logits, F the receptive-field features; then BN and ReLU."""
    b, c = x.shape[:2]
    k = m.k
    logits = m.get_weight(x)
    h, w = logits.shape[2:]
    attention = torch.softmax(logits.view(b, c, k * k, h, w), dim=2)
    features = m.generate_feature(x).view(b, c, k * k, h, w)
    conv, bn = m.conv[0], m.conv[1]
    y = torch.einsum("ocq,bcqhw->bohw", conv.weight.reshape(conv.out_channels, c, k * k), features * attention)
    return torch.relu(bn(y + conv.bias.view(1, -1, 1, 1)))


@pytest.mark.parametrize("c1, c2, k, s, hw", [(8, 16, 3, 1, (12, 20)), (8, 16, 3, 2, (16, 24)),
                                               (4, 6, 5, 1, (10, 10)), (4, 6, 5, 2, (15, 9))])
def test_forward_equals_receptive_field_attention_written_directly(c1, c2, k, s, hw):
    torch.manual_seed(0)
    m = randomise_batchnorms(rfa.RFAConv(c1, c2, k, s)).eval()
    x = torch.randn(2, c1, *hw)
    with torch.no_grad():
        y = m(x)
        expected = reference_forward(m, x)
    assert y.shape == (2, c2, (hw[0] - 1) // s + 1, (hw[1] - 1) // s + 1)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_attention_is_a_softmax_over_each_receptive_field():
    """With the attention conv zeroed every field position weighs 1/k^2: the stride-k conv reads the
    receptive-field features scaled by 1/k^2."""
    m = rfa.RFAConv(4, 6, 3, 1).eval()
    with torch.no_grad():
        m.get_weight[1].weight.zero_()
        x = torch.randn(1, 4, 8, 8)
        uniform = m(x)
        features = m.generate_feature(x).view(1, 4, 9, 8, 8) / 9
        conv, bn = m.conv[0], m.conv[1]
        y = torch.einsum("ocq,bcqhw->bohw", conv.weight.reshape(6, 4, 9), features) + conv.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(uniform, torch.relu(bn(y)))


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match="odd kernel"):
        rfa.RFAConv(8, 16, 2)


@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("hw", [(32, 32), (64, 96)])
def test_shapes_like_a_strided_conv(s, hw):
    m = rfa.RFAConv(16, 32, 3, s).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 16, *hw)).shape == (1, 32, hw[0] // s, hw[1] // s)


@pytest.mark.parametrize("s", [1, 2])
def test_train_mode_batch1_256_and_gradients_after_initialize_weights(s):
    reference = rfa.RFAConv(8, 16, 3, s).train()
    patched = emulate_initialize_weights(copy.deepcopy(reference))
    assert any(getattr(m, "inplace", False) for m in patched.modules())
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


def test_fuse_folds_both_batchnorms():
    m = randomise_batchnorms(rfa.RFAConv(16, 32, 3, 2)).eval()
    x = torch.randn(1, 16, 32, 32)
    with torch.no_grad():
        before = m(x)
        assert fold_conv_bn(m) == 2
        after = m(x)
    assert batchnorms(m) == []
    assert (after - before).abs().max() < 1e-4


def test_bfloat16_autocast_and_bfloat16_weights():
    m = rfa.RFAConv(16, 32, 3, 2).eval()
    x = torch.randn(1, 16, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = m(x)
    with torch.no_grad():
        half = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    for y in (mixed, half):
        assert y.shape == (1, 32, 16, 16) and y.dtype == torch.bfloat16 and torch.isfinite(y).all()
