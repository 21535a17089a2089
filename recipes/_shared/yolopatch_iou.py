"""IoU variants for the box-regression term of YOLO losses (plain torch; imports nothing of the target).

Every public variant takes predicted boxes `box1` and ground-truth boxes `box2` of shape (..., 4), in
corner form (`xywh=False`: x1, y1, x2, y2) or centre form (`xywh=True`: x, y, w, h), the way the targets'
`bbox_iou(box1, box2, ...)` does, and returns a tensor of shape (..., 1): the quantity the target's loss
subtracts from one. For the metrics that are an IoU minus penalties this is the metric itself
(loss = 1 - SIoU, 1 - EIoU, ...); for Wise-IoU it is 1 - L_WIoU.

    siou          Gevorgyan 2022, "SIoU Loss: More Powerful Learning for Bounding Box Regression" (arXiv:2205.12740)
    eiou          Zhang et al. 2021, "Focal and Efficient IOU Loss for Accurate Bounding Box Regression" (arXiv:2101.08158)
    wiou_v3       Tong et al. 2023, "Wise-IoU: Bounding Box Regression Loss with Dynamic Focusing Mechanism" (arXiv:2301.10051)
    mpdiou        Ma & Xu 2023, "MPDIoU: A Loss for Efficient and Accurate Bounding Box Regression" (arXiv:2307.07662)
    shape_iou     Zhang & Zhang 2023, "Shape-IoU: More Accurate Metric considering Bounding Box Shape and Scale" (arXiv:2312.17663)
    inner_iou     Zhang et al. 2023, "Inner-IoU: More Effective Intersection over Union Loss with Auxiliary Bounding Box" (arXiv:2311.02877)
    focaler_iou   Zhang & Zhang 2024, "Focaler-IoU: More Focused Intersection over Union Loss" (arXiv:2401.10525)

`iou`, `giou`, `diou` and `ciou` are the bases Inner-IoU and Focaler-IoU combine with
(L = L_base + IoU - IoU_inner / IoU_focaler).

Degenerate pairs (identical, concentric, zero-width, far apart) give finite values and gradients: `eps` is
added wherever a formula divides by a length or an area that can be zero.
"""

import math

import torch

__all__ = ("iou", "giou", "diou", "ciou", "siou", "eiou", "wiou_v3", "mpdiou", "shape_iou", "inner_iou",
           "focaler_iou", "BASES", "wiou_running_mean", "reset_wiou_running_mean", "image_size_in_grid",
           "image_size_from_anchors")


class _Pair:
    """The geometry every variant reads: corners, sizes, centre offset, overlap, enclosing box."""

    def __init__(self, box1, box2, xywh, eps):
        box1, box2 = _at_least_float32(box1), _at_least_float32(box2)
        self.eps = eps
        self.x1, self.y1, self.x2, self.y2 = _corners(box1, xywh)  # prediction
        self.gx1, self.gy1, self.gx2, self.gy2 = _corners(box2, xywh)  # ground truth
        self.w, self.h = self.x2 - self.x1, self.y2 - self.y1
        self.gw, self.gh = self.gx2 - self.gx1, self.gy2 - self.gy1
        self.inter = _overlap(self.x1, self.x2, self.gx1, self.gx2) * _overlap(self.y1, self.y2, self.gy1, self.gy2)
        self.union = self.w * self.h + self.gw * self.gh - self.inter
        self.iou = self.inter / (self.union + eps)
        # ground-truth centre minus predicted centre
        self.dx = (self.gx1 + self.gx2 - self.x1 - self.x2) / 2
        self.dy = (self.gy1 + self.gy2 - self.y1 - self.y2) / 2
        self.rho2 = self.dx ** 2 + self.dy ** 2
        # smallest enclosing box: width, height, squared diagonal
        self.cw = torch.maximum(self.x2, self.gx2) - torch.minimum(self.x1, self.gx1)
        self.ch = torch.maximum(self.y2, self.gy2) - torch.minimum(self.y1, self.gy1)
        self.c2 = self.cw ** 2 + self.ch ** 2 + eps


def _at_least_float32(box):
    """Half-precision boxes (mixed-precision training) are computed in float32: squared lengths and exp
    overflow or lose the small differences the losses are made of."""
    return box.float() if box.dtype in (torch.float16, torch.bfloat16) else box


def _corners(box, xywh):
    if xywh:
        x, y, w, h = box.chunk(4, -1)
        return x - w / 2, y - h / 2, x + w / 2, y + h / 2
    return box.chunk(4, -1)


