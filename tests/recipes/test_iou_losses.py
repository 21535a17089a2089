"""Each IoU variant against values worked out by hand from its paper on fixed box pairs.

The arithmetic is written out as the derivation. The main pair (corner form, prediction first):

    A = (0, 0, 4, 2)   w = 4, h = 2, centre (2, 1)
    B = (1, 1, 5, 5)   w = 4, h = 4, centre (3, 3)      (ground truth)

    overlap  x: [1, 4] -> 3,  y: [1, 2] -> 1           intersection 3
    union    8 + 16 - 3 = 21                          IoU = 3/21 = 1/7
    centres  dx = 3 - 2 = 1, dy = 3 - 1 = 2            rho^2 = 5
    enclosing box [0, 5] x [0, 5]: C_w = C_h = 5       c^2 = 50, area 25
"""

import math

import pytest
import torch

from recipe_loader import load_recipe_module

IOU = load_recipe_module("_shared", "yolopatch_iou.py")

A, B = (0.0, 0.0, 4.0, 2.0), (1.0, 1.0, 5.0, 5.0)
IOU_AB = 3 / 21
RHO2_C2_AB = 5 / 50


def value(fn, box1=A, box2=B, **options) -> float:
    """The variant on one pair, float64 (eps = 1e-7 in the denominators moves values by < 1e-7 relative)."""
    b1 = torch.tensor([box1], dtype=torch.float64)
    b2 = torch.tensor([box2], dtype=torch.float64)
    with torch.no_grad():  # values only; Wise-IoU's running mean is exercised separately
        out = fn(b1, b2, xywh=False, **options)
    assert out.shape == (1, 1)
    return out.item()


def ciou_ab() -> float:
    # v = 4/pi^2 (atan(w_gt/h_gt) - atan(w/h))^2 = 4/pi^2 (atan(1) - atan(2))^2;  alpha = v / ((1 - IoU) + v)
    v = 4 / math.pi ** 2 * (math.atan(4 / 4) - math.atan(4 / 2)) ** 2
    alpha = v / ((1 - IOU_AB) + v)
    return IOU_AB - RHO2_C2_AB - alpha * v


def eiou_ab() -> float:
    # EIoU = IoU - rho^2/c^2 - (w - w_gt)^2 / C_w^2 - (h - h_gt)^2 / C_h^2
    return IOU_AB - RHO2_C2_AB - (4 - 4) ** 2 / 5 ** 2 - (2 - 4) ** 2 / 5 ** 2


def siou_ab(theta=4) -> float:
    # Angle: sigma = sqrt(5); x = min(|dx|, |dy|) / sigma = 1/sqrt(5) (the smaller angle, to the x axis)
    lam = 1 - 2 * math.sin(math.asin(1 / math.sqrt(5)) - math.pi / 4) ** 2  # = 0.8 = 2 * 1 * 2 / 5
    gamma = 2 - lam  # 1.2
    # Distance: rho_x = (dx / C_w)^2 = (1/5)^2, rho_y = (2/5)^2
    delta = (1 - math.exp(-gamma * (1 / 5) ** 2)) + (1 - math.exp(-gamma * (2 / 5) ** 2))
    # Shape: omega_w = |4 - 4| / 4 = 0, omega_h = |2 - 4| / max(2, 4) = 1/2
    omega = (1 - math.exp(-0)) ** theta + (1 - math.exp(-1 / 2)) ** theta
    return IOU_AB - (delta + omega) / 2


def test_the_pair_itself():
    assert value(IOU.iou) == pytest.approx(1 / 7, rel=1e-6)
    assert value(IOU.giou) == pytest.approx(1 / 7 - (25 - 21) / 25, rel=1e-6)
    assert value(IOU.diou) == pytest.approx(1 / 7 - 5 / 50, rel=1e-6)
    assert value(IOU.ciou) == pytest.approx(ciou_ab(), rel=1e-6)


def test_siou():
    assert 1 - 2 * math.sin(math.asin(1 / math.sqrt(5)) - math.pi / 4) ** 2 == pytest.approx(0.8)
    assert value(IOU.siou) == pytest.approx(siou_ab(), rel=1e-6)
    assert value(IOU.siou, theta=2.0) == pytest.approx(siou_ab(theta=2), rel=1e-6)
    assert value(IOU.siou) != pytest.approx(ciou_ab(), rel=1e-3)


