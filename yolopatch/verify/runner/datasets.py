"""Small synthetic datasets for `verify --fit`, one per task, in the layout the targets' dataloaders read.

Every image is a PNG (written with the standard library: no imaging package needed) of noise with filled
shapes, and every label describes exactly the shapes drawn: boxes (detect, rtdetr), polygons (segment),
boxes with keypoints inside them (pose), rotated rectangles (obb), or one coloured image per class folder
(classify). The content does not matter for one epoch; the formats must be the ones the trainers parse:

  detection-style tasks   <root>/images/{train,val}/*.png, <root>/labels/{train,val}/*.txt and a data YAML
                          (`path`, `train`, `val`, `nc`, `names`, and `kpt_shape` / `flip_idx` for pose)
  classify                <root>/{train,val}/<class>/*.png; the trainers take the folder itself as `data`
"""

from __future__ import annotations

import math
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

TRAIN_IMAGES, VAL_IMAGES = 8, 4     # a batch of 4 gives whole batches (a batch of 1 breaks BatchNorm)
IMAGE_SIZE = (96, 128)              # height, width: non-square, so letterboxing is exercised
CLASSES = 2
OBJECTS_PER_IMAGE = 2
_COLOURS = ((220, 60, 40), (40, 90, 230), (60, 200, 80), (230, 200, 40))


LABELS = {"detect": "boxes", "rtdetr": "boxes", "segment": "polygons", "pose": "keypoints", "obb": "rotated boxes",
          "classify": "class folders"}


@dataclass
class Dataset:
    data: str           # what the trainer's `data` argument takes: the data YAML, or the folder (classify)
    nc: int
    sample_image: str   # an image for predict


def png_bytes(pixels: torch.Tensor) -> bytes:
    """An 8-bit RGB PNG of a (height, width, 3) uint8 tensor."""
    height, width, _ = pixels.shape
    rows = pixels.contiguous().view(height, width * 3)
    raw = b"".join(b"\x00" + bytes(row.tolist()) for row in rows)   # filter type 0 on every row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def _inside(polygon: list, height: int, width: int) -> torch.Tensor:
    """Pixels whose centre lies inside a polygon of normalised (x, y) vertices (even-odd rule)."""
    ys = (torch.arange(height, dtype=torch.float64) + 0.5).view(-1, 1) / height
    xs = (torch.arange(width, dtype=torch.float64) + 0.5).view(1, -1) / width
    inside = torch.zeros(height, width, dtype=torch.bool)
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1]):
        if y0 == y1:
            continue
        crosses = (ys >= min(y0, y1)) & (ys < max(y0, y1))
        x_at = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xs < x_at)
    return inside


@dataclass
class Shape:
    cls: int
    polygon: list       # normalised (x, y) vertices, anticlockwise on screen
    keypoints: list     # normalised (x, y) points inside the shape (pose)

    def box(self) -> tuple:
        """(cx, cy, w, h), normalised: the polygon's bounding box."""
        xs, ys = [p[0] for p in self.polygon], [p[1] for p in self.polygon]
        return (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)


def _ellipse(rng: random.Random, cls: int, keypoints: int) -> Shape:
    """A 12-gon inscribed in an axis-aligned ellipse, with keypoints spread inside it."""
    w, h = rng.uniform(0.25, 0.45), rng.uniform(0.25, 0.45)
    cx, cy = rng.uniform(w / 2 + 0.02, 1 - w / 2 - 0.02), rng.uniform(h / 2 + 0.02, 1 - h / 2 - 0.02)
    polygon = [(cx + w / 2 * math.cos(2 * math.pi * k / 12), cy - h / 2 * math.sin(2 * math.pi * k / 12))
               for k in range(12)]
    points = []
    for k in range(keypoints):
        angle, radius = 2 * math.pi * k / max(keypoints, 1), 0.6 * ((k * 0.618) % 1)
        points.append((cx + w / 2 * radius * math.cos(angle), cy - h / 2 * radius * math.sin(angle)))
    return Shape(cls, polygon, points)


def _rotated_rectangle(rng: random.Random, cls: int) -> Shape:
    """A rectangle turned by a random angle, kept inside the image (in pixels, then normalised)."""
    height, width = IMAGE_SIZE
    long_side, short_side = rng.uniform(30, 48), rng.uniform(14, 24)
    angle = rng.uniform(-math.pi / 2, math.pi / 2)
    cos, sin = math.cos(angle), math.sin(angle)
    half_w = (abs(long_side * cos) + abs(short_side * sin)) / 2
    half_h = (abs(long_side * sin) + abs(short_side * cos)) / 2
    cx, cy = rng.uniform(half_w + 1, width - half_w - 1), rng.uniform(half_h + 1, height - half_h - 1)
    corners = []
    for dx, dy in ((1, 1), (-1, 1), (-1, -1), (1, -1)):
        x, y = dx * long_side / 2, dy * short_side / 2
        corners.append(((cx + x * cos - y * sin) / width, (cy + x * sin + y * cos) / height))
    return Shape(cls, corners, [])


