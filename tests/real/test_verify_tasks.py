"""`yolopatch verify` knows the task: every task a release ships (detect, segment, pose, obb, classify) is
built with the target's own model class, its outputs checked, trained through its own loss and reloaded.
A sample for CI: on the newest ultralytics one tutorial-convention YAML per task with a MobileNetV4 backbone
(and YOLO26 heads) through the whole ladder with export, and the stock task configs; on 8.2.103 and 8.0.50
the stock configs of the tasks they ship; on the yolov5 7.0 package its segmentation model. The whole set of
stock configs of a release is an on-demand sweep: tests/verify_sweep.py."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import upstream
from lookalikes import tree_snapshot, tutorial_task_yaml, yolov5_tutorial

pytestmark = pytest.mark.real

PROBE = Path(__file__).resolve().parents[2] / "yolopatch" / "probe.py"
LADDER = ("names", "build", "shapes", "figures", "train", "amp", "fuse", "reload")


def patched_copy(version: str, tmp_path: Path, recipe: str = "mobilenetv4") -> Path:
    root = upstream.fresh_copy(upstream.pristine("ultralytics", version), tmp_path / "repo")
    done = subprocess.run([sys.executable, "-m", "yolopatch", "apply", recipe, "--repo", str(root)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return root


def run_verify(root: Path, yamls: list, *extra) -> tuple:
    args = [sys.executable, "-m", "yolopatch", "verify", "--repo", str(root), "--one-scale", "--json", *map(str, extra)]
    for yaml in yamls:
        args += ["--yaml", str(yaml)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=3000)
    assert done.stdout, done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout), done.stderr


def probe(root: Path, flavour: str, yamls: list) -> dict:
    """The target's own model class for each YAML (its guess_model_task) and the parameters it builds."""
    done = subprocess.run([sys.executable, str(PROBE), flavour, *map(str, yamls)], cwd=root,
                          env=upstream.target_env(root), capture_output=True, text=True, timeout=1500)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(yamls), done.stderr[-3000:]
    return {Path(line["yaml"]).name: line for line in lines}


def passed_steps(model: dict) -> set:
    return {step for step, entry in model["steps"].items() if entry["status"] == "passed"}


def copy_stock(root: Path, rels: list, dest: Path) -> list:
    """Copies of the release's own configs, outside the checkout (--yaml takes any path)."""
    dest.mkdir(exist_ok=True)
    return [Path(shutil.copy(root / rel, dest / Path(rel).name)) for rel in rels]