def test_siou_concentric_boxes_have_no_angle_or_distance_cost():
    # C = (0,0,4,4), D = (1,1,3,3): IoU = 4/16; dx = dy = 0 -> Lambda = 0, Delta = 0;
    # omega_w = omega_h = |4 - 2| / 4 = 1/2
    expected = 4 / 16 - (0 + 2 * (1 - math.exp(-1 / 2)) ** 4) / 2
    assert value(IOU.siou, (0, 0, 4, 4), (1, 1, 3, 3)) == pytest.approx(expected, rel=1e-6)


def test_eiou():
    assert eiou_ab() == pytest.approx(1 / 7 - 1 / 10 - 4 / 25)  # = -41/350
    assert value(IOU.eiou) == pytest.approx(-41 / 350, rel=1e-6)


def test_mpdiou():
    # image 8 x 6: w^2 + h^2 = 64 + 36 = 100
    # d1^2 = (1 - 0)^2 + (1 - 0)^2 = 2 (top-left corners), d2^2 = (5 - 4)^2 + (5 - 2)^2 = 10 (bottom-right)
    expected = 1 / 7 - 2 / 100 - 10 / 100
    assert value(IOU.mpdiou, image_size=(8, 6)) == pytest.approx(expected, rel=1e-6)
    per_box = torch.tensor([[8.0, 6.0]], dtype=torch.float64)
    assert value(IOU.mpdiou, image_size=per_box) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="image_size"):
        value(IOU.mpdiou)


def test_shape_iou_scale_zero():
    # scale 0: ww = hh = 2 * x^0 / (x^0 + y^0) = 1
    # distance = (hh dx^2 + ww dy^2) / c^2 = 5/50; omega_w = 0, omega_h = |2 - 4| / 4 = 1/2
    expected = 1 / 7 - 5 / 50 - 0.5 * ((1 - math.exp(-0)) ** 4 + (1 - math.exp(-1 / 2)) ** 4)
    assert value(IOU.shape_iou) == pytest.approx(expected, rel=1e-6)


def test_shape_iou_weights_by_the_ground_truth_shape():
    # A = (0,0,4,2) against the tall ground truth B2 = (1,1,3,5): w_gt = 2, h_gt = 4, centre (2, 3)
    # overlap 2 x 1 = 2, union 8 + 8 - 2 = 14 -> IoU = 1/7; dx = 0, dy = 2; enclosing 4 x 5 -> c^2 = 41
    # scale 1: ww = 2*2/(2+4) = 2/3, hh = 2*4/(2+4) = 4/3
    # distance = (4/3 * 0 + 2/3 * 2^2) / 41 = 8/123
    # omega_w = hh |4 - 2| / 4 = 2/3, omega_h = ww |2 - 4| / 4 = 1/3
    expected = 1 / 7 - 8 / 123 - 0.5 * ((1 - math.exp(-2 / 3)) ** 4 + (1 - math.exp(-1 / 3)) ** 4)
    assert value(IOU.shape_iou, A, (1, 1, 3, 5), scale=1.0) == pytest.approx(expected, rel=1e-6)
    # the ground truth's shape decides the weights: swapping the boxes changes the value
    assert value(IOU.shape_iou, (1, 1, 3, 5), A, scale=1.0) != pytest.approx(expected, rel=1e-3)


def test_inner_iou():
    # ratio 0.7: auxiliary boxes keep the centres, sides times 0.7
    #   A': centre (2, 1), half sides 1.4, 0.7 -> x [0.6, 3.4], y [0.3, 1.7]
    #   B': centre (3, 3), half sides 1.4, 1.4 -> x [1.6, 4.4], y [1.6, 4.4]
    #   overlap x [1.6, 3.4] = 1.8, y [1.6, 1.7] = 0.1 -> 0.18
    #   union (8 + 16) * 0.7^2 - 0.18 = 11.76 - 0.18 = 11.58
    assert value(IOU.inner_iou) == pytest.approx(0.18 / 11.58, rel=1e-6)  # = 3/193
    # ratio 1.5: A' x [-1, 5], y [-0.5, 2.5]; B' x [0, 6], y [0, 6]; overlap 5 x 2.5 = 12.5
    #   union 24 * 2.25 - 12.5 = 41.5
    assert value(IOU.inner_iou, ratio=1.5) == pytest.approx(12.5 / 41.5, rel=1e-6)  # = 25/83
    # ratio 1: the auxiliary boxes are the boxes
    assert value(IOU.inner_iou, ratio=1.0) == pytest.approx(1 / 7, rel=1e-6)