def _image(rng: random.Random, shapes: list) -> torch.Tensor:
    height, width = IMAGE_SIZE
    generator = torch.Generator().manual_seed(rng.randrange(2 ** 31))
    pixels = torch.randint(90, 150, (height, width, 3), generator=generator, dtype=torch.uint8)
    for shape in shapes:
        mask = _inside(shape.polygon, height, width)
        pixels[mask] = torch.tensor(_COLOURS[shape.cls % len(_COLOURS)], dtype=torch.uint8)
    return pixels


def _fmt(values) -> str:
    return " ".join(f"{v:.6f}" for v in values)


def label_line(task: str, shape: Shape, kpt_dims: int) -> str:
    """One object in the YOLO text label format of the task."""
    if task == "segment":
        return f"{shape.cls} " + _fmt(c for point in shape.polygon for c in point)
    if task == "obb":
        return f"{shape.cls} " + _fmt(c for point in shape.polygon for c in point)
    line = f"{shape.cls} " + _fmt(shape.box())
    if task == "pose":
        for x, y in shape.keypoints:
            line += " " + _fmt((x, y)) + (" 2" if kpt_dims == 3 else "")   # 2: labelled and visible
    return line


def _shapes(rng: random.Random, task: str, keypoints: int) -> list:
    shapes = []
    for k in range(OBJECTS_PER_IMAGE):
        cls = (k + rng.randrange(CLASSES)) % CLASSES
        shapes.append(_rotated_rectangle(rng, cls) if task == "obb" else _ellipse(rng, cls, keypoints))
    return shapes


def _data_yaml(root: Path, kpt_shape) -> str:
    names = ", ".join(f"c{k}" for k in range(CLASSES))
    lines = [f"path: {root.as_posix()}", "train: images/train", "val: images/val", f"nc: {CLASSES}",
             f"names: [{names}]"]
    if kpt_shape:
        lines.append(f"kpt_shape: [{int(kpt_shape[0])}, {int(kpt_shape[1])}]")
        lines.append(f"flip_idx: [{', '.join(str(k) for k in range(int(kpt_shape[0])))}]")   # unnamed points
    return "\n".join(lines) + "\n"


def write_detection_style(root: Path, task: str, kpt_shape=None, seed: int = 0) -> Dataset:
    """detect, rtdetr, segment, pose, obb: images, labels and the data YAML."""
    rng = random.Random(seed)
    keypoints, kpt_dims = (int(kpt_shape[0]), int(kpt_shape[1])) if task == "pose" else (0, 0)
    sample = None
    for split, count in (("train", TRAIN_IMAGES), ("val", VAL_IMAGES)):
        images, labels = root / "images" / split, root / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for k in range(count):
            shapes = _shapes(rng, task, keypoints)
            image = images / f"{split}{k:02d}.png"
            image.write_bytes(png_bytes(_image(rng, shapes)))
            (labels / f"{split}{k:02d}.txt").write_text(
                "\n".join(label_line(task, s, kpt_dims) for s in shapes) + "\n", encoding="utf-8")
            sample = sample or image
    data = root / "data.yaml"
    data.write_text(_data_yaml(root, kpt_shape if task == "pose" else None), encoding="utf-8")
    return Dataset(str(data), CLASSES, str(sample))


def write_classification(root: Path, seed: int = 0) -> Dataset:
    """classify: one folder per class under train/ and val/, each image dominated by its class colour."""
    rng = random.Random(seed)
    sample = None
    for split, count in (("train", TRAIN_IMAGES), ("val", VAL_IMAGES)):
        for k in range(count):
            cls = k % CLASSES
            folder = root / split / f"c{cls}"
            folder.mkdir(parents=True, exist_ok=True)
            shape = _ellipse(rng, cls, 0)
            image = folder / f"{split}{k:02d}.png"
            image.write_bytes(png_bytes(_image(rng, [shape])))
            sample = sample or image
    return Dataset(str(root), CLASSES, str(sample))


def write_dataset(root: Path, task: str, kpt_shape=None, seed: int = 0) -> Dataset:
    root.mkdir(parents=True, exist_ok=True)
    if task == "classify":
        return write_classification(root, seed)
    return write_detection_style(root, "detect" if task == "rtdetr" else task, kpt_shape, seed)
