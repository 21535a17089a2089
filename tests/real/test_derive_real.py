"""Derived YAMLs on real releases. A sample of stock configs (a few per layout) with a backbone recipe,
slimneck, bifpn and their combination: apply --base, build every derived YAML with the target's own model
class for its task, revert byte for byte; p2 and an attention recipe on a YOLO26 pose config through verify's
quick ladder. The whole matrix is on demand: `python tests/coverage.py` (builds) and
`python tests/derive_verify.py` (verify).

Static checks against the releases' own configs: the P2 transform rebuilds ultralytics' yolov8-p2 and
yolo26-p2 and YOLOv5's yolov5-p2 from their P3-P5 configs, and every backbone, attention, upsampler and
strided-block recipe derived onto yolov8 / yolov5s is row for row the recipe's own hand-written YAML.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import upstream
from lookalikes import tree_snapshot
from yolopatch import bases, manifest, plan, recipes, targets
from yolopatch.derive.compose import derive
from yolopatch.derive.facts import DeriveFacts
from yolopatch.derive.graph import Graph
from yolopatch.derive.render import render
from yolopatch.derive.yamlsubset import load

pytestmark = pytest.mark.real

# attention (inserted after each head input), upsampler, backbones, strided-conv blocks
NEW_RECIPES = ["se", "cbam", "eca", "coordatt", "simam", "ema", "dysample", "fasternet", "starnet", "rfaconv", "dcnv2"]
BUILD = Path(__file__).resolve().parents[1] / "derive_build.py"
SAMPLES = {
    "ultralytics": (lambda: upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS),
                    ["yolo11-seg", "yolo12-obb", "yolov8-cls", "rtdetr-l"]),
    "yolov5-pypi": (lambda: upstream.pristine("yolov5", upstream.YOLOV5_PACKAGE), ["yolov5s-seg"]),
    "yolov5-upstream": (upstream.upstream_yolov5, ["yolov3-tiny"]),
}


def yolopatch(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("layout", list(SAMPLES))
def test_a_sample_of_derived_yamls_builds_and_reverts(layout, tmp_path):
    source, sample = SAMPLES[layout]
    root = upstream.fresh_copy(source(), tmp_path / "repo")
    before = tree_snapshot(root)
    result = yolopatch("apply", "mobilenetv4", "slimneck", "bifpn", "--base", ",".join(sample), "--repo", root)
    assert result.returncode == 0, result.stderr
    target = targets.detect(root)
    applied = recipes.resolve(["mobilenetv4", "slimneck", "bifpn"])
    state = manifest.load(root)
    derived = sorted({rel for r in applied for rel in bases.derived_paths(target, state, applied, r.name)})
    expected = 0
    for entry in bases.report(target, None, applied)["bases"]:
        if entry["name"] in sample:
            good = [r for r in ("mobilenetv4", "slimneck", "bifpn") if entry["recipes"][r]["derives"]]
            expected += len(good) + (len(good) > 1)
    assert len(derived) == expected and expected >= 2 * len(sample) - 1
    built = subprocess.run([sys.executable, str(BUILD), target.flavour, *derived, "--first-scale"], cwd=root,
                           env=upstream.target_env(root), capture_output=True, text=True, timeout=2400)
    results = [json.loads(line) for line in built.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(derived), built.stderr[-3000:]
    assert [(r["yaml"], r.get("error")) for r in results if not r["ok"]] == []
    assert yolopatch("revert", "--repo", root).returncode == 0
    assert tree_snapshot(root) == before


def test_p2_and_attention_derived_onto_yolo26_pose_pass_verify(tmp_path):
    """The module-less p2 recipe with an attention recipe on a YOLO26 pose config: the derived YAMLs (each
    alone and combined) pass verify's quick ladder in the target's interpreter; revert is byte-identical."""
    root = upstream.fresh_copy(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path / "repo")
    before = tree_snapshot(root)
    assert yolopatch("apply", "p2", "cbam", "--base", "yolo26-pose", "--repo", root).returncode == 0
    target = targets.detect(root)
    derived = [f"{target.cfg_dir}/yolo26-pose-{name}.yaml" for name in ("p2", "cbam", "p2-cbam")]
    assert all((root / rel).is_file() for rel in derived)
    result = yolopatch("verify", "--repo", root, "--quick", "--one-scale", "--json",
                       *[a for rel in derived for a in ("--yaml", root / rel)])
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["passed"], result.stderr[-3000:]
    models = {m["name"]: m for m in report["models"]}
    assert sorted(models) == ["yolo26n-pose-cbam", "yolo26n-pose-p2", "yolo26n-pose-p2-cbam"]
    assert models["yolo26n-pose-p2"]["strides"] == [4, 8, 16, 32] and models["yolo26n-pose-p2"]["kind"] == "pose"
    assert models["yolo26n-pose-cbam"]["strides"] == [8, 16, 32]
    assert len(models["yolo26n-pose-p2-cbam"]["new_modules"]) == 4  # a CBAM after each of the four head inputs
    assert yolopatch("revert", "--repo", root).returncode == 0
    assert tree_snapshot(root) == before


def test_slimneck_on_yolov9e_passes_verify_beside_its_cblinear_rows(tmp_path):
    """yolov9e's second backbone branch has CBLinear rows, for which parse_model records a list of widths:
    the slim-neck blocks after them are compared with their own rows' widths and pass the quick ladder."""
    root = upstream.fresh_copy(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path / "repo")
    assert yolopatch("apply", "slimneck", "--base", "yolov9e", "--repo", root).returncode == 0
    derived = root / targets.detect(root).cfg_dir / "yolov9e-slimneck.yaml"
    result = yolopatch("verify", "--repo", root, "--quick", "--json", "--yaml", derived)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["passed"], result.stderr[-3000:]
    [model] = [m for m in report["models"] if m["name"].startswith("yolov9e-slimneck")]
    assert {n.split(" ")[0] for n in model["new_modules"]} == {"VoVGSCSP", "GSConv"}
    assert model["strides"] == [8, 16, 32]