def test_inner_iou_with_a_base():
    # L = L_base + IoU - IoU_inner  ->  value = 1 - L = base - IoU + IoU_inner
    assert value(IOU.inner_iou, base="ciou") == pytest.approx(ciou_ab() - 1 / 7 + 3 / 193, rel=1e-6)
    assert value(IOU.inner_iou, base="siou") == pytest.approx(siou_ab() - 1 / 7 + 3 / 193, rel=1e-6)
    # base "iou" is the plain Inner-IoU: 1 - IoU + IoU - IoU_inner
    assert value(IOU.inner_iou, base="iou") == pytest.approx(3 / 193, rel=1e-6)
    with pytest.raises(ValueError, match="base 'wiou'"):
        value(IOU.inner_iou, base="wiou")


def test_focaler_iou():
    # d = 0, u = 0.95: IoU = 1/7 lies in [d, u] -> (1/7 - 0) / 0.95 = 20/133
    assert value(IOU.focaler_iou) == pytest.approx(20 / 133, rel=1e-6)
    # C = (0,0,4,4), D = (1,1,3,3): IoU = 4/16 = 0.25; d = 0.1, u = 0.6 -> (0.25 - 0.1) / 0.5 = 0.3
    assert value(IOU.focaler_iou, (0, 0, 4, 4), (1, 1, 3, 3), d=0.1, u=0.6) == pytest.approx(0.3, rel=1e-6)
    assert value(IOU.focaler_iou, d=0.2) == 0.0  # IoU 1/7 < d
    assert value(IOU.focaler_iou, u=0.1) == 1.0  # IoU 1/7 > u
    # with a base: value = base - IoU + IoU_focaler
    assert value(IOU.focaler_iou, base="eiou") == pytest.approx(-41 / 350 - 1 / 7 + 20 / 133, rel=1e-6)
    with pytest.raises(ValueError, match="0 <= d < u <= 1"):
        value(IOU.focaler_iou, d=0.5, u=0.5)


def test_centre_form_equals_corner_form():
    a_xywh = torch.tensor([[2.0, 1.0, 4.0, 2.0]], dtype=torch.float64)
    b_xywh = torch.tensor([[3.0, 3.0, 4.0, 4.0]], dtype=torch.float64)
    for fn, options in [(IOU.siou, {}), (IOU.eiou, {}), (IOU.mpdiou, {"image_size": (8, 6)}),
                        (IOU.shape_iou, {}), (IOU.inner_iou, {}), (IOU.focaler_iou, {})]:
        assert fn(a_xywh, b_xywh, xywh=True, **options).item() == pytest.approx(value(fn, **options), rel=1e-6)


