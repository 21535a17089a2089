"""Before / after / conflict examples of the loss-call edit (loss_call.py), one per anchor shape of the
releases; tests/test_loss_call.py turns every entry into tests (exact output both ways, a second pass is a
no-op, classification, the conflict's reason). The sources are small look-alikes of the real loss files."""

from textwrap import dedent

from .loss_call import IouCall


def _source(text: str) -> str:
    return dedent(text).lstrip("\n")


BBOX_LOSS_84 = _source('''
    import torch
    import torch.nn as nn

    from .metrics import bbox_iou, probiou
    from .tal import bbox2dist


    class BboxLoss(nn.Module):
        def forward(self, pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores,
                    target_scores_sum, fg_mask, imgsz, stride):
            fg_mask = fg_mask.nonzero(as_tuple=True)
            weight = target_scores[fg_mask].sum(-1, keepdim=True)
            iou = bbox_iou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, CIoU=True)
            loss_iou = ((1.0 - iou) * weight).sum() / target_scores_sum
            return loss_iou
''')

BBOX_LOSS_80 = _source('''
    import torch.nn as nn
    from .metrics import bbox_iou


    class BboxLoss(nn.Module):

        def forward(self, pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores, target_scores_sum, fg_mask):
            # IoU loss
            weight = torch.masked_select(target_scores.sum(-1), fg_mask).unsqueeze(-1)
            iou = bbox_iou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, CIoU=True)
            loss_iou = ((1.0 - iou) * weight).sum() / target_scores_sum
            return loss_iou
''')

COMPUTE_LOSS_70 = _source('''
    import torch

    from utils.metrics import bbox_iou
    from utils.torch_utils import de_parallel


    class ComputeLoss:
        def __call__(self, p, targets):  # predictions, targets
            for i, pi in enumerate(p):  # layer index, layer predictions
                b, a, gj, gi = indices[i]
                n = b.shape[0]
                if n:
                    pbox = torch.cat((pxy, pwh), 1)  # predicted box
                    iou = bbox_iou(pbox, tbox[i], CIoU=True).squeeze()  # iou(prediction, target)
                    lbox += (1.0 - iou).mean()  # iou loss
                    iou = iou.detach().clamp(0).type(tobj.dtype)
            return lbox
''')

COMPUTE_LOSS_60 = _source('''
    import torch

    from yolov5.utils.metrics import bbox_iou


    class ComputeLoss:
        def __call__(self, p, targets):
            for i, pi in enumerate(p):
                if n:
                    pbox = torch.cat((pxy, pwh), 1)
                    iou = bbox_iou(pbox.T, tbox[i], x1y1x2y2=False, CIoU=True)  # iou(prediction, target)
                    lbox += (1.0 - iou).mean()
            return lbox
''')

DETR_LOSS = _source('''
    import torch.nn as nn

    from ultralytics.utils.metrics import bbox_iou


    class DETRLoss(nn.Module):
        def _get_loss_bbox(self, pred_bboxes, gt_bboxes, postfix=""):
            name_giou = f"loss_giou{postfix}"
            loss = {}
            loss[name_giou] = 1.0 - bbox_iou(pred_bboxes, gt_bboxes, xywh=True, GIoU=True)
            loss[name_giou] = loss[name_giou].sum() / len(gt_bboxes)
            return loss

        def _get_loss(self, pred_bboxes, gt_bboxes):
            return bbox_iou(pred_bboxes.detach(), gt_bboxes, xywh=True).squeeze(-1)
''')

SIOU = IouCall("siou", (("theta", 4.0),))
MPDIOU = IouCall("mpdiou", image_size=True)
WIOU = IouCall("wiou_v3", (("alpha", 1.9), ("delta", 3.0), ("half_life", 7000)))
FOCALER_EIOU = IouCall("focaler_iou", (("d", 0.0), ("u", 0.95), ("base", "eiou")))

