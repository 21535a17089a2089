"""The `loss` step (an IoU-loss recipe applied): the target's own detection loss, on a synthetic batch,
runs through the edited IoU call, and its box term is what the recipe's formula gives for those boxes.

How the box term is checked without re-deriving the target's loss: every call of the IoU function is
recorded (its boxes and keywords) and its result is returned plus a zero tensor `probe` that requires a
gradient. The box term is linear in the returned values, B = sum_i w_i (1 - f_i), with weights the
loss computes from the assignment (ultralytics: target scores over their sum; YOLOv5: one over the
level's count); backward gives d(total)/d(probe_i) = -batch * gain * w_i. So the reported box loss times
the batch must equal sum_i -grad_i (1 - g_i) with g the recipe's formula computed independently
(iou_reference.py) on the recorded boxes in the format the site's boxes really have: a wrong function,
option, box order or format, or image size, gives another number. The prediction must be the first box
(the one with a gradient), and the loss must be finite with finite gradients, also on degenerate boxes.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch

from ..protocol import StepFailure
from . import iou_reference as ref
from .train import synthetic_batch

TOLERANCE = 1e-4   # relative, on the box loss of the batch (float32 loss against the float64 reference)


class _Recorder:
    """Stands in for yolopatch_iou.<function> in the loss's module; records each call."""

    def __init__(self, module, function: str):
        self.module, self.name = module, function
        self.original = getattr(module, function)
        self.calls: list[dict] = []

    def __call__(self, box1, box2, **kwargs):
        mean_before = self.module.wiou_running_mean() if self.name == "wiou_v3" else None
        out = self.original(box1, box2, **kwargs)
        probe = torch.zeros_like(out, requires_grad=True)
        self.calls.append({"box1": box1, "box2": box2, "kwargs": kwargs, "out": out.detach(), "probe": probe,
                           "mean_before": mean_before})
        return out + probe

    def __enter__(self):
        setattr(self.module, self.name, self)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.original)


def _stock_detector(adapter, spec):
    stock = next((m for m in spec.task_stock if m.task == "detect" and not m.end2end), None)
    if stock is None:
        raise StepFailure(f"{spec.flavour} {spec.version} ships no stock detection YAML to run the loss with")
    d = adapter.load_yaml(Path(spec.root) / stock.yaml)
    scales = adapter.scales(d)
    torch.manual_seed(0)
    return stock.name, adapter.build(d, stock.scale if stock.scale in scales else scales[0], "detect")


def _image_sizes(model, imgs) -> set:
    height, width = imgs.shape[2], imgs.shape[3]
    return {(width / float(s), height / float(s)) for s in model.stride}


def _check_image_size(call: dict, allowed: set) -> None:
    size = call["kwargs"].get("image_size")
    if size is None:
        raise StepFailure("the MPDIoU call is given no image_size")
    rows = torch.as_tensor(size, dtype=torch.float64).reshape(-1, 2).tolist()
    wrong = [tuple(r) for r in rows if not any(abs(r[0] - w) < 1e-6 and abs(r[1] - h) < 1e-6 for w, h in allowed)]
    if wrong:
        raise StepFailure(f"MPDIoU's image size {wrong[0]} is not the input image in grid units of any level "
                          f"(width, height: {sorted(allowed)})")


def _check_order(call: dict, where: str = "the edited call") -> None:
    """The prediction (which has a gradient) first, the target second: the asymmetric forms depend on it."""
    if not call["box1"].requires_grad or call["box2"].requires_grad:
        raise StepFailure(f"{where} does not pass the predicted boxes first and the targets second")


def _expected(call: dict, loss_spec: dict, target_bbox_iou, options: dict):
    boxes = ref.Boxes(call["box1"], call["box2"], loss_spec["xywh"])
    function = ref.FUNCTIONS[loss_spec["function"]]
    target_iou = (lambda flag: ref.target_bbox_iou(target_bbox_iou, call["box1"], call["box2"], loss_spec["xywh"], flag))
    extra = {"image_size": call["kwargs"].get("image_size"), "target_iou": target_iou,
             "mean_before": call["mean_before"]}
    return function(boxes, **options, **extra)


def _degenerate_pairs(xywh: bool):
    """Identical, concentric, zero-width and far-apart pairs (prediction first), in the site's format."""
    corners = torch.tensor([[[2., 2., 6., 5.], [2., 2., 6., 5.]],
                            [[3., 3., 5., 4.], [2., 2., 6., 5.]],
                            [[4., 2., 4., 6.], [3., 2., 5., 6.]],
                            [[0., 0., 1., 1.], [40., 30., 42., 33.]]])
    if xywh:
        corners = torch.cat([(corners[..., :2] + corners[..., 2:]) / 2, corners[..., 2:] - corners[..., :2]], -1)
    return corners[:, 0].clone().requires_grad_(True), corners[:, 1].clone()


def _degenerate_gradients(recorder: _Recorder, loss_spec: dict, kwargs: dict) -> None:
    pred, target = _degenerate_pairs(loss_spec["xywh"])
    keep = recorder.module.wiou_running_mean() if recorder.name == "wiou_v3" else None
    try:
        if "image_size" in kwargs:
            kwargs = {**kwargs, "image_size": (64.0, 48.0)}
        value = recorder.original(pred, target, **kwargs)
        (1 - value).sum().backward()
    finally:
        if keep is not None:
            recorder.module.reset_wiou_running_mean(keep)
    if not torch.isfinite(value).all() or pred.grad is None or not torch.isfinite(pred.grad).all():
        raise StepFailure(f"{recorder.name} gives a non-finite value or gradient on identical, concentric, "
                          f"zero-width or far-apart boxes: values {value.flatten().tolist()}")