class TestWiseIoU:
    """WIoU v3: 1 - L = 1 - r R_WIoU L_IoU, r = beta / (delta alpha^(beta - delta)), beta = L_IoU* / mean."""

    @pytest.fixture(autouse=True)
    def fresh_mean(self):
        IOU.reset_wiou_running_mean()
        yield
        IOU.reset_wiou_running_mean()

    @staticmethod
    def train_call(box1=A, box2=B, **options):
        b1 = torch.tensor([box1], dtype=torch.float64, requires_grad=True)
        out = IOU.wiou_v3(b1, torch.tensor([box2], dtype=torch.float64), xywh=False, **options)
        return out.item()

    def test_first_step_with_momentum_one_half(self):
        # half_life 1: m = 1 - 0.5^(1/1) = 1/2. L_IoU = 1 - 1/7 = 6/7.
        # mean = (1 - 1/2) * 1 + 1/2 * 6/7 = 13/14;  beta = (6/7) / (13/14) = 12/13
        # r = (12/13) / (3 * 1.9^(12/13 - 3));  R = exp(rho^2 / c^2) = exp(5/50)
        r = (12 / 13) / (3 * 1.9 ** (12 / 13 - 3))
        expected = 1 - r * math.exp(5 / 50) * 6 / 7
        assert self.train_call(half_life=1) == pytest.approx(expected, rel=1e-6)
        assert IOU.wiou_running_mean() == pytest.approx(13 / 14, rel=1e-6)

    def test_paper_momentum(self):
        # m = 1 - 0.5^(1/7000); mean = (1 - m) + m * 6/7 = 1 - m/7; beta = (6/7) / (1 - m/7)
        m = 1 - 0.5 ** (1 / 7000)
        beta = (6 / 7) / (1 - m / 7)
        expected = 1 - beta / (3 * 1.9 ** (beta - 3)) * math.exp(0.1) * 6 / 7
        assert self.train_call() == pytest.approx(expected, rel=1e-6)
        assert IOU.wiou_running_mean() == pytest.approx(1 - m / 7, rel=1e-6)

    def test_the_mean_runs_across_calls(self):
        # second call on C = (0,0,4,4) vs D = (1,1,3,3): L_IoU = 1 - 1/4 = 3/4; concentric -> R = 1
        # mean1 = 13/14, mean2 = 13/28 + 3/8 = 47/56; beta = (3/4) / (47/56) = 42/47
        self.train_call(half_life=1)
        second = self.train_call((0, 0, 4, 4), (1, 1, 3, 3), half_life=1)
        beta = (3 / 4) / (47 / 56)
        assert IOU.wiou_running_mean() == pytest.approx(47 / 56, rel=1e-6)
        assert second == pytest.approx(1 - beta / (3 * 1.9 ** (beta - 3)) * 3 / 4, rel=1e-6)

    def test_alpha_and_delta(self):
        # alpha 1.6, delta 4, half_life 1: beta = 12/13 as above; r = beta / (4 * 1.6^(beta - 4))
        beta = 12 / 13
        expected = 1 - beta / (4 * 1.6 ** (beta - 4)) * math.exp(0.1) * 6 / 7
        assert self.train_call(alpha=1.6, delta=4.0, half_life=1) == pytest.approx(expected, rel=1e-6)

    def test_batch_mean_of_two_boxes(self):
        # A/B (L_IoU = 6/7) and C/D (L_IoU = 3/4) together: batch mean (6/7 + 3/4) / 2 = 45/56
        # half_life 1: mean = 1/2 + 45/112 = 101/112
        b1 = torch.tensor([A, (0, 0, 4, 4)], dtype=torch.float64, requires_grad=True)
        b2 = torch.tensor([B, (1, 1, 3, 3)], dtype=torch.float64)
        out = IOU.wiou_v3(b1, b2, xywh=False, half_life=1)
        beta_ab, beta_cd = (6 / 7) / (101 / 112), (3 / 4) / (101 / 112)
        r = lambda beta: beta / (3 * 1.9 ** (beta - 3))  # noqa: E731
        assert out[:, 0].tolist() == pytest.approx([1 - r(beta_ab) * math.exp(0.1) * 6 / 7,
                                                    1 - r(beta_cd) * 3 / 4], rel=1e-6)

    def test_no_update_outside_training(self):
        with torch.no_grad():
            self.train_call(half_life=1)
        value(IOU.wiou_v3, half_life=1)  # boxes that do not require gradients (validation)
        assert IOU.wiou_running_mean() == 1.0
        empty = torch.zeros(0, 4, dtype=torch.float64, requires_grad=True)
        IOU.wiou_v3(empty, empty.detach(), xywh=False)  # an empty foreground leaves the mean alone
        assert IOU.wiou_running_mean() == 1.0

    def test_focusing_coefficient_is_non_monotonic(self):
        # r(beta) = beta / (delta alpha^(beta - delta)): r(delta) = 1; it rises up to beta = 1/ln(alpha)
        # and falls after, so the lowest-quality (outlier) boxes get small gradient gains
        r = lambda beta: beta / (3 * 1.9 ** (beta - 3))  # noqa: E731
        assert r(3) == 1
        peak = 1 / math.log(1.9)
        assert r(peak / 2) < r(peak) > r(2 * peak) and r(6) < r(3)

    def test_gradient_treats_r_and_the_enclosing_box_as_constants(self):
        # d/dx1 of L = r * exp(rho^2 / c^2*) * (1 - IoU) with r and c^2 held constant: written out by hand
        # for A = (x1, 0, 4, 2) at x1 = 0 against B (half_life 1, so beta = 12/13 as above).
        #   IoU = I / U with I = (4 - max(x1, 1)) * 1 = 3 (x1 < 1: dI/dx1 = 0), U = (4 - x1) * 2 + 16 - I
        #   dU/dx1 = -2  ->  dIoU/dx1 = -I/U^2 * dU/dx1 = 3 * 2 / 21^2
        #   rho^2 = (3 - (x1 + 4)/2)^2 + 4  ->  drho^2/dx1 = -(3 - 2) = -1
        #   dL/dx1 = r [exp(rho^2/c^2) (1/c^2) drho^2/dx1 (1 - IoU) + exp(rho^2/c^2) (-dIoU/dx1)]
        r = (12 / 13) / (3 * 1.9 ** (12 / 13 - 3))
        e = math.exp(5 / 50)
        d_loss = r * (e * (1 / 50) * -1 * (6 / 7) + e * -(6 / 21 ** 2))
        b1 = torch.tensor([A], dtype=torch.float64, requires_grad=True)
        out = IOU.wiou_v3(b1, torch.tensor([B], dtype=torch.float64), xywh=False, half_life=1)
        (1 - out).sum().backward()
        assert b1.grad[0, 0].item() == pytest.approx(d_loss, rel=1e-6)