def _rows_of(text: str) -> dict:
    config = yaml.safe_load(text)
    return {"rows": config["backbone"] + config["head"], **{k: v for k, v in config.items() if k not in ("backbone", "head")}}


@pytest.mark.parametrize("base, reference, family", [
    ("cfg/models/v8/yolov8.yaml", "cfg/models/v8/yolov8-p2.yaml", "ultralytics"),
    ("cfg/models/26/yolo26.yaml", "cfg/models/26/yolo26-p2.yaml", "ultralytics"),
    ("models/yolov5l.yaml", "models/hub/yolov5-p2.yaml", "yolov5"),
])
def test_p2_rebuilds_the_releases_own_p2_configs(base, reference, family):
    root = upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS) / "ultralytics" if family == "ultralytics" \
        else upstream.pristine("yolov5", upstream.YOLOV5_PACKAGE) / "yolov5"
    graph = derive(Graph.from_config(load((root / base).read_text()), family), [("p2", DeriveFacts(kind="p2"))])
    got = _rows_of(render(graph, "x", base, family, "detect", ["p2"]).decode())
    want = _rows_of((root / reference).read_text())
    if family == "yolov5":  # YOLOv5's own P2 config gives its new P2 block one repeat, the other levels three
        assert want["rows"][21] == [-1, 1, "C3", [128, False]] and got["rows"][21] == [-1, 3, "C3", [128, False]]
        got["rows"][21] = want["rows"][21]
    assert got == want


@pytest.mark.parametrize("release, base, recipe_yaml", [
    (("ultralytics", upstream.NEWEST_ULTRALYTICS), "yolov8", "yolov8-mobilenetv4"),
    (("ultralytics", upstream.NEWEST_ULTRALYTICS), "yolov8", "yolov8-slimneck"),
    (("yolov5", upstream.YOLOV5_PACKAGE), "yolov5s", "yolov5s-mobilenetv4"),
    (("yolov5", upstream.YOLOV5_PACKAGE), "yolov5s", "yolov5s-slimneck"),
    (("yolov5", upstream.YOLOV5_PACKAGE), "yolov5s", "yolov5s-xception"),
    *[(("ultralytics", upstream.NEWEST_ULTRALYTICS), "yolov8", f"yolov8-{name}") for name in NEW_RECIPES],
    *[(("yolov5", upstream.YOLOV5_PACKAGE), "yolov5s", f"yolov5s-{name}") for name in NEW_RECIPES],
])
def test_derived_yamls_equal_the_recipes_hand_written_ones(release, base, recipe_yaml):
    target = targets.detect(upstream.pristine(*release))
    recipe = recipes.resolve([recipe_yaml.split("-", 1)[1]])[0]
    hand = _hand_written(release)[f"{target.cfg_dir}/{recipe_yaml}.yaml"]
    derived = bases.derived_yamls(target, None, [recipe], [base]).files[f"{target.cfg_dir}/{recipe_yaml}.yaml"]
    assert _rows_of(derived.decode()) == _rows_of(hand)


@functools.lru_cache(maxsize=None)
def _hand_written(release) -> dict:
    """Every YAML the compared recipes write from their own templates, planned once per release."""
    target = targets.detect(upstream.pristine(*release))
    chosen = recipes.resolve(["mobilenetv4", "slimneck", "xception", *NEW_RECIPES])
    written = plan.build(target, chosen, lambda rel: (target.root / rel).read_bytes())
    return {f.rel: f.content.decode() for f in written if f.rel.endswith(".yaml")}
