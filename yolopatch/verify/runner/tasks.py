"""What differs between tasks (detect, segment, pose, obb, classify, rtdetr), seen from inside the target
interpreter: the task of a head class, what the model's output must look like at a given input, and the
synthetic targets the task's own loss takes. The model classes per family live in adapters.py."""

from __future__ import annotations

import inspect
import math

import torch

from ..protocol import task_of_head

# (image index, class, cx, cy, w, h), normalised: two objects per image of a batch of two
BOXES = [(0, 0, 0.30, 0.35, 0.20, 0.30), (0, 1, 0.70, 0.60, 0.30, 0.25),
         (1, 2, 0.50, 0.50, 0.40, 0.40), (1, 0, 0.25, 0.70, 0.15, 0.20)]
ANGLES = [0.3, -0.5, 0.0, 0.8]   # radians, one per box, for oriented boxes
MASK_RATIO = 4                   # the trainers' default: instance masks at a quarter of the image size


def task_of_class(cls) -> str | None:
    """The task of a head class: its own name or the nearest base class named in protocol.HEAD_TASKS."""
    for klass in inspect.getmro(cls) if inspect.isclass(cls) else ():
        task = task_of_head(klass.__name__)
        if task:
            return task
    return None


def head(model):
    return model.model[-1]


def class_count(model) -> int:
    last = head(model)
    nc = getattr(last, "nc", None)
    if nc is None and hasattr(last, "linear"):        # Classify
        nc = last.linear.out_features
    if nc is None:
        nc = (getattr(model, "yaml", None) or {}).get("nc", 1)
    return int(nc)


def keypoint_shape(model) -> tuple:
    shape = getattr(head(model), "kpt_shape", None) or getattr(model, "kpt_shape", None) or (17, 3)
    return int(shape[0]), int(shape[1])


def extra_columns(task: str, model) -> int:
    """Columns a head adds to each box row beyond box and class scores."""
    last = head(model)
    if task == "segment":
        return int(last.nm)
    if task == "pose":
        nk, ndim = keypoint_shape(model)
        return nk * ndim
    if task == "obb":
        return int(getattr(last, "ne", 1))
    return 0


def one_to_one(model) -> bool:
    """A YOLO26 / YOLOv10 head with an NMS-free one-to-one branch (its inference output may be top-k rows)."""
    return any(name.startswith("one2one") for name, _ in head(model).named_children())


# synthetic targets --------------------------------------------------------------------------------------------
def _box_masks(size: tuple) -> tuple:
    """Instance masks as the segment trainers pass them (overlap format at 1/MASK_RATIO: pixel value k + 1
    marks the image's k-th object) and the matching class-index map of YOLO26's semantic branch."""
    h, w = size[0] // MASK_RATIO, size[1] // MASK_RATIO
    masks, semantic = torch.zeros(2, h, w), torch.zeros(2, h, w)
    seen = [0, 0]
    for image, cls, cx, cy, bw, bh in BOXES:
        seen[image] += 1
        y0, y1 = int((cy - bh / 2) * h), int(math.ceil((cy + bh / 2) * h))
        x0, x1 = int((cx - bw / 2) * w), int(math.ceil((cx + bw / 2) * w))
        masks[image, y0:y1, x0:x1] = seen[image]
        semantic[image, y0:y1, x0:x1] = cls
    return masks, semantic


def _keypoints(nk: int, ndim: int) -> torch.Tensor:
    """Per box, nk points spread inside it (normalised image coordinates), all visible."""
    points = torch.zeros(len(BOXES), nk, ndim)
    for b, (_, _, cx, cy, bw, bh) in enumerate(BOXES):
        for k in range(nk):
            points[b, k, 0] = cx + ((k * 0.37) % 1 - 0.5) * 0.8 * bw
            points[b, k, 1] = cy + ((k * 0.61) % 1 - 0.5) * 0.8 * bh
            if ndim == 3:
                points[b, k, 2] = 1.0
    return points


