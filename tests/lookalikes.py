"""Hand-written look-alikes of the targets' parser files (parse_model + forward loops), in each anchor
shape the real releases use: the channel set as list / tuple / set literal or a frozenset local,
`nn.` vs `torch.nn.`, quote styles, one element per line or wrapped, `_forward_once` vs `_predict_once`.
They are small fakes for testing the edits, not copies of upstream code.
"""

from __future__ import annotations

from pathlib import Path

FIXTURE_RECIPES = Path(__file__).resolve().parent / "fixtures" / "recipes"

STYLES = ("v5-list", "v5-set", "v5-master", "ul-tuple", "ul-set", "ul-frozenset")


def _collection(style: str, names: list[str], indent: str) -> str:
    if style.endswith("list"):
        return "[" + ", ".join(names) + "]"
    if style.endswith("tuple"):
        return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"
    if style == "v5-set" and len(names) > 1:  # wrapped over two lines with a hanging indent
        half = len(names) // 2
        return "{\n" + indent + "        " + ", ".join(names[:half]) + ",\n" + indent + "        " + \
            ", ".join(names[half:]) + "}"
    return "{" + ", ".join(names) + "}"


def parser_source(style: str) -> str:
    nn = "torch.nn" if style.startswith("ul") else "nn"
    q = "'" if style.startswith("v5") and style != "v5-master" else '"'
    loop_name = "_forward_once" if style.startswith("v5") or style == "ul-tuple" else "_predict_once"
    signature = "self, x, profile=False" if style == "v5-master" else "self, x, profile=False, visualize=False"
    scaled = ["Conv", "Bottleneck", "SPPF", "C3", f"{nn}.ConvTranspose2d"]
    repeats = ["C3"]
    header = "import torch\nimport torch.nn as nn\n\n"
    if style == "v5-master":
        header += "from models.common import C3, SPPF, Bottleneck, Concat, Conv\n"
    elif style.startswith("v5"):
        header += "from models.common import *  # noqa\n"
    else:
        header += "from ultralytics.nn.modules import C3, SPPF, Bottleneck, Concat, Conv, Detect\n"
    header += "from utils.general import make_divisible\n"
    if style == "ul-frozenset":
        sets = (
            "    base_modules = frozenset(\n        {\n" + "".join(f"            {n},\n" for n in scaled)
            + "        }\n    )\n"
            + "    repeat_modules = frozenset(  # modules with 'repeat' arguments\n        {\n"
            + "".join(f"            {n},\n" for n in repeats) + "        }\n    )\n"
        )
        scaled_test, repeat_test = "base_modules", "repeat_modules"
    else:
        sets = ""
        scaled_test = _collection(style, scaled, "    ")
        repeat_test = _collection(style, repeats, "        ")
    np_line = ("        m_.np = sum(x.numel() for x in m_.parameters())  # number params\n"
               "        m_.i, m_.f, m_.type = i, f, t  # attach index, 'from' index, type\n"
               if style.startswith("ul") else
               "        np = sum(x.numel() for x in m_.parameters())  # number params\n"
               "        m_.i, m_.f, m_.type, m_.np = i, f, t, np  # attach index, 'from' index, type, number params\n")
    return f'''{header}

class BaseModel(nn.Module):
    def {loop_name}({signature}):
        y, dt = [], []  # outputs
        for m in self.model:
            if m.f != -1:  # if not from previous layer
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)  # run
            y.append(x if m.i in self.save else None)  # save output
        return x


class DetectionModel(BaseModel):
    pass


def parse_model(d, ch):  # model_dict, input_channels
    gd, gw = d[{q}depth_multiple{q}], d[{q}width_multiple{q}]
    layers, save, c2 = [], [], ch[-1]  # layers, savelist, ch out
{sets}    for i, (f, n, m, args) in enumerate(d[{q}backbone{q}] + d[{q}head{q}]):  # from, number, module, args
        m = eval(m) if isinstance(m, str) else m  # eval strings
        n = n_ = max(round(n * gd), 1) if n > 1 else n  # depth gain
        if m in {scaled_test}:
            c1, c2 = ch[f], args[0]
            c2 = make_divisible(c2 * gw, 8)

            args = [c1, c2, *args[1:]]
            if m in {repeat_test}:
                args.insert(2, n)  # number of repeats
                n = 1
        elif m is {nn}.BatchNorm2d:
            args = [ch[f]]
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        else:
            c2 = ch[f]

        m_ = {nn}.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)  # module
        t = str(m)[8:-2].replace({q}__main__.{q}, {q}{q})  # module type
{np_line}        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)  # append to savelist
        layers.append(m_)
        if i == 0:
            ch = []
        ch.append(c2)
    return {nn}.Sequential(*layers), sorted(save)
'''