def _rtdetr_term(loss_spec: dict) -> str:
    """RT-DETR's GIoU term (DETRLoss._get_loss_bbox) on crafted normalised boxes: the same check as the
    detection loss's box term, the image being 1 x 1 in the units of its boxes."""
    module = importlib.import_module(loss_spec["rtdetr_module"])
    iou_module = getattr(module, "yolopatch_iou", None)
    if iou_module is None:
        raise StepFailure(f"{loss_spec['rtdetr_module']} does not import yolopatch_iou (RT-DETR's GIoU term is "
                          "not edited as the recipe says)")
    generator = torch.Generator().manual_seed(3)
    centres = torch.rand(12, 2, generator=generator) * 0.6 + 0.2
    sizes = torch.rand(12, 2, generator=generator) * 0.3 + 0.05
    gt = torch.cat([centres, sizes], 1)
    pred = (gt + torch.randn(12, 4, generator=generator) * 0.05).clamp(min=0.01).requires_grad_(True)
    with _Recorder(iou_module, loss_spec["function"]) as recorder:
        terms = module.DETRLoss(nc=2)._get_loss_bbox(pred, gt)
    name = next((k for k in terms if "giou" in k), None)
    if name is None or len(recorder.calls) != 1:
        raise StepFailure(f"RT-DETR's GIoU term does not go through yolopatch_iou.{loss_spec['function']}")
    terms[name].backward()
    call = recorder.calls[0]
    _check_order(call, "the edited call of RT-DETR's GIoU term")
    if loss_spec["function"] == "mpdiou" or loss_spec["options"].get("base") == "mpdiou":
        _check_image_size(call, {(1.0, 1.0)})
    weights = -call["probe"].grad.double().reshape(-1)
    expected = float((weights * (1 - _expected(call, {**loss_spec, "xywh": True}, module.bbox_iou,
                                                    loss_spec["options"]))).sum())
    if not math.isclose(float(terms[name]), expected, rel_tol=TOLERANCE, abs_tol=1e-6):
        raise StepFailure(f"RT-DETR's {name} is {float(terms[name]):.6g}, but {loss_spec['recipe']}'s formula on "
                          f"the same boxes gives {expected:.6g}")
    return f"; RT-DETR's {name} {float(terms[name]):.6g} = the formula too"


def loss_step(adapter, spec) -> str:
    loss_spec = spec.loss
    loss_module = importlib.import_module(loss_spec["module"])
    iou_module = getattr(loss_module, "yolopatch_iou", None)
    if iou_module is None or not hasattr(iou_module, loss_spec["function"]):
        raise StepFailure(f"{loss_spec['module']} does not import yolopatch_iou with {loss_spec['function']} "
                          "(the loss file is not edited as the recipe says)")
    target_bbox_iou = getattr(loss_module, "bbox_iou")
    name, model = _stock_detector(adapter, spec)
    imgs, labels = synthetic_batch("detect", model)
    model.train()
    with _Recorder(iou_module, loss_spec["function"]) as recorder:
        total, items = adapter.loss_with_items(model, "detect", imgs, labels)
    if not recorder.calls:
        raise StepFailure(f"the loss of {name} never called yolopatch_iou.{loss_spec['function']}: the box loss does "
                          "not go through the edited call")
    if not math.isfinite(float(total)):
        raise StepFailure(f"the loss of {name} is {float(total)} on a synthetic batch")
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads or not all(torch.isfinite(g).all() for g in grads):
        raise StepFailure(f"the loss of {name} gives no or non-finite parameter gradients")
    allowed = _image_sizes(model, imgs)
    reported = float(items[0]) * imgs.shape[0]
    expected = ciou = 0.0
    pairs = 0
    for call in recorder.calls:
        _check_order(call)
        if loss_spec["function"] == "mpdiou" or loss_spec["options"].get("base") == "mpdiou":
            _check_image_size(call, allowed)
        weights = -call["probe"].grad.double().reshape(-1)
        value = _expected(call, loss_spec, target_bbox_iou, loss_spec["options"])
        stock = ref.target_bbox_iou(target_bbox_iou, call["box1"], call["box2"], loss_spec["xywh"], "CIoU")
        expected += float((weights * (1 - value)).sum())
        ciou += float((weights * (1 - stock)).sum())
        pairs += weights.numel()
    if not math.isclose(reported, expected, rel_tol=TOLERANCE, abs_tol=1e-6):
        raise StepFailure(f"the box loss of {name} is {reported / imgs.shape[0]:.6g}, but "
                          f"{loss_spec['recipe']}'s formula on the same {pairs} box pairs gives "
                          f"{expected / imgs.shape[0]:.6g} (CIoU: {ciou / imgs.shape[0]:.6g})")
    _degenerate_gradients(recorder, loss_spec, recorder.calls[0]["kwargs"])
    same = " (with these options the formula equals CIoU here)" if math.isclose(expected, ciou, rel_tol=TOLERANCE) \
        else f", CIoU would give {ciou / imgs.shape[0]:.6g}"
    rtdetr = _rtdetr_term(loss_spec) if loss_spec.get("rtdetr_module") else ""
    return (f"{name}: box loss {reported / imgs.shape[0]:.6g} = {loss_spec['recipe']}'s formula on {pairs} box pairs"
            f"{same}; finite gradients, also on degenerate boxes{rtdetr}")
