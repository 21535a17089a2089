"""`yolopatch add` on real releases (newest ultralytics, yolov5 7.0 packaged and upstream layout): every
tutorial-style fixture file added (SE, CBAM, ECA, CoordAtt, SimAM, EMA, a C2f/C3 variant with a repeat
count, a stride-2 block, an upsampler, a multi-output backbone; the target's Conv imported in each
tutorial form), YAMLs using all of them verified, the lock reproducing the patch on a fresh copy, and
revert byte-identical."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import upstream
from lookalikes import tree_snapshot

pytestmark = pytest.mark.real

TUTORIAL = Path(__file__).resolve().parents[1] / "fixtures" / "tutorial"
TARGETS = {
    "ultralytics": lambda: upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS),
    "yolov5-pypi": lambda: upstream.pristine("yolov5", upstream.YOLOV5_PACKAGE),
    "yolov5-upstream": upstream.upstream_yolov5,
}
ANCHORS = """anchors:
  - [10,13, 16,30, 33,23]
  - [30,61, 62,45, 59,119]
  - [116,90, 156,198, 373,326]
"""
YAMLS = {
    "ultralytics": {
        "added-neck": """\
nc: 80
scales:
  n: [0.33, 0.25, 1024]
backbone:
  - [-1, 1, TinyNet, []] # 0-4
  - [-1, 1, SPPF, [1024, 5]] # 5
  - [-1, 1, CBAM, []] # 6
head:
  - [-1, 1, DySample, []] # 7
  - [[-1, 3], 1, Concat, [1]] # 8
  - [-1, 3, C2f_SE, [512]] # 9
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]] # 10
  - [[-1, 2], 1, Concat, [1]] # 11
  - [-1, 3, C2f, [256]] # 12
  - [-1, 1, SPDConv, [256]] # 13 stride 2
  - [[-1, 9], 1, Concat, [1]] # 14
  - [-1, 3, C2f_SE, [512]] # 15
  - [-1, 1, Conv, [512, 3, 2]] # 16
  - [[-1, 6], 1, Concat, [1]] # 17
  - [-1, 3, C2f, [1024]] # 18
  - [[12, 15, 18], 1, Detect, [nc]] # 19
""",
        "added-attention": """\
nc: 80
scales:
  n: [0.33, 0.25, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]] # 0
  - [-1, 1, Conv, [128, 3, 2]] # 1
  - [-1, 3, C2f, [128, True]] # 2
  - [-1, 1, Conv, [256, 3, 2]] # 3
  - [-1, 6, C2f, [256, True]] # 4
  - [-1, 1, Conv, [512, 3, 2]] # 5
  - [-1, 6, C2f, [512, True]] # 6
  - [-1, 1, Conv, [1024, 3, 2]] # 7
  - [-1, 3, C2f, [1024, True]] # 8
  - [-1, 1, SPPF, [1024, 5]] # 9
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]] # 10
  - [[-1, 6], 1, Concat, [1]] # 11
  - [-1, 3, C3SE, [512]] # 12
  - [-1, 1, ECA, []] # 13
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]] # 14
  - [[-1, 4], 1, Concat, [1]] # 15
  - [-1, 3, C2f, [256]] # 16
  - [-1, 1, SE, [8]] # 17 P3
  - [-1, 1, ConvSE, [256, 3, 2]] # 18
  - [[-1, 13], 1, Concat, [1]] # 19
  - [-1, 3, C2f, [512]] # 20
  - [-1, 1, EMA, [8]] # 21 P4
  - [-1, 1, Conv, [512, 3, 2]] # 22
  - [[-1, 9], 1, Concat, [1]] # 23
  - [-1, 3, C2f, [1024]] # 24
  - [-1, 1, CoordAtt, [1024]] # 25
  - [-1, 1, SimAM, []] # 26 P5
  - [[17, 21, 26], 1, Detect, [nc]] # 27
""",
    },
    "yolov5": {
        "added-neck": """\
nc: 80
depth_multiple: 0.33
width_multiple: 0.50
""" + ANCHORS + """\
backbone:
  [[-1, 1, TinyNet, []],  # 0-4
   [-1, 1, SPPF, [1024, 5]],  # 5
   [-1, 1, CBAM, []],  # 6
  ]
head:
  [[-1, 1, Conv, [512, 1, 1]],  # 7
   [-1, 1, DySample, []],  # 8
   [[-1, 3], 1, Concat, [1]],  # 9
   [-1, 3, C3SE, [512, False]],  # 10
   [-1, 1, Conv, [256, 1, 1]],  # 11
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],  # 12
   [[-1, 2], 1, Concat, [1]],  # 13
   [-1, 3, C3, [256, False]],  # 14 P3
   [-1, 1, SPDConv, [256]],  # 15 stride 2
   [[-1, 11], 1, Concat, [1]],  # 16
   [-1, 3, C3SE, [512, False]],  # 17 P4
   [-1, 1, Conv, [512, 3, 2]],  # 18
   [[-1, 7], 1, Concat, [1]],  # 19
   [-1, 3, C3, [1024, False]],  # 20 P5
   [[14, 17, 20], 1, Detect, [nc, anchors]],  # 21
  ]