# name -> (site key, call, before, after)
EXAMPLES = {
    "ultralytics 8.4 BboxLoss": ("ultralytics", SIOU, BBOX_LOSS_84, BBOX_LOSS_84.replace(
        "from .metrics import bbox_iou, probiou\n",
        "from .metrics import bbox_iou, probiou\nfrom . import yolopatch_iou\n").replace(
        "iou = bbox_iou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, CIoU=True)",
        "iou = yolopatch_iou.siou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, theta=4.0)")),
    "ultralytics 8.4 BboxLoss, MPDIoU in grid units from imgsz / stride": ("ultralytics", MPDIOU, BBOX_LOSS_84,
        BBOX_LOSS_84.replace(
            "from .metrics import bbox_iou, probiou\n",
            "from .metrics import bbox_iou, probiou\nfrom . import yolopatch_iou\n").replace(
            "iou = bbox_iou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, CIoU=True)",
            "iou = yolopatch_iou.mpdiou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, "
            "image_size=yolopatch_iou.image_size_in_grid(imgsz, stride, fg_mask, pred_bboxes.shape[0]))")),
    "ultralytics 8.0 BboxLoss, MPDIoU in grid units from the anchors": ("ultralytics", MPDIOU, BBOX_LOSS_80,
        BBOX_LOSS_80.replace(
            "from .metrics import bbox_iou\n", "from .metrics import bbox_iou\nfrom . import yolopatch_iou\n").replace(
            "iou = bbox_iou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, CIoU=True)",
            "iou = yolopatch_iou.mpdiou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, "
            "image_size=yolopatch_iou.image_size_from_anchors(anchor_points, fg_mask, pred_bboxes.shape[0]))")),
    "yolov5 6.2-7.0 ComputeLoss, Wise-IoU": ("yolov5", WIOU, COMPUTE_LOSS_70, COMPUTE_LOSS_70.replace(
        "from utils.metrics import bbox_iou\n", "from utils.metrics import bbox_iou\nfrom utils import yolopatch_iou\n")
        .replace("iou = bbox_iou(pbox, tbox[i], CIoU=True).squeeze()",
                 "iou = yolopatch_iou.wiou_v3(pbox, tbox[i], xywh=True, alpha=1.9, delta=3.0, half_life=7000)"
                 ".squeeze()")),
    "yolov5 7.0 ComputeLoss, MPDIoU over the level's grid": ("yolov5", MPDIOU, COMPUTE_LOSS_70, COMPUTE_LOSS_70.replace(
        "from utils.metrics import bbox_iou\n", "from utils.metrics import bbox_iou\nfrom utils import yolopatch_iou\n")
        .replace("iou = bbox_iou(pbox, tbox[i], CIoU=True).squeeze()",
                 "iou = yolopatch_iou.mpdiou(pbox, tbox[i], xywh=True, image_size=(pi.shape[3], pi.shape[2]))"
                 ".squeeze()")),
    "yolov5 6.0 ComputeLoss, transposed boxes": ("yolov5", MPDIOU, COMPUTE_LOSS_60, COMPUTE_LOSS_60.replace(
        "from yolov5.utils.metrics import bbox_iou\n",
        "from yolov5.utils.metrics import bbox_iou\nfrom yolov5.utils import yolopatch_iou\n")
        .replace("iou = bbox_iou(pbox.T, tbox[i], x1y1x2y2=False, CIoU=True)",
                 "iou = yolopatch_iou.mpdiou(pbox, tbox[i], xywh=True, image_size=(pi.shape[3], pi.shape[2]))"
                 ".squeeze(-1)")),
    "RT-DETR GIoU term": ("rtdetr", FOCALER_EIOU, DETR_LOSS, DETR_LOSS.replace(
        "from ultralytics.utils.metrics import bbox_iou\n",
        "from ultralytics.utils.metrics import bbox_iou\nfrom ultralytics.utils import yolopatch_iou\n").replace(
        "1.0 - bbox_iou(pred_bboxes, gt_bboxes, xywh=True, GIoU=True)",
        '1.0 - yolopatch_iou.focaler_iou(pred_bboxes, gt_bboxes, xywh=True, d=0.0, u=0.95, base="eiou")')),
    "RT-DETR GIoU term, MPDIoU on normalised boxes": ("rtdetr", MPDIOU, DETR_LOSS, DETR_LOSS.replace(
        "from ultralytics.utils.metrics import bbox_iou\n",
        "from ultralytics.utils.metrics import bbox_iou\nfrom ultralytics.utils import yolopatch_iou\n").replace(
        "1.0 - bbox_iou(pred_bboxes, gt_bboxes, xywh=True, GIoU=True)",
        "1.0 - yolopatch_iou.mpdiou(pred_bboxes, gt_bboxes, xywh=True, image_size=(1.0, 1.0))")),
}

_APPLIED_SIOU = EXAMPLES["ultralytics 8.4 BboxLoss"][3]

# name -> (site key, call, source, what the reason says)
CONFLICTS = {
    "a tutorial changed the flag": ("ultralytics", SIOU, BBOX_LOSS_84.replace("CIoU=True", "WIoU=True"),
                                    "calls bbox_iou with WIoU=True, not CIoU=True"),
    "another IoU recipe's call is there": ("ultralytics", IouCall("eiou"), _APPLIED_SIOU,
                                           "already calls yolopatch_iou.siou"),
    "the same variant with other options": ("ultralytics", IouCall("siou", (("theta", 2.0),)), _APPLIED_SIOU,
                                            "with other options"),
    "no loss class": ("ultralytics", SIOU, BBOX_LOSS_84.replace("class BboxLoss", "class BoxLoss"),
                      "cannot find BboxLoss.forward"),
    "no IoU call": ("rtdetr", SIOU, DETR_LOSS.replace("1.0 - bbox_iou(pred_bboxes, gt_bboxes, xywh=True, GIoU=True)",
                                                      "F.l1_loss(pred_bboxes, gt_bboxes)"),
                    "cannot find the `bbox_iou(..., GIoU=True)` call in DETRLoss._get_loss_bbox"),
    "two IoU calls": ("yolov5", SIOU, COMPUTE_LOSS_70.replace(
        "                lbox += (1.0 - iou).mean()  # iou loss\n",
        "                lbox += (1.0 - iou).mean()  # iou loss\n"
        "                iou2 = bbox_iou(pbox, tbox[i], CIoU=True)\n"),
                      "ComputeLoss.__call__ holds 2 IoU calls"),
    "no import of bbox_iou": ("yolov5", SIOU, COMPUTE_LOSS_70.replace("from utils.metrics import bbox_iou\n", ""),
                              "cannot find the top-level `from <package>.metrics import bbox_iou`"),
    "MPDIoU outside the loop over levels": ("yolov5", MPDIOU, COMPUTE_LOSS_70.replace(
        "for i, pi in enumerate(p):", "for i in range(self.nl):"), "not inside a `for i, pi in enumerate(p)` loop"),
    "MPDIoU where BboxLoss gets no size": ("ultralytics", MPDIOU, BBOX_LOSS_80.replace(
        "anchor_points, ", ""), "receives neither imgsz and stride nor anchor_points"),
}