def make_target(root: Path, style: str, crlf: bool = False) -> Path:
    """A minimal checkout whose parser file has the given style (enough for detection and the edits)."""
    source = parser_source(style)
    if crlf:
        source = source.replace("\n", "\r\n")
    if style.startswith("v5"):
        (root / "models").mkdir(parents=True)
        (root / "models" / "__init__.py").write_text("")
        (root / "models" / "yolo.py").write_bytes(source.encode())
        (root / "models" / "common.py").write_text("# look-alike\n")
    else:
        version = {"ul-tuple": "8.0.100", "ul-set": "8.2.0", "ul-frozenset": "8.4.0"}[style]
        (root / "ultralytics" / "nn" / "modules").mkdir(parents=True)
        (root / "ultralytics" / "cfg" / "models" / "v8").mkdir(parents=True)
        (root / "ultralytics" / "__init__.py").write_text(f'__version__ = "{version}"\n')
        (root / "ultralytics" / "nn" / "__init__.py").write_text("")
        (root / "ultralytics" / "nn" / "modules" / "__init__.py").write_text("")
        (root / "ultralytics" / "nn" / "tasks.py").write_bytes(source.encode())
    return root


def tree_snapshot(root: Path) -> dict:
    """Every file (bytes + mode) and folder (mode) under root, for byte-identity checks."""
    snap = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        mode = path.lstat().st_mode
        snap[rel] = (mode, path.read_bytes() if path.is_file() else None)
    return snap


def tutorial_yolov8_yaml(backbone: str, nc: int = 80) -> str:
    """A YOLOv8 model YAML in the tutorials' convention: a multi-output backbone at row 0 filling rows 0-4,
    the head taking rows 2, 3 and 5 onwards."""
    return f"""\
nc: {nc}
scales:
  n: [0.33, 0.25, 1024]
backbone:
  - [-1, 1, {backbone}, []]  # 0-4
  - [-1, 1, SPPF, [1024, 5]]  # 5
head:
  - [-1, 1, nn.Upsample, [None, 2, 'nearest']]
  - [[-1, 3], 1, Concat, [1]]
  - [-1, 3, C2f, [512]]  # 8
  - [-1, 1, nn.Upsample, [None, 2, 'nearest']]
  - [[-1, 2], 1, Concat, [1]]
  - [-1, 3, C2f, [256]]  # 11
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 8], 1, Concat, [1]]
  - [-1, 3, C2f, [512]]  # 14
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 5], 1, Concat, [1]]
  - [-1, 3, C2f, [1024]]  # 17
  - [[11, 14, 17], 1, Detect, [nc]]
"""


# The yolov5s head rows below SPPF, for yolov5_tutorial.
_YOLOV5_HEAD_ROWS = """\
  [[-1, 1, Conv, [{c4}, 1, 1]],
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 3], 1, Concat, [1]],
   [-1, {n}, C3, [{c4}, False]],  # 9
   [-1, 1, Conv, [{c3}, 1, 1]],
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 2], 1, Concat, [1]],
   [-1, {n}, C3, [{c3}, False]],  # 13
   [-1, 1, Conv, [{c3}, 3, 2]],
   [[-1, 10], 1, Concat, [1]],
   [-1, {n}, C3, [{c4}, False]],  # 16
   [-1, 1, Conv, [{c4}, 3, 2]],
   [[-1, 6], 1, Concat, [1]],
   [-1, {n}, C3, [{c5}, False]],  # 19
   [[13, 16, 19], 1, {head}],
  ]
"""


