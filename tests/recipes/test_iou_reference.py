"""The verify `loss` step's second writing of the formulas (yolopatch/verify/runner/iou_reference.py) agrees
with the shipped module on random boxes, for every recipe and option the recipes declare, and tells apart
what a wrong wiring would change (another option, the boxes swapped or in the other format)."""

import pytest
import torch

from recipe_loader import load_recipe_module
from yolopatch.verify.runner import iou_reference as ref

IOU = load_recipe_module("_shared", "yolopatch_iou.py")


def target_bbox_iou(box1, box2, xywh=True, GIoU=False, DIoU=False, CIoU=False, eps=1e-7):
    """Stands in for the target's bbox_iou: the shipped module's bases (checked against ultralytics' own in
    test_iou_losses.py)."""
    fn = IOU.ciou if CIoU else IOU.diou if DIoU else IOU.giou if GIoU else IOU.iou
    return fn(box1, box2, xywh=xywh)


def boxes(n=64, seed=0, xywh=False):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 20
    wh = torch.rand(n, 2, generator=g) * 8 + 0.5
    pred = torch.cat([xy, xy + wh], 1)
    target = pred + torch.randn(n, 4, generator=g) * 2
    target[:, 2:] = torch.maximum(target[:, 2:], target[:, :2] + 0.3)
    if xywh:
        pred = torch.cat([(pred[:, :2] + pred[:, 2:]) / 2, pred[:, 2:] - pred[:, :2]], 1)
        target = torch.cat([(target[:, :2] + target[:, 2:]) / 2, target[:, 2:] - target[:, :2]], 1)
    return pred.double(), target.double()


CASES = [
    ("siou", {"theta": 4.0}), ("siou", {"theta": 2.0}), ("eiou", {}), ("mpdiou", {}),
    ("shape_iou", {"scale": 0.0}), ("shape_iou", {"scale": 1.5}),
    ("inner_iou", {"ratio": 0.7, "base": "none"}), ("inner_iou", {"ratio": 1.3, "base": "ciou"}),
    ("inner_iou", {"ratio": 0.8, "base": "siou"}), ("inner_iou", {"ratio": 0.8, "base": "mpdiou"}),
    ("focaler_iou", {"d": 0.0, "u": 0.95, "base": "none"}), ("focaler_iou", {"d": 0.1, "u": 0.6, "base": "giou"}),
    ("focaler_iou", {"d": 0.0, "u": 0.95, "base": "shape-iou"}), ("focaler_iou", {"d": 0.2, "u": 0.9, "base": "eiou"}),
]


def reference(function, pred, target, xywh, options, image_size=None, mean_before=None):
    b = ref.Boxes(pred, target, xywh)
    target_iou = lambda flag: ref.target_bbox_iou(target_bbox_iou, pred, target, xywh, flag)  # noqa: E731
    return ref.FUNCTIONS[function](b, **options, image_size=image_size, target_iou=target_iou, mean_before=mean_before)


@pytest.mark.parametrize("xywh", [False, True])
@pytest.mark.parametrize("function, options", CASES, ids=[f"{f}-{o}" for f, o in CASES])
def test_reference_equals_the_shipped_module(function, options, xywh):
    pred, target = boxes(xywh=xywh)
    size = torch.tensor([[40.0, 24.0]]).expand(len(pred), 2)
    needs = function == "mpdiou" or options.get("base") == "mpdiou"
    extra = {"image_size": size} if needs else {}
    shipped = getattr(IOU, function)(pred, target, xywh=xywh, **options, **extra).reshape(-1)
    expected = reference(function, pred, target, xywh, options, size if needs else None)
    torch.testing.assert_close(expected, shipped, rtol=1e-6, atol=1e-6)


def test_wise_iou_with_its_running_mean():
    pred, target = boxes()
    IOU.reset_wiou_running_mean(0.8)
    try:
        shipped = IOU.wiou_v3(pred.requires_grad_(), target, xywh=False, alpha=1.9, delta=3.0, half_life=70)
    finally:
        IOU.reset_wiou_running_mean()
    expected = reference("wiou_v3", pred, target, False, {"alpha": 1.9, "delta": 3.0, "half_life": 70}, mean_before=0.8)
    torch.testing.assert_close(expected, shipped.detach().reshape(-1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("function, options", [("siou", {"theta": 4.0}), ("shape_iou", {"scale": 1.5}),
                                               ("eiou", {}), ("inner_iou", {"ratio": 0.7, "base": "none"})])
def test_a_wrong_wiring_gives_another_value(function, options):
    """What the loss step relies on: the box format and the order of the boxes change the value."""
    pred, target = boxes()
    right = reference(function, pred, target, False, options)
    swapped = reference(function, target, pred, False, options)
    other_format = reference(function, pred, target, True, options)
    assert not torch.allclose(right, other_format, rtol=1e-3)
    if function == "shape_iou":   # the one asymmetric formula: the target's shape weighs the terms
        assert not torch.allclose(right, swapped, rtol=1e-3)
    if "theta" in options:
        assert not torch.allclose(right, reference(function, pred, target, False, {"theta": 3.0}), rtol=1e-4)


def test_siou_angle_through_arcsin_matches_the_papers_smaller_angle():
    """Hand-worked: centres offset by (3, 1) -> sin(alpha) = 1/sqrt(10) < sqrt(2)/2, Lambda = sin(2 alpha) = 0.6."""
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    target = torch.tensor([[3.0, 1.0, 5.0, 3.0]], dtype=torch.float64)
    b = ref.Boxes(pred, target, False)
    # equal sizes: no shape cost; enclosing box 5 x 3, gamma = 2 - 0.6 = 1.4; IoU = 0
    distance = 2 - torch.exp(torch.tensor(-1.4 * (3 / 5) ** 2)) - torch.exp(torch.tensor(-1.4 * (1 / 3) ** 2))
    torch.testing.assert_close(ref.siou(b), -distance.double().reshape(1) / 2, rtol=1e-6, atol=1e-7)