def test_newest_ultralytics_every_task_through_the_whole_ladder(tmp_path):
    """MobileNetV4ConvSmall at row 0 of a YOLO11 model of each task and of YOLO26 segment and pose heads
    (end2end, one-to-one branches, Segment26's semantic branch): build, shapes, train, reload and export."""
    root = patched_copy(upstream.NEWEST_ULTRALYTICS, tmp_path)
    folder = tmp_path / "yamls"
    folder.mkdir()
    wanted = {}
    for task in ("detect", "segment", "pose", "obb", "classify"):
        (folder / f"yolo11-{task}-mnv4.yaml").write_text(tutorial_task_yaml(task))
        wanted[f"yolo11n-{task}-mnv4"] = task
    for task in ("segment", "pose"):   # YOLO26's own heads: Segment26's semantic branch, Pose26's sigma branch
        (folder / f"yolo26-{task}-mnv4.yaml").write_text(tutorial_task_yaml(task, yolo26=True))
        wanted[f"yolo26n-{task}-mnv4"] = task
    before = tree_snapshot(root)
    code, report, err = run_verify(root, sorted(folder.iterdir()), "--export", "onnx")
    assert code == 0, report["failures"]
    models = {m["name"]: m for m in report["models"]}
    assert {name: m["kind"] for name, m in models.items()} == wanted
    for name, model in models.items():
        assert passed_steps(model) == set(LADDER) | {"export"}, (name, model["steps"])
        assert model["new_modules"] == ["MobileNetV4ConvSmall (row 0)"]
    nc = 5
    shapes = {name: m["output_shapes"] for name, m in models.items()}
    h, w = shapes["yolo11n-detect-mnv4"]["input"][2:]
    cells = sum((h // s) * (w // s) for s in (8, 16, 32))
    assert shapes["yolo11n-detect-mnv4"]["output"] == [1, 4 + nc, cells]
    assert shapes["yolo11n-segment-mnv4"]["output"] == [1, 4 + nc + 32, cells]
    assert shapes["yolo11n-segment-mnv4"]["proto"] == [1, 32, h // 4, w // 4]
    assert shapes["yolo26n-segment-mnv4"]["proto"] == [1, 32, h // 4, w // 4]
    assert shapes["yolo11n-pose-mnv4"]["output"] == [1, 4 + nc + 17 * 3, cells]
    assert shapes["yolo11n-obb-mnv4"]["output"] == [1, 4 + nc + 1, cells]
    assert shapes["yolo11n-classify-mnv4"]["output"] == [1, nc]
    assert models["yolo11n-classify-mnv4"]["strides"] == [32]
    # the stock check covers the stock model of every task verified
    stock = {s["name"]: s["status"] for s in report["checks"]["stock"]["models"]}
    assert stock == {name: "passed" for name in ("yolov8n", "rtdetr-l", "yolov8n-seg", "yolov8n-pose", "yolov8n-obb",
                                                 "yolov8n-cls")}
    assert tree_snapshot(root) == before


NEWEST_STOCK = ["ultralytics/cfg/models/11/yolo11-seg.yaml", "ultralytics/cfg/models/11/yolo11-pose.yaml",
                "ultralytics/cfg/models/11/yolo11-obb.yaml", "ultralytics/cfg/models/11/yolo11-cls.yaml",
                "ultralytics/cfg/models/26/yolo26-seg.yaml", "ultralytics/cfg/models/26/yolo26-obb.yaml",
                "ultralytics/cfg/models/26/yolo26-cls.yaml"]
STOCK_CONFIGS = {
    upstream.NEWEST_ULTRALYTICS: NEWEST_STOCK,
    upstream.MIDDLE_ULTRALYTICS: ["ultralytics/cfg/models/v8/yolov8-seg.yaml", "ultralytics/cfg/models/v8/yolov8-pose.yaml",
                                  "ultralytics/cfg/models/v8/yolov8-obb.yaml", "ultralytics/cfg/models/v8/yolov8-cls.yaml"],
    upstream.OLDEST_ULTRALYTICS: ["ultralytics/models/v8/seg/yolov8n-seg.yaml", "ultralytics/models/v8/cls/yolov8n-cls.yaml"],
}
TASK_OF_CLASS = {"DetectionModel": "detect", "SegmentationModel": "segment", "PoseModel": "pose", "OBBModel": "obb",
                 "ClassificationModel": "classify"}


# the middle release in the on-demand sweep (-m sweep): CI time; the oldest and newest run by default
@pytest.mark.parametrize("version", [pytest.param(v, marks=pytest.mark.sweep) if v == upstream.MIDDLE_ULTRALYTICS else v
                                     for v in STOCK_CONFIGS])
def test_stock_task_configs_train_and_reload_on_ultralytics(tmp_path, version, user_fixes):
    """The release's own configs of every task it ships, verified on a patched copy: the task verify finds
    and the parameters it builds equal what the target's own guess_model_task and model class give. (In the
    user's fixed environment: 8.0.50 refuses its own checkpoints under torch >= 2.6 otherwise.)"""
    root = patched_copy(version, tmp_path)
    yamls = copy_stock(root, STOCK_CONFIGS[version], tmp_path / "stock")
    reference = probe(root, "ultralytics", yamls)
    code, report, _ = run_verify(root, yamls)
    assert code == 0, report["failures"]
    assert len(report["models"]) == len(yamls)
    for model in report["models"]:
        ref = reference[Path(model["yaml"]).name]
        assert ref["ok"], ref
        assert model["kind"] == TASK_OF_CLASS[ref["model_class"]], (model["name"], ref["model_class"])
        assert model["params"] == ref["params"], model["name"]
        assert passed_steps(model) == set(LADDER), (model["name"], model["steps"])


TUTORIAL_YOLOV5_SEG = yolov5_tutorial("MobileNetV4ConvSmall", nc=4, head="Segment, [nc, anchors, 32, 256]")


def test_yolov5_segmentation_models(tmp_path, user_fixes):
    """The yolov5 7.0 package: the stock yolov5s-seg and a MobileNetV4 segmentation YAML through the ladder
    (SegmentationModel, the segment ComputeLoss with masks); a YAML with a Classify head is not built (YOLOv5
    makes classifiers from trained detection checkpoints) and the report says why."""
    root = upstream.fresh_copy(upstream.pristine("yolov5", upstream.YOLOV5_PACKAGE), tmp_path / "repo")
    assert subprocess.run([sys.executable, "-m", "yolopatch", "apply", "mobilenetv4", "--repo", str(root)],
                          capture_output=True).returncode == 0
    yamls = copy_stock(root, ["yolov5/models/segment/yolov5s-seg.yaml"], tmp_path / "stock")
    mine = tmp_path / "yolov5s-seg-mnv4.yaml"
    mine.write_text(TUTORIAL_YOLOV5_SEG)
    classifier = tmp_path / "yolov5s-cls-mnv4.yaml"
    classifier.write_text(TUTORIAL_YOLOV5_SEG.split("head:")[0] + "head:\n  [[-1, 1, Classify, [nc]]]\n")
    reference = probe(root, "yolov5-pypi", yamls + [mine])
    code, report, _ = run_verify(root, yamls + [mine, classifier], "--python", user_fixes)
    assert code == 0, report["failures"]
    models = {m["name"]: m for m in report["models"]}
    for name in ("yolov5s-seg", "yolov5s-seg-mnv4"):
        assert models[name]["kind"] == "segment"
        assert models[name]["params"] == reference[f"{name}.yaml"]["params"]
        assert passed_steps(models[name]) == set(LADDER), models[name]["steps"]
        assert models[name]["output_shapes"]["proto"][1] == 32
    assert models["yolov5s-seg-mnv4"]["new_modules"] == ["MobileNetV4ConvSmall (row 0)"]
    cls = models["yolov5s-cls-mnv4"]
    assert cls["kind"] == "classify" and cls["steps"]["names"]["status"] == "passed"
    assert cls["steps"]["build"]["status"] == "not-run"
    assert "from a trained detection checkpoint" in cls["steps"]["build"]["message"]
    assert any("yolov5s-cls-mnv4.yaml is not verified beyond its names" in n for n in report["notes"])
