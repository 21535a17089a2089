"""Row alignment on real releases: after apply, YAML row i is `model.model[i]` with `.i == i` in every
model the shipped recipes write and in tutorial-convention YAMLs (a backbone at row 0 filling rows 0-4);
`freeze=5` freezes exactly rows 0-4; the tutorial model computes the same outputs as the same network
written as plain rows; it survives what training and tooling do to a model; and it exports to ONNX."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import upstream
from lookalikes import FIXTURE_RECIPES

pytestmark = pytest.mark.real

PROBE = Path(__file__).resolve().parent / "alignment_probe.py"
TARGETS = {
    "ultralytics": lambda: upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS),
    "yolov5-pypi": lambda: upstream.pristine("yolov5", upstream.YOLOV5_PACKAGE),
    "yolov5-upstream": upstream.upstream_yolov5,
}
TRAINER = {"ultralytics": "ultralytics/engine/trainer.py", "yolov5-pypi": "yolov5/train.py", "yolov5-upstream": "train.py"}

# The same small network two ways: the fixture ToyBackbone (four Conv-BN-SiLU stages after a stride-2 stem)
# at row 0, and the identical convs as plain rows 0-4. Width 1.0, so the stock Conv rows keep their widths.
PLAIN_BACKBONE = ["[-1, 1, Conv, [16, 3, 2]]", "[-1, 1, Conv, [16, 3, 2]]", "[-1, 1, Conv, [32, 3, 2]]",
                  "[-1, 1, Conv, [64, 3, 2]]", "[-1, 1, Conv, [128, 3, 2]]"]
ULTRALYTICS_SMALL = """\
nc: 2
scales:
  n: [1.0, 1.0, 1024]
backbone:
{backbone}
  - [-1, 1, SPPF, [128, 5]] # 5
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 3], 1, Concat, [1]]
  - [-1, 1, C2f, [64]] # 8
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 2], 1, Concat, [1]]
  - [-1, 1, C2f, [32]] # 11
  - [-1, 1, Conv, [32, 3, 2]]
  - [[-1, 8], 1, Concat, [1]]
  - [-1, 1, C2f, [64]] # 14
  - [-1, 1, Conv, [64, 3, 2]]
  - [[-1, 5], 1, Concat, [1]]
  - [-1, 1, C2f, [128]] # 17
  - [[11, 14, 17], 1, Detect, [nc]]
"""
YOLOV5_SMALL = """\
nc: 2
depth_multiple: 1.0
width_multiple: 1.0
anchors:
  - [10,13, 16,30, 33,23]
  - [30,61, 62,45, 59,119]
  - [116,90, 156,198, 373,326]
backbone:
{backbone}
  - [-1, 1, SPPF, [128, 5]] # 5
head:
  - [-1, 1, Conv, [64, 1, 1]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 3], 1, Concat, [1]]
  - [-1, 1, C3, [64, False]] # 9
  - [-1, 1, Conv, [32, 1, 1]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 2], 1, Concat, [1]]
  - [-1, 1, C3, [32, False]] # 13
  - [-1, 1, Conv, [32, 3, 2]]
  - [[-1, 10], 1, Concat, [1]]
  - [-1, 1, C3, [64, False]] # 16
  - [-1, 1, Conv, [64, 3, 2]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 1, C3, [128, False]] # 19
  - [[13, 16, 19], 1, Detect, [nc, anchors]]
