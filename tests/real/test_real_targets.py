"""Every shipped recipe on real upstream releases: apply -> every generated YAML builds and runs ->
a second apply is a no-op -> revert leaves every byte as before. Also a YAML written by hand in the
tutorials' convention (backbone at row 0, head rows 2, 3 and 5+) builds unchanged."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import upstream
from lookalikes import tree_snapshot, tutorial_yolov8_yaml, yolov5_tutorial

pytestmark = pytest.mark.real

BUILD = Path(__file__).resolve().parents[2] / "yolopatch" / "probe.py"

TARGETS = {
    "ultralytics-newest": lambda: upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS),
    "ultralytics-8.2": lambda: upstream.pristine("ultralytics", upstream.MIDDLE_ULTRALYTICS),
    "yolov5-pypi": lambda: upstream.pristine("yolov5", upstream.YOLOV5_PACKAGE),
    "yolov5-upstream": upstream.upstream_yolov5,
}


def yolopatch(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True, text=True)


def shipped_recipes(family: str) -> list[str]:
    listing = json.loads(yolopatch("list", "--json").stdout)
    return [r["name"] for r in listing if family in r["targets"] and r["modules"]]  # IoU-loss recipes: iou_sweep.py


def build_all(root: Path, flavour: str, yamls: list[str]) -> list[dict]:
    result = subprocess.run([sys.executable, str(BUILD), flavour, *yamls], cwd=root, env=upstream.target_env(root),
                            capture_output=True, text=True, timeout=1500)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(yamls), result.stderr[-3000:]
    return lines


@pytest.fixture(scope="module", params=list(TARGETS))
def patched(request, tmp_path_factory):
    """A fresh copy of the target with every shipped recipe applied (module-scoped: built once)."""
    root = upstream.fresh_copy(TARGETS[request.param](), tmp_path_factory.mktemp(request.param) / "repo")
    status = json.loads(yolopatch("status", "--repo", root, "--json").stdout)
    family, flavour = status["target"]["family"], status["target"]["flavour"]
    pristine = tree_snapshot(root)
    names = shipped_recipes(family)
    result = yolopatch("apply", *names, "--repo", root)
    assert result.returncode == 0, result.stderr
    return root, flavour, pristine, names


def _verify(request, root, flavour, quick: bool, yamls=()):
    """The yolov5 7.0 package cannot reload its own checkpoints in this environment (torch >= 2.6, a newer
    huggingface_hub; verify exits 5 there, see test_verify_real.py): its whole ladder runs in the user's fixed
    environment."""
    from yolopatch.verify import run_verify

    python = str(request.getfixturevalue("user_fixes")) if flavour == "yolov5-pypi" and not quick else None
    report = run_verify(root, yamls=yamls, quick=quick, one_scale=True, python=python)
    assert report.passed, "\n".join(f"{f['model']} {f['step']}: {f['message']}" for f in report.to_dict()["failures"])
    return report


# the whole ladder in the default run: one recipe of each kind (backbone, neck block, fusion, same-width
# attention, upsampler, stride-2 block, a wrapper of another library); the sweep takes every recipe
WHOLE_LADDER_SAMPLE = ("mobilenetv4", "slimneck", "bifpn", "cbam", "dysample", "dcnv2", "timm")


def _whole_ladder_here(label: str, flavour: str) -> bool:
    return "8.2." not in label and flavour != "yolov5-upstream"


def first_yaml_per_recipe(root: Path, names) -> dict:
    """Each recipe's first YAML (sorted by path) among those apply wrote, from the state's file list."""
    status = json.loads(yolopatch("status", "--repo", root, "--json").stdout)
    yamls = sorted(rel for rel in status["files"] if rel.endswith(".yaml"))
    first = {}
    for name in names:
        mine = [rel for rel in yamls if Path(rel).stem.endswith(f"-{name}")]
        assert mine, f"no YAML of {name} among {yamls}"
        first[name] = mine[0]
    return first


def test_every_recipe_verifies(patched, request):
    """The quick ladder (import, names, build, shapes, figures) on every YAML the recipes wrote, at its first
    scale, where figures.toml was measured (the newest ultralytics, the yolov5 package; each recipe's first
    YAML on the others). The whole ladder on a sample: the next test."""
    root, flavour, _, names = patched
    label = release_label(root)
    measured = flavour == "yolov5-pypi" or label.endswith(upstream.NEWEST_ULTRALYTICS)
    first = first_yaml_per_recipe(root, names)
    yamls = () if measured else [root / y for y in first.values()]
    report = _verify(request, root, flavour, quick=True, yamls=yamls)
    if measured:
        assert {m["source"] for m in report.models} == set(names)
    else:  # chosen with --yaml: the report names them by path
        assert {m["yaml"] for m in report.models} == set(first.values())
    recorded = recorded_figures()  # `yolopatch show` prints recipes/*/figures.toml: it must match
    for model in report.models:
        figure = recorded.get(Path(model["yaml"]).name)
        if figure and figure["target"] == label:
            assert model["params"] == figure["params"], f"{model['yaml']}: figures.toml is stale"


# where the environment allows the whole ladder: the middle ultralytics release and the upstream YOLOv5 layout
# run the quick ladder only (their whole ladder is the on-demand sweep's)
WHOLE_LADDER_TARGETS = ["ultralytics-newest", "yolov5-pypi"]


@pytest.mark.parametrize("patched", WHOLE_LADDER_TARGETS, indirect=True)
def test_a_sample_of_recipes_through_the_whole_ladder(patched, request):
    """The whole ladder (but export) on each sampled recipe's first YAML: one recipe of each kind. A test of its
    own, so the two parts of a target's verification run on both test workers at once."""
    root, flavour, _, names = patched
    assert _whole_ladder_here(release_label(root), flavour)
    first = first_yaml_per_recipe(root, names)
    sample = [root / first[name] for name in WHOLE_LADDER_SAMPLE]
    whole = _verify(request, root, flavour, quick=False, yamls=sample)
    assert {m["yaml"] for m in whole.models} == {first[name] for name in WHOLE_LADDER_SAMPLE}


