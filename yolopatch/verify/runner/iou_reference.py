"""The IoU-loss recipes' formulas written a second time, straight from the papers, for the `loss` step: the
value the target's box loss must have been given for each pair of boxes. It shares no code with the shipped
yolopatch_iou.py (and is written differently where the papers allow: SIoU's angle through arcsin as in the
paper), and takes IoU, GIoU, DIoU and CIoU from the target's own `bbox_iou`, so a wrong function, option,
box order, box format or image size in the edited call shows as a different box loss.

Every function returns the quantity the loss subtracts from one, shape (n,), in float64.
"""

from __future__ import annotations

import inspect
import math

import torch

EPS = 1e-7


class Boxes:
    """A batch of (prediction, target) pairs in corner form, float64."""

    def __init__(self, pred, target, xywh: bool):
        self.p = self._corners(pred.detach().double().reshape(-1, 4), xywh)
        self.t = self._corners(target.detach().double().reshape(-1, 4), xywh)

    @staticmethod
    def _corners(b, xywh):
        if not xywh:
            return b
        return torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)

    def sizes(self, box):
        return box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]

    def centre(self, box):
        return (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2

    def iou_of(self, a, b):
        iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
        ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
        inter = iw * ih
        (aw, ah), (bw, bh) = self.sizes(a), self.sizes(b)
        return inter / (aw * ah + bw * bh - inter + EPS)

    def enclosing(self):
        width = torch.maximum(self.p[:, 2], self.t[:, 2]) - torch.minimum(self.p[:, 0], self.t[:, 0])
        height = torch.maximum(self.p[:, 3], self.t[:, 3]) - torch.minimum(self.p[:, 1], self.t[:, 1])
        return width, height


def target_bbox_iou(bbox_iou, pred, target, xywh: bool, flag: str | None):
    """The target's own bbox_iou (IoU, or with GIoU / DIoU / CIoU), shape (n,), for either of its APIs."""
    kwargs = {flag: True} if flag else {}
    if "x1y1x2y2" in inspect.signature(bbox_iou).parameters:   # YOLOv5 6.0 / 6.1: box1 transposed
        out = bbox_iou(pred.detach().T, target.detach(), x1y1x2y2=not xywh, **kwargs)
    else:
        out = bbox_iou(pred.detach(), target.detach(), xywh=xywh, **kwargs)
    return out.double().reshape(-1)


def siou(b: Boxes, theta=4.0, **_):
    (pcx, pcy), (tcx, tcy) = b.centre(b.p), b.centre(b.t)
    cw, ch = b.enclosing()
    sigma = torch.sqrt((tcx - pcx) ** 2 + (tcy - pcy) ** 2)
    sin_alpha = ((tcy - pcy).abs() / (sigma + EPS)).clamp(max=1)
    sin_beta = ((tcx - pcx).abs() / (sigma + EPS)).clamp(max=1)
    sine = torch.where(sin_alpha > math.sqrt(2) / 2, sin_beta, sin_alpha)   # the smaller angle
    angle = 1 - 2 * torch.sin(torch.arcsin(sine) - math.pi / 4) ** 2
    gamma = 2 - angle
    distance = 2 - torch.exp(-gamma * ((tcx - pcx) / (cw + EPS)) ** 2) - torch.exp(-gamma * ((tcy - pcy) / (ch + EPS)) ** 2)
    (w, h), (tw, th) = b.sizes(b.p), b.sizes(b.t)
    shape = (1 - torch.exp(-(w - tw).abs() / (torch.maximum(w, tw) + EPS))) ** theta \
        + (1 - torch.exp(-(h - th).abs() / (torch.maximum(h, th) + EPS))) ** theta
    return b.iou_of(b.p, b.t) - (distance + shape) / 2


def eiou(b: Boxes, **_):
    (pcx, pcy), (tcx, tcy) = b.centre(b.p), b.centre(b.t)
    cw, ch = b.enclosing()
    (w, h), (tw, th) = b.sizes(b.p), b.sizes(b.t)
    centre = ((tcx - pcx) ** 2 + (tcy - pcy) ** 2) / (cw ** 2 + ch ** 2 + EPS)
    return b.iou_of(b.p, b.t) - centre - (w - tw) ** 2 / (cw ** 2 + EPS) - (h - th) ** 2 / (ch ** 2 + EPS)


def mpdiou(b: Boxes, image_size=None, **_):
    size = torch.as_tensor(image_size, dtype=torch.float64).reshape(-1, 2)
    diagonal = size[:, 0] ** 2 + size[:, 1] ** 2
    top_left = ((b.p[:, :2] - b.t[:, :2]) ** 2).sum(1)
    bottom_right = ((b.p[:, 2:] - b.t[:, 2:]) ** 2).sum(1)
    return b.iou_of(b.p, b.t) - top_left / diagonal - bottom_right / diagonal


def shape_iou(b: Boxes, scale=0.0, **_):
    (pcx, pcy), (tcx, tcy) = b.centre(b.p), b.centre(b.t)
    cw, ch = b.enclosing()
    (w, h), (tw, th) = b.sizes(b.p), b.sizes(b.t)
    if scale:
        ww = 2 * tw ** scale / (tw ** scale + th ** scale)
        hh = 2 * th ** scale / (tw ** scale + th ** scale)
    else:
        ww = hh = torch.ones_like(tw)
    distance = hh * (pcx - tcx) ** 2 / (cw ** 2 + ch ** 2 + EPS) + ww * (pcy - tcy) ** 2 / (cw ** 2 + ch ** 2 + EPS)
    omega_w = hh * (w - tw).abs() / (torch.maximum(w, tw) + EPS)
    omega_h = ww * (h - th).abs() / (torch.maximum(h, th) + EPS)
    shape = (1 - torch.exp(-omega_w)) ** 4 + (1 - torch.exp(-omega_h)) ** 4
    return b.iou_of(b.p, b.t) - distance - 0.5 * shape


def _scaled(b: Boxes, box, ratio):
    (cx, cy), (w, h) = b.centre(box), b.sizes(box)
    return torch.stack([cx - w * ratio / 2, cy - h * ratio / 2, cx + w * ratio / 2, cy + h * ratio / 2], 1)


def _with_base(b: Boxes, value, base, target_iou, **options):
    if base == "none":
        return value
    return base_value(b, base, target_iou, **options) - b.iou_of(b.p, b.t) + value


def inner_iou(b: Boxes, ratio=0.7, base="none", target_iou=None, **options):
    inner = b.iou_of(_scaled(b, b.p, ratio), _scaled(b, b.t, ratio))
    return _with_base(b, inner, base, target_iou, **options)


def focaler_iou(b: Boxes, d=0.0, u=0.95, base="none", target_iou=None, **options):
    focaler = ((b.iou_of(b.p, b.t) - d) / (u - d)).clamp(0, 1)
    return _with_base(b, focaler, base, target_iou, **options)


def wiou_v3(b: Boxes, alpha=1.9, delta=3.0, half_life=7000, mean_before=1.0, **_):
    """1 - r R_WIoU L_IoU with the running mean moved by this batch first (the call trains)."""
    l_iou = 1 - b.iou_of(b.p, b.t)
    (pcx, pcy), (tcx, tcy) = b.centre(b.p), b.centre(b.t)
    cw, ch = b.enclosing()
    r_wiou = torch.exp(((tcx - pcx) ** 2 + (tcy - pcy) ** 2) / (cw ** 2 + ch ** 2 + EPS))
    momentum = 1 - 0.5 ** (1 / half_life)
    mean = (1 - momentum) * mean_before + momentum * float(l_iou.mean())
    beta = l_iou / mean
    return 1 - beta / (delta * alpha ** (beta - delta)) * r_wiou * l_iou


# bases of the combined forms: the target's bbox_iou for the ones it has, the formulas above for the others
_TARGET_FLAGS = {"iou": None, "giou": "GIoU", "diou": "DIoU", "ciou": "CIoU"}
_OWN = {"siou": siou, "eiou": eiou, "mpdiou": mpdiou, "shape-iou": shape_iou}


def base_value(b: Boxes, base: str, target_iou, **options):
    if base in _TARGET_FLAGS:
        return target_iou(_TARGET_FLAGS[base])
    own = {"siou": {"theta"}, "mpdiou": {"image_size"}}.get(base, set())
    return _OWN[base](b, **{k: v for k, v in options.items() if k in own})


FUNCTIONS = {"siou": siou, "eiou": eiou, "mpdiou": mpdiou, "shape_iou": shape_iou, "inner_iou": inner_iou,
             "focaler_iou": focaler_iou, "wiou_v3": wiou_v3}