def targets(task: str, model, size: tuple) -> dict:
    """The labels of a synthetic batch of two images of `size`, in the keys the task's loss reads."""
    nc = class_count(model)
    if task == "classify":
        return {"cls": torch.tensor([k % nc for k in range(2)], dtype=torch.long)}
    rows = torch.tensor([(i, c % nc, x, y, w, h) for i, c, x, y, w, h in BOXES], dtype=torch.float32)
    batch = {"batch_idx": rows[:, 0], "cls": rows[:, 1:2], "bboxes": rows[:, 2:]}
    if task == "obb":
        batch["bboxes"] = torch.cat([rows[:, 2:], torch.tensor(ANGLES).view(-1, 1)], 1)
    elif task == "segment":
        batch["masks"], batch["sem_masks"] = _box_masks(size)
    elif task == "pose":
        batch["keypoints"] = _keypoints(*keypoint_shape(model))
    return batch


def yolov5_targets(model) -> torch.Tensor:
    nc = class_count(model)
    return torch.tensor([(i, c % nc, x, y, w, h) for i, c, x, y, w, h in BOXES], dtype=torch.float32)


# outputs ------------------------------------------------------------------------------------------------------
def comparable(task: str, output: torch.Tensor) -> torch.Tensor:
    """The values reload and export compare. A classifier outputs probabilities, near 1/nc each for an
    untrained model: compared in log space, so the tolerance is relative to each probability."""
    if task == "classify":
        return output.float().clamp_min(1e-30).log()
    return output


def output_problems(task: str, family: str, model, output: torch.Tensor, features: list, size: tuple,
                    proto) -> list:
    """What is wrong with the model's main inference output (and a segment head's prototypes) at `size`."""
    shape = tuple(output.shape)
    nc = class_count(model)
    if task == "classify":
        problems = [] if shape == (1, nc) else [f"the classifier's output has shape {shape}, expected (1, {nc})"]
        if not problems and (bool((output < 0).any()) or abs(float(output.sum()) - 1.0) > 1e-3):
            problems.append(f"the classifier's output at inference does not sum to 1 (sum {float(output.sum()):.4g}): "
                            "not probabilities")
        return problems
    if task == "rtdetr":   # per query: box and class scores, or (ultralytics 8.4) box, score and class
        ok = output.dim() == 3 and shape[-1] in (4 + nc, 6)
        return [] if ok else [f"the decoder's output has shape {shape}, expected (1, queries, {4 + nc}) or "
                              f"(1, queries, 6)"]
    extra = extra_columns(task, model)
    cells = sum(int(f.shape[-2]) * int(f.shape[-1]) for f in features if isinstance(f, torch.Tensor))
    if family == "yolov5":
        anchors = int(getattr(head(model), "na", 1)) * cells
        expected = (1, anchors, 5 + nc + extra)
    else:
        expected = (1, 4 + nc + extra, cells)
    problems = []
    top_k = one_to_one(model) and output.dim() == 3 and shape[-1] == 6 + extra
    if shape != expected and not top_k:
        what = f"nc={nc}" + (f" and {extra} {task} values per box" if extra else "")
        problems.append(f"the {task} head's output has shape {shape} at input {size[0]}x{size[1]}, expected "
                        f"{expected} ({what} over {cells} grid cells)")
    if task == "segment" and isinstance(proto, torch.Tensor):
        nm = extra
        first = next((f for f in features if isinstance(f, torch.Tensor)), None)
        want_hw = (first.shape[-2] * 2, first.shape[-1] * 2) if first is not None else None
        if proto.dim() != 4 or proto.shape[1] != nm or (want_hw and tuple(proto.shape[-2:]) != want_hw):
            problems.append(f"the mask prototypes have shape {tuple(proto.shape)}, expected (1, {nm}, "
                            f"{want_hw[0] if want_hw else '?'}, {want_hw[1] if want_hw else '?'}): {nm} masks at "
                            "twice the resolution of the head's first input")
    return problems
