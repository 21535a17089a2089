"""Hand-written look-alike model configs in the shapes the targets' stock configs take (a PAN head over a
strided backbone, a context block after it, P6 levels, a classifier, a YOLOv5 head with lateral 1x1 convs,
an open-vocabulary head), and checkouts holding them. Small fakes for testing derivation, not copies of
upstream files: widths, repeats and comments are our own.
"""

from __future__ import annotations

from pathlib import Path

from lookalikes import make_target

DERIVE_RECIPES = Path(__file__).resolve().parent / "fixtures" / "derive_recipes"

PAN = """\
# a PAN detector: strided backbone, SPPF, top-down then bottom-up
nc: 7 # classes
scales:
  a: [0.5, 0.25, 512]
  b: [1.0, 0.5, 256]
backbone:
  - [-1, 1, Conv, [32, 3, 2]] # 0
  - [-1, 1, Conv, [64, 3, 2]] # 1
  - [-1, 2, C2f, [64, True]] # 2
  - [-1, 1, Conv, [128, 3, 2]] # 3
  - [-1, 2, C2f, [128, True]] # 4
  - [-1, 1, Conv, [256, 3, 2]] # 5
  - [-1, 2, C2f, [256, True]] # 6
  - [-1, 1, Conv, [512, 3, 2]] # 7
  - [-1, 2, C2f, [512, True]] # 8
  - [-1, 1, SPPF, [512, 5]] # 9
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]] # 10
  - [[-1, 6], 1, Concat, [1]] # 11
  - [-1, 2, C2f, [256]] # 12
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]] # 13
  - [[-1, 4], 1, Concat, [1]] # 14
  - [-1, 2, C2f, [128]] # 15
  - [-1, 1, Conv, [128, 3, 2]] # 16
  - [[-1, 12], 1, Concat, [1]] # 17
  - [-1, 2, C2f, [256]] # 18
  - [-1, 1, Conv, [256, 3, 2]] # 19
  - [[-1, 9], 1, Concat, [1]] # 20
  - [-1, 2, C2f, [512]] # 21
  - [[15, 18, 21], 1, Detect, [nc]] # 22
"""

# a YOLO11-style pose model: a residual context block (C2PSA) after the SPPF, its own top-level keys
PAN_POSE = """\
nc: 7
kpt_shape: [5, 3]
end2end: True
scales:
  a: [0.5, 0.25, 512]
backbone:
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, C3k2, [64, False, 0.25]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 1, C3k2, [128, False, 0.25]] # 4
  - [-1, 1, Conv, [256, 3, 2]]
  - [-1, 1, C3k2, [256, True]] # 6
  - [-1, 1, Conv, [512, 3, 2]]
  - [-1, 1, C3k2, [512, True]]
  - [-1, 1, SPPF, [512, 5, 3, True]] # 9
  - [-1, 1, C2PSA, [512]] # 10
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 1, C3k2, [256, False]] # 13
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 1, C3k2, [128, False]] # 16
  - [-1, 1, Conv, [128, 3, 2]]
  - [[-1, 13], 1, Concat, [1]]
  - [-1, 1, C3k2, [256, False]] # 19
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 10], 1, Concat, [1]]
  - [-1, 1, C3k2, [512, True]] # 22
  - [[16, 19, 22], 1, Pose26, [nc, kpt_shape]]
"""

CLASSIFY = """\
nc: 10
scales:
  a: [0.5, 0.25, 512]
backbone:
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [-1, 1, Conv, [512, 3, 2]]
  - [-1, 1, C2PSA, [512]]
head:
  - [-1, 1, Classify, [nc]]
"""

P6 = """\
nc: 3
depth_multiple: 0.5
width_multiple: 0.5
backbone:
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [-1, 1, Conv, [384, 3, 2]] # 4 stride 32
  - [-1, 2, C3, [384]] # 5
  - [-1, 1, Conv, [512, 3, 2]] # 6 stride 64
  - [-1, 2, C3, [512]]
  - [-1, 1, SPPF, [512, 5]] # 8
head:
  - [-1, 1, Conv, [384, 1, 1]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 5], 1, Concat, [1]]
  - [-1, 2, C3, [384, False]] # 12
  - [-1, 1, Conv, [384, 3, 2]]
  - [[-1, 9], 1, Concat, [1]]
  - [-1, 2, C3, [512, False]] # 15
  - [[12, 15], 1, Detect, [nc]]
"""

# YOLOv5 style: flow lists over several lines, anchors, lateral 1x1 convs before each upsample
V5 = """\
nc: 5  # classes
depth_multiple: 0.33
width_multiple: 0.50
anchors:
  - [10,13, 16,30, 33,23]  # P3/8
  - [30,61, 62,45, 59,119]  # P4/16
  - [116,90, 156,198, 373,326]  # P5/32

backbone:
  # [from, number, module, args]
  [[-1, 1, Conv, [64, 6, 2, 2]],  # 0
   [-1, 1, Conv, [128, 3, 2]],
   [-1, 3, C3, [128]],
   [-1, 1, Conv, [256, 3, 2]],
   [-1, 6, C3, [256]],  # 4
   [-1, 1, Conv, [512, 3, 2]],
   [-1, 9, C3, [512]],  # 6
   [-1, 1, Conv, [1024, 3, 2]],
   [-1, 3, C3, [1024]],
   [-1, 1, SPPF, [1024, 5]],  # 9
  ]

head:
  [[-1, 1, Conv, [512, 1, 1]],
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 6], 1, Concat, [1]],
   [-1, 3, C3, [512, False]],  # 13
   [-1, 1, Conv, [256, 1, 1]],  # 14
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 4], 1, Concat, [1]],
   [-1, 3, C3, [256, False]],  # 17
   [-1, 1, Conv, [256, 3, 2]],
   [[-1, 14], 1, Concat, [1]],
   [-1, 3, C3, [512, False]],  # 20
   [-1, 1, Conv, [512, 3, 2]],
   [[-1, 10], 1, Concat, [1]],
   [-1, 3, C3, [1024, False]],  # 23
   [[17, 20, 23], 1, Detect, [nc, anchors]],
  ]
"""

WORLD = PAN.replace("  - [-1, 2, C2f, [256]] # 12\n", "  - [-1, 2, C2fAttn, [256, 128, 4]] # 12\n") \
    .replace("Detect, [nc]]", "WorldDetect, [nc, 512, False]]")

ULTRALYTICS_CONFIGS = {"p8/toy8.yaml": PAN, "p8/toy8-pose.yaml": PAN_POSE, "p8/toy8-cls.yaml": CLASSIFY,
                       "p6/toy6-p6.yaml": P6, "p8/toy8-world.yaml": WORLD}
YOLOV5_CONFIGS = {"toy5s.yaml": V5, "hub/toy5-cls.yaml": CLASSIFY.replace("scales:\n  a: [0.5, 0.25, 512]\n", "")}


def make_derive_target(root: Path, style: str = "ul-frozenset") -> Path:
    """A look-alike checkout holding the look-alike stock configs above."""
    make_target(root, style)
    if style.startswith("v5"):
        folder, configs = root / "models", YOLOV5_CONFIGS
        (folder / "hub").mkdir(parents=True, exist_ok=True)
        (folder / "hub" / "anchors.yaml").write_text("default:\n  - [10,13, 16,30, 33,23]\n")  # not a model config
    else:
        folder, configs = root / "ultralytics" / "cfg" / "models", ULTRALYTICS_CONFIGS
    for rel, text in configs.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return root