""",
        "added-attention": """\
nc: 80
depth_multiple: 0.33
width_multiple: 0.50
""" + ANCHORS + """\
backbone:
  [[-1, 1, Conv, [64, 6, 2, 2]],  # 0
   [-1, 1, Conv, [128, 3, 2]],  # 1
   [-1, 3, C3, [128]],  # 2
   [-1, 1, Conv, [256, 3, 2]],  # 3
   [-1, 6, C3, [256]],  # 4
   [-1, 1, Conv, [512, 3, 2]],  # 5
   [-1, 9, C3, [512]],  # 6
   [-1, 1, Conv, [1024, 3, 2]],  # 7
   [-1, 3, C3, [1024]],  # 8
   [-1, 1, SPPF, [1024, 5]],  # 9
  ]
head:
  [[-1, 1, Conv, [512, 1, 1]],  # 10
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],  # 11
   [[-1, 6], 1, Concat, [1]],  # 12
   [-1, 3, C3, [512, False]],  # 13
   [-1, 1, ECA, []],  # 14
   [-1, 1, Conv, [256, 1, 1]],  # 15
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],  # 16
   [[-1, 4], 1, Concat, [1]],  # 17
   [-1, 3, C3, [256, False]],  # 18
   [-1, 1, SE, [8]],  # 19 P3
   [-1, 1, ConvSE, [256, 3, 2]],  # 20
   [[-1, 15], 1, Concat, [1]],  # 21
   [-1, 3, C3, [512, False]],  # 22
   [-1, 1, EMA, [8]],  # 23 P4
   [-1, 1, Conv, [512, 3, 2]],  # 24
   [[-1, 10], 1, Concat, [1]],  # 25
   [-1, 3, C3, [1024, False]],  # 26
   [-1, 1, CoordAtt, [1024]],  # 27
   [-1, 1, SimAM, []],  # 28 P5
   [[19, 23, 28], 1, Detect, [nc, anchors]],  # 29
  ]
""",
    },
}


def yolopatch(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


# the yolov5 package layout in the on-demand sweep (-m sweep): CI time; the upstream layout runs by default
@pytest.mark.parametrize("flavour", [pytest.param(f, marks=pytest.mark.sweep) if f == "yolov5-pypi" else f
                                     for f in TARGETS])
def test_tutorial_files_are_added_verified_locked_and_reverted(flavour, tmp_path):
    root = upstream.fresh_copy(TARGETS[flavour](), tmp_path / "repo")
    family = "ultralytics" if flavour == "ultralytics" else "yolov5"
    pristine = tree_snapshot(root)
    files = sorted(p.name for p in TUTORIAL.glob("*.py"))
    for file in files:
        result = yolopatch("add", TUTORIAL / file, "--repo", root)
        if family == "yolov5" and file == "c2f_se.py":  # C2f is ultralytics': refused, nothing written
            assert result.returncode == 3 and "imports C2f from ultralytics.nn.modules.block" in result.stderr
            continue
        assert result.returncode == 0, f"{file}: {result.stderr}"
    again = yolopatch("add", TUTORIAL / "se_block.py", "--repo", root)
    assert again.returncode == 0 and "nothing to do" in again.stderr

    yamls = []
    for name, text in YAMLS[family].items():
        (tmp_path / f"{name}.yaml").write_text(text)
        yamls += ["--yaml", tmp_path / f"{name}.yaml"]
    quick = ["--quick"] if family == "yolov5" else []  # the whole ladder on ultralytics (CI time)
    report = yolopatch("verify", "--repo", root, *yamls, "--one-scale", *quick, "--json")
    assert report.returncode == 0, report.stderr[-3000:]
    models = {m["name"]: m for m in json.loads(report.stdout)["models"]}
    assert set(models) == {"added-neck-n", "added-attention-n"} if family == "ultralytics" else \
        {"added-neck", "added-attention"}
    # every added class took part in a verified model
    new = {entry.split(" ")[0] for m in models.values() for entry in m["new_modules"]}
    expected = {"TinyNet", "CBAM", "DySample", "C3SE", "SPDConv", "SE", "ECA", "ConvSE", "EMA", "CoordAtt", "SimAM"}
    assert expected | ({"C2f_SE"} if family == "ultralytics" else set()) <= new

    assert yolopatch("lock", "--repo", root, "--no-figures").returncode == 0
    fresh = upstream.fresh_copy(TARGETS[flavour](), tmp_path / "fresh")
    shutil.copytree(root / "yolopatch-recipes", fresh / "yolopatch-recipes")
    shutil.copy(root / "yolopatch.lock", fresh / "yolopatch.lock")
    locked = yolopatch("apply", "--locked", "--repo", fresh)
    assert locked.returncode == 0, locked.stderr
    strip = lambda snap: {k: v for k, v in snap.items() if not k.startswith(".yolopatch")}  # noqa: E731
    assert strip(tree_snapshot(fresh)) == strip(tree_snapshot(root))

    (root / "yolopatch.lock").unlink()  # written by `lock`, not part of the patch
    reverted = yolopatch("revert", "--repo", root)
    assert reverted.returncode == 0, reverted.stderr
    assert tree_snapshot(root) == pristine