def test_bases_match_ultralytics_bbox_iou():
    """GIoU / DIoU / CIoU, which Inner- and Focaler-IoU combine with, against the target's own bbox_iou."""
    metrics = pytest.importorskip("ultralytics.utils.metrics")
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(64, 2, 2, generator=generator, dtype=torch.float64) * 10
    wh = torch.rand(64, 2, 2, generator=generator, dtype=torch.float64) * 5 + 0.5
    box1, box2 = torch.cat([xy[:, 0], xy[:, 0] + wh[:, 0]], -1), torch.cat([xy[:, 1], xy[:, 1] + wh[:, 1]], -1)
    for flag, fn in [("GIoU", IOU.giou), ("DIoU", IOU.diou), ("CIoU", IOU.ciou)]:
        reference = metrics.bbox_iou(box1, box2, xywh=False, **{flag: True})
        assert torch.allclose(fn(box1, box2, xywh=False), reference, atol=1e-6), flag


def test_image_size_in_grid_units_two_ways():
    """MPDIoU's normaliser inside ultralytics' BboxLoss: imgsz / stride (8.4) equals what the anchor points
    alone give (8.0-8.3), for a boolean foreground mask and for the index tuple 8.4.190 turns it into."""
    tal = pytest.importorskip("ultralytics.utils.tal")
    feats = [torch.zeros(2, 1, 320 // s, 256 // s) for s in (8, 16, 32)]  # a 256 x 320 (w x h) batch
    anchor_points, stride = tal.make_anchors(feats, torch.tensor([8.0, 16.0, 32.0]), 0.5)
    imgsz = torch.tensor([320.0, 256.0])  # (h, w), as the loss computes it
    fg_mask = torch.zeros(2, len(anchor_points), dtype=torch.bool)
    fg_mask[0, [0, 1279, 1280, 1600]] = fg_mask[1, [5, 1679]] = True  # anchors on every level
    from_stride = IOU.image_size_in_grid(imgsz, stride, fg_mask, 2)
    assert from_stride.tolist() == [[32, 40], [32, 40], [16, 20], [8, 10], [32, 40], [8, 10]]
    assert torch.equal(IOU.image_size_from_anchors(anchor_points, fg_mask, 2), from_stride)
    as_indices = fg_mask.nonzero(as_tuple=True)
    assert torch.equal(IOU.image_size_in_grid(imgsz, stride, as_indices, 2), from_stride)


def test_half_precision_boxes_are_computed_in_float32():
    """Mixed-precision training hands the loss float16 boxes: the variants compute in float32."""
    b1, b2 = torch.tensor([A]).half(), torch.tensor([B]).half()
    out = IOU.siou(b1, b2, xywh=False)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(siou_ab(), rel=1e-5)