@pytest.mark.sweep
def test_every_yaml_through_the_whole_ladder(patched, request):
    """On demand: the whole ladder (but export) on every YAML where the environment allows it (the quick
    ladder on the others)."""
    root, flavour, _, names = patched
    report = _verify(request, root, flavour, quick=not _whole_ladder_here(release_label(root), flavour))
    assert {m["source"] for m in report.models} == set(names)


def recorded_figures() -> dict:
    import tomllib

    figures = {}
    for path in (Path(__file__).resolve().parents[2] / "recipes").glob("*/figures.toml"):
        for model in tomllib.loads(path.read_text()).get("models", []):
            figures[model["yaml"]] = model
    return figures


def release_label(root: Path) -> str:
    status = json.loads(yolopatch("status", "--repo", root, "--json").stdout)["target"]
    project = "ultralytics" if status["family"] == "ultralytics" else "yolov5"
    return f"{project} {status['version']}"


TUTORIAL_YOLOV5 = yolov5_tutorial("MobileNetV4ConvSmall")


TUTORIAL_BACKBONES = ("MobileNetV4ConvSmall", "MobileNetV2", "revcol_tiny")


def test_a_tutorial_yaml_builds_unchanged(patched, tmp_path):
    """Backbone at row 0, head rows using 2, 3 and 5+: 5-output (MobileNetV4) and 4-output backbones alike
    (built in one process: the target is imported once)."""
    root, flavour, _, _ = patched
    paths = []
    for backbone in TUTORIAL_BACKBONES:
        path = tmp_path / f"tutorial-{backbone}.yaml"
        if flavour == "ultralytics":
            path.write_text(tutorial_yolov8_yaml(backbone))
        else:
            path.write_text(TUTORIAL_YOLOV5.replace("MobileNetV4ConvSmall", backbone))
        paths.append(str(path))
    for backbone, result in zip(TUTORIAL_BACKBONES, build_all(root, flavour, paths)):
        assert result["ok"], f"{backbone}: {result.get('trace')}"
        assert result["strides"] == [8.0, 16.0, 32.0], backbone


def test_second_apply_is_a_noop_and_revert_is_byte_identical(patched):
    root, _, pristine, names = patched
    patched_tree = tree_snapshot(root)
    again = yolopatch("apply", *names, "--repo", root)
    assert again.returncode == 0 and "already applied" in again.stderr
    assert tree_snapshot(root) == patched_tree
    result = yolopatch("revert", "--repo", root)
    assert result.returncode == 0, result.stderr
    assert tree_snapshot(root) == pristine
    # the tree is shared by this module's tests, which test workers may run in any order: patched again
    assert yolopatch("apply", *names, "--repo", root).returncode == 0
    assert tree_snapshot(root) == patched_tree