def yolov5_tutorial(backbone: str, nc: int = 80, head: str = "Detect, [nc, anchors]", half: bool = False) -> str:
    """A YOLOv5s model YAML in the tutorials' convention: a multi-output backbone at row 0 filling rows 0-4,
    SPPF at row 5, the stock head taking rows 2, 3 and 6 onwards. `head`: the last row's module and
    arguments; `half`: half the head's widths and one repeat per C3 (a faster model)."""
    c3, c4, c5 = (128, 256, 512) if half else (256, 512, 1024)
    return f"""\
nc: {nc}
depth_multiple: 0.33
width_multiple: 0.50
anchors:
  - [10,13, 16,30, 33,23]
  - [30,61, 62,45, 59,119]
  - [116,90, 156,198, 373,326]
backbone:
  [[-1, 1, {backbone}, []],  # 0-4
   [-1, 1, SPPF, [1024, 5]],  # 5
  ]
head:
""" + _YOLOV5_HEAD_ROWS.format(c3=c3, c4=c4, c5=c5, n=1 if half else 3, head=head)


# The head row of each task, and the top-level keys it needs, for tutorial_task_yaml. The last entry is the
# YOLO26 (end-to-end) head of the task, or None where YOLO26 uses the plain one.
_TASK_HEADS = {
    "detect": ("Detect, [nc]", "", "Detect, [nc]"),
    "segment": ("Segment, [nc, 32, 256]", "", "Segment26, [nc, 32, 256]"),
    "pose": ("Pose, [nc, kpt_shape]", "kpt_shape: [17, 3]\n", "Pose26, [nc, kpt_shape]"),
    "obb": ("OBB, [nc, 1]", "", "OBB26, [nc, 1]"),
}


def tutorial_task_yaml(task: str, backbone: str = "MobileNetV4ConvSmall", yolo26: bool = False, nc: int = 5) -> str:
    """A YOLO11 (or, with yolo26, a YOLO26 end-to-end) model YAML of one task in the tutorials' convention:
    a multi-output backbone at row 0 filling rows 0-4, SPPF and C2PSA at rows 5 and 6, the head taking rows
    2, 3 and 7 onwards. `classify` puts the classification head right after the backbone's last level."""
    top = f"nc: {nc}\n" + ("end2end: True\nreg_max: 1\n" if yolo26 else "") + \
        "scales:\n  n: [0.50, 0.25, 1024]\n"
    if task == "classify":
        return top + f"""\
backbone:
  - [-1, 1, {backbone}, []]  # 0-4
head:
  - [-1, 1, Classify, [nc]]  # 5
"""
    plain, keys, e2e = _TASK_HEADS[task]
    return top + keys + f"""\
backbone:
  - [-1, 1, {backbone}, []]  # 0-4
  - [-1, 1, SPPF, [1024, 5]]  # 5
  - [-1, 2, C2PSA, [1024]]  # 6
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]  # 7
  - [[-1, 3], 1, Concat, [1]]  # 8 backbone P4
  - [-1, 2, C3k2, [512, False]]  # 9
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]  # 10
  - [[-1, 2], 1, Concat, [1]]  # 11 backbone P3
  - [-1, 2, C3k2, [256, False]]  # 12 (P3/8)
  - [-1, 1, Conv, [256, 3, 2]]  # 13
  - [[-1, 9], 1, Concat, [1]]  # 14
  - [-1, 2, C3k2, [512, False]]  # 15 (P4/16)
  - [-1, 1, Conv, [512, 3, 2]]  # 16
  - [[-1, 6], 1, Concat, [1]]  # 17
  - [-1, 2, C3k2, [1024, True]]  # 18 (P5/32)
  - [[12, 15, 18], 1, {e2e if yolo26 else plain}]  # 19
"""