"""


def yolopatch(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True, text=True)


def probe(root: Path, flavour: str, *args) -> dict:
    result = subprocess.run([sys.executable, str(PROBE), flavour, *map(str, args)], cwd=root,
                            env=upstream.target_env(root), capture_output=True, text=True, timeout=1800)
    found: dict = {"rows": []}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            [(kind, report)] = json.loads(line).items()
            found["rows"].append(report) if kind == "rows" else found.__setitem__(kind, report)
    assert found["rows"], result.stderr[-3000:]
    return found


def small_yaml(flavour: str, backbone_rows: list) -> str:
    template = ULTRALYTICS_SMALL if flavour == "ultralytics" else YOLOV5_SMALL
    return template.format(backbone="\n".join(f"  - {row}" for row in backbone_rows))


@pytest.fixture(scope="module", params=list(TARGETS))
def patched(request, tmp_path_factory):
    """A fresh copy with every shipped recipe and the toy fixture recipe applied, and the probe's reports
    on it (one run of the target's interpreter per target). Every YAML the recipes write is built on the
    newest ultralytics and the yolov5 package; the upstream layout shares the package's yolo.py and
    builds the tutorial YAML only."""
    flavour = request.param
    root = upstream.fresh_copy(TARGETS[flavour](), tmp_path_factory.mktemp(flavour) / "repo")
    family = "ultralytics" if flavour == "ultralytics" else "yolov5"
    listing = json.loads(yolopatch("list", "--json").stdout)
    names = [r["name"] for r in listing if family in r["targets"] and r["modules"]]  # IoU-loss recipes: iou_sweep.py
    result = yolopatch("--recipes-dir", FIXTURE_RECIPES, "apply", *names, "toy", "--repo", root)
    assert result.returncode == 0, result.stderr
    folder = tmp_path_factory.mktemp(f"{flavour}-yamls")
    tutorial, plain = folder / "tutorial-toy.yaml", folder / "plain-toy.yaml"
    tutorial.write_text(small_yaml(flavour, ["[-1, 1, ToyBackbone, []] # 0-4"]))
    plain.write_text(small_yaml(flavour, PLAIN_BACKBONE))
    state = json.loads((root / ".yolopatch" / "state.json").read_text())
    written = sorted(str(root / rel) for rel in state["files"] if rel.endswith(".yaml"))
    assert len(written) >= 20
    sweep = written if flavour != "yolov5-upstream" else []
    onnx = ["--onnx", tutorial] if flavour != "yolov5-upstream" else []
    reports = probe(root, flavour, "--rows", *sweep, tutorial, "--same", tutorial, plain, *onnx, "--life", tutorial)
    assert len(reports["rows"]) == len(sweep) + 1
    return root, flavour, reports


def test_every_written_yaml_has_row_i_at_layer_i_and_freeze_5_freezes_rows_0_to_4(patched):
    root, flavour, reports = patched
    for report in reports["rows"]:
        name = Path(report["yaml"]).name
        assert report["indices"] == list(range(report["layers"])), name
        assert report["types"] == report["yaml_names"], name  # every other layer is its YAML entry, in order
        assert report["froze_exactly_rows_0_4"] and report["rows_0_4_params"] > 0, name
    # what the probe counts as frozen is what this release's trainer freezes
    trainer = (root / TRAINER[flavour]).read_text()
    assert re.search(r"""f(['"])model\.\{x\}\.\1 for x in""", trainer)


def test_tutorial_model_equals_the_same_network_as_plain_rows(patched):
    _, _, reports = patched
    assert reports["same"]["equal"], reports["same"]


def test_tutorial_model_exports_to_onnx(patched):
    _, flavour, reports = patched
    if flavour == "yolov5-upstream":
        pytest.skip("the same yolo.py as the packaged layout: exported there")
    result = reports["onnx"]
    assert result["max_abs_diff"] <= 1e-4 * max(1.0, result["scale"]), result


def test_tutorial_model_survives_training_deepcopy_pickling_profiling_fuse_and_half(patched):
    _, flavour, reports = patched
    result = reports["life"]
    assert result["same_after_reload"] and result["half"], result
    assert result["fused_diff"] <= 1e-3 * max(1.0, result["scale"]), result  # BatchNorm folded into the convs
    if flavour != "ultralytics":
        assert result["visualised"] > 10  # one feature image per layer with a spatial map