def _overlap(a1, a2, b1, b2):
    return (torch.minimum(a2, b2) - torch.maximum(a1, b1)).clamp(min=0)


# ---- bases --------------------------------------------------------------------------------------------

def _iou(p):
    return p.iou


def _giou(p):
    """GIoU = IoU - (C - U) / C, C the area of the enclosing box (Rezatofighi et al. 2019)."""
    enclosing = p.cw * p.ch + p.eps
    return p.iou - (enclosing - p.union) / enclosing


def _diou(p):
    """DIoU = IoU - rho^2 / c^2 (Zheng et al. 2020)."""
    return p.iou - p.rho2 / p.c2


def _ciou(p):
    """CIoU = IoU - rho^2 / c^2 - alpha v, v = 4/pi^2 (atan(w_gt/h_gt) - atan(w/h))^2,
    alpha = v / ((1 - IoU) + v) taken as a constant in the gradient (Zheng et al. 2020)."""
    v = (4 / math.pi ** 2) * (torch.atan(p.gw / (p.gh + p.eps)) - torch.atan(p.w / (p.h + p.eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - p.iou + (1 + p.eps))
    return p.iou - (p.rho2 / p.c2 + alpha * v)


def _siou(p, theta=4.0):
    """SIoU = IoU - (Delta + Omega) / 2.

    Angle cost: Lambda = 1 - 2 sin^2(arcsin(x) - pi/4) with x = c_h / sigma, the sine of the angle between
    the centre line and the x axis. 1 - 2 sin^2(t) = cos(2t), so Lambda = sin(2 arcsin x) = 2 x sqrt(1 - x^2)
    = 2 |dx| |dy| / sigma^2: no square root or arcsin to blow up at concentric boxes, and symmetric in
    dx, dy, so taking the angle to the y axis when it is smaller (as the paper does) changes nothing.
    Distance cost: Delta = sum over x, y of 1 - exp(-gamma rho_t), rho_t = (d_t / c_t)^2 over the enclosing
    box's side, gamma = 2 - Lambda. Shape cost: Omega = sum over w, h of (1 - exp(-omega_t))^theta,
    omega_w = |w - w_gt| / max(w, w_gt).
    """
    angle = 2 * p.dx.abs() * p.dy.abs() / (p.rho2 + p.eps)
    gamma = 2 - angle
    distance = (1 - torch.exp(-gamma * p.dx ** 2 / (p.cw ** 2 + p.eps))) \
        + (1 - torch.exp(-gamma * p.dy ** 2 / (p.ch ** 2 + p.eps)))
    omega_w = (p.w - p.gw).abs() / (torch.maximum(p.w, p.gw) + p.eps)
    omega_h = (p.h - p.gh).abs() / (torch.maximum(p.h, p.gh) + p.eps)
    shape = (1 - torch.exp(-omega_w)) ** theta + (1 - torch.exp(-omega_h)) ** theta
    return p.iou - (distance + shape) / 2


def _eiou(p):
    """EIoU = IoU - rho^2 / c^2 - (w - w_gt)^2 / C_w^2 - (h - h_gt)^2 / C_h^2 over the enclosing box."""
    return (p.iou - p.rho2 / p.c2 - (p.w - p.gw) ** 2 / (p.cw ** 2 + p.eps)
            - (p.h - p.gh) ** 2 / (p.ch ** 2 + p.eps))


def _mpdiou(p, image_size):
    """MPDIoU = IoU - d1^2 / (w^2 + h^2) - d2^2 / (w^2 + h^2): d1, d2 the distances between the top-left and
    between the bottom-right corners, w x h the input image in the units of the boxes."""
    if image_size is None:
        raise ValueError("mpdiou needs image_size: the input image's (width, height) in the units of the boxes")
    if isinstance(image_size, torch.Tensor):
        size = image_size.to(p.x1.dtype)
        norm = (size ** 2).sum(-1, keepdim=True)
    else:
        width, height = image_size
        norm = float(width) ** 2 + float(height) ** 2
    d1 = (p.x1 - p.gx1) ** 2 + (p.y1 - p.gy1) ** 2
    d2 = (p.x2 - p.gx2) ** 2 + (p.y2 - p.gy2) ** 2
    return p.iou - d1 / norm - d2 / norm


def _shape_iou(p, scale=0.0):
    """Shape-IoU = IoU - distance_shape - 0.5 Omega_shape, weighted by the ground truth's shape:
    ww = 2 w_gt^scale / (w_gt^scale + h_gt^scale), hh = 2 h_gt^scale / (w_gt^scale + h_gt^scale);
    distance_shape = (hh dx^2 + ww dy^2) / c^2; omega_w = hh |w - w_gt| / max(w, w_gt),
    omega_h = ww |h - h_gt| / max(h, h_gt); Omega_shape = sum of (1 - exp(-omega_t))^4."""
    if scale == 0:
        ww = hh = 1.0  # x^0 / (x^0 + y^0) * 2 is exactly 1; pow(0, 0) would give a NaN gradient
    else:
        sw = p.gw.clamp(min=p.eps) ** scale
        sh = p.gh.clamp(min=p.eps) ** scale
        ww, hh = 2 * sw / (sw + sh), 2 * sh / (sw + sh)
    distance = (hh * p.dx ** 2 + ww * p.dy ** 2) / p.c2
    omega_w = hh * (p.w - p.gw).abs() / (torch.maximum(p.w, p.gw) + p.eps)
    omega_h = ww * (p.h - p.gh).abs() / (torch.maximum(p.h, p.gh) + p.eps)
    shape = (1 - torch.exp(-omega_w)) ** 4 + (1 - torch.exp(-omega_h)) ** 4
    return p.iou - distance - 0.5 * shape


BASES = {"none": _iou, "iou": _iou, "giou": _giou, "diou": _diou, "ciou": _ciou, "siou": _siou, "eiou": _eiou,
         "mpdiou": _mpdiou, "shape-iou": _shape_iou}


def _base(p, base, image_size):
    if base not in BASES:
        raise ValueError(f"base {base!r} is not one of {', '.join(BASES)}")
    return BASES[base](p, image_size) if base == "mpdiou" else BASES[base](p)


# ---- public variants ------------------------------------------------------------------------------------

def iou(box1, box2, xywh=True, eps=1e-7):
    return _iou(_Pair(box1, box2, xywh, eps))


def giou(box1, box2, xywh=True, eps=1e-7):
    return _giou(_Pair(box1, box2, xywh, eps))


def diou(box1, box2, xywh=True, eps=1e-7):
    return _diou(_Pair(box1, box2, xywh, eps))


def ciou(box1, box2, xywh=True, eps=1e-7):
    return _ciou(_Pair(box1, box2, xywh, eps))


def siou(box1, box2, xywh=True, theta=4.0, eps=1e-7):
    """SIoU with shape-cost exponent theta (the paper: 2 to 6, 4 by default)."""
    return _siou(_Pair(box1, box2, xywh, eps), theta)


def eiou(box1, box2, xywh=True, eps=1e-7):
    return _eiou(_Pair(box1, box2, xywh, eps))


def mpdiou(box1, box2, xywh=True, image_size=None, eps=1e-7):
    """MPDIoU; `image_size` is (width, height), or a tensor (..., 2) of them per box, in the boxes' units."""
    return _mpdiou(_Pair(box1, box2, xywh, eps), image_size)


def shape_iou(box1, box2, xywh=True, scale=0.0, eps=1e-7):
    """Shape-IoU; `box2` is the ground truth, whose shape weighs the terms (not symmetric unless scale = 0)."""
    return _shape_iou(_Pair(box1, box2, xywh, eps), scale)


def inner_iou(box1, box2, xywh=True, ratio=0.7, base="none", image_size=None, eps=1e-7):
    """Inner-IoU: the IoU of auxiliary boxes sharing each box's centre, with width and height times `ratio`.
    base "none": 1 - IoU_inner is the loss; otherwise L = L_base + IoU - IoU_inner."""
    if ratio <= 0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    p = _Pair(box1, box2, xywh, eps)
    half_w, half_h, half_gw, half_gh = p.w * ratio / 2, p.h * ratio / 2, p.gw * ratio / 2, p.gh * ratio / 2
    cx, cy = (p.x1 + p.x2) / 2, (p.y1 + p.y2) / 2
    gcx, gcy = (p.gx1 + p.gx2) / 2, (p.gy1 + p.gy2) / 2
    inter = (_overlap(cx - half_w, cx + half_w, gcx - half_gw, gcx + half_gw)
             * _overlap(cy - half_h, cy + half_h, gcy - half_gh, gcy + half_gh))
    union = (p.w * p.h + p.gw * p.gh) * ratio ** 2 - inter
    inner = inter / (union + eps)
    return inner if base == "none" else _base(p, base, image_size) - p.iou + inner


def focaler_iou(box1, box2, xywh=True, d=0.0, u=0.95, base="none", image_size=None, eps=1e-7):
    """Focaler-IoU: IoU mapped linearly from [d, u] onto [0, 1] (0 below d, 1 above u).
    base "none": 1 - IoU_focaler is the loss; otherwise L = L_base + IoU - IoU_focaler."""
    if not 0 <= d < u <= 1:
        raise ValueError(f"focaler-iou needs 0 <= d < u <= 1, got d={d}, u={u}")
    p = _Pair(box1, box2, xywh, eps)
    focaler = ((p.iou - d) / (u - d)).clamp(0, 1)
    return focaler if base == "none" else _base(p, base, image_size) - p.iou + focaler


# ---- Wise-IoU v3 -----------------------------------------------------------------------------------------

class _RunningMean:
    """The running mean of L_IoU that WIoU v3's outlier degree divides by. One per process, as in the
    authors' code (a class attribute there): it starts at 1 and is updated by every training call."""

    def __init__(self):
        self.value = torch.tensor(1.0)

    def update(self, batch_mean, momentum):
        self.value = (1 - momentum) * self.value.to(batch_mean.device) + momentum * batch_mean
        return self.value


_WIOU_MEAN = _RunningMean()


def wiou_running_mean():
    return float(_WIOU_MEAN.value)


def reset_wiou_running_mean(value=1.0):
    _WIOU_MEAN.value = torch.tensor(float(value))


def wiou_v3(box1, box2, xywh=True, alpha=1.9, delta=3.0, half_life=7000, eps=1e-7):
    """Returns 1 - L_WIoUv3, L_WIoUv3 = r R_WIoU L_IoU:

    L_IoU = 1 - IoU; R_WIoU = exp(rho^2 / (W_g^2 + H_g^2)*), the enclosing box's squared diagonal detached (*);
    r = beta / (delta alpha^(beta - delta)), beta = L_IoU* / mean(L_IoU), a constant in the gradient.
    The running mean starts at 1 and moves with momentum m = 1 - 0.5^(1 / half_life) (the authors'
    1 - 0.5^(1/7000)) by the batch mean of L_IoU, before beta is taken, on every call that trains: with
    gradients enabled and a `box1` that requires them (validation losses leave it alone).
    """
    if alpha <= 0 or delta <= 0 or half_life < 1:
        raise ValueError(f"wiou needs alpha > 0, delta > 0, half_life >= 1; got {alpha}, {delta}, {half_life}")
    p = _Pair(box1, box2, xywh, eps)
    l_iou = 1 - p.iou
    distance = torch.exp(p.rho2 / p.c2.detach())
    mean = _WIOU_MEAN.value.to(l_iou.device)
    if torch.is_grad_enabled() and box1.requires_grad and l_iou.numel():
        momentum = 1 - 0.5 ** (1 / half_life)
        mean = _WIOU_MEAN.update(l_iou.detach().mean(), momentum)
    beta = l_iou.detach() / mean
    r = beta / (delta * alpha ** (beta - delta))
    return 1 - r * distance * l_iou


# ---- image size in grid units, for MPDIoU inside ultralytics' BboxLoss ------------------------------------

def image_size_in_grid(imgsz, stride, fg_mask, batch):
    """(width, height) of the input image in grid units for every foreground anchor: imgsz (h, w) in pixels
    divided by the anchor's stride (shape (anchors, 1)), selected by the loss's `fg_mask` (a boolean
    (batch, anchors) mask or the tuple of indices it was turned into)."""
    per_anchor = imgsz.flip(0).to(stride.dtype) / stride
    return per_anchor.expand(batch, -1, -1)[fg_mask]


def image_size_from_anchors(anchor_points, fg_mask, batch):
    """The same from the anchor points alone (releases whose BboxLoss is not given imgsz and stride): each
    level's anchors form one contiguous block of grid-cell centres starting at the first cell, and the
    image is as many grid units wide and high as that level's grid."""
    starts = (anchor_points == anchor_points[0]).all(-1).nonzero().flatten().tolist() + [len(anchor_points)]
    sizes = torch.empty_like(anchor_points)
    for start, end in zip(starts, starts[1:]):
        block = anchor_points[start:end]
        sizes[start:end] = block.amax(0) - block.amin(0) + 1
    return sizes.expand(batch, -1, -1)[fg_mask]
