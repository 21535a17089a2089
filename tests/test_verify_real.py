"""`yolopatch verify` on real releases (newest ultralytics, yolov5 7.0.x packaged and upstream layout):
the toy recipe passes every step, the checkout stays byte-identical, and each fault of the faulty
fixture recipe is caught by its own step."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import upstream
from lookalikes import tree_snapshot, tutorial_yolov8_yaml

pytestmark = pytest.mark.real

FAULTY_RECIPES = Path(__file__).resolve().parent / "fixtures" / "recipes_faulty"
TOY_PARAMS = {"yolov8n-toy": 2_048_688, "rtdetr-l-toy": 18_656_956, "yolov5s-toy": 3_242_925}
STOCK_PARAMS = {"yolov8n": 3_157_200, "rtdetr-l": 32_970_476, "yolov5s": 7_235_389}


def fresh(source: Path, tmp_path: Path) -> Path:
    return upstream.fresh_copy(source, tmp_path / "repo")


def verify_json(cli, *args, recipes_dir=None) -> tuple:
    extra = ("--recipes-dir", recipes_dir) if recipes_dir else ()
    code, out, err = cli(*extra, "verify", *args, "--json")
    assert out, err
    return code, json.loads(out), err


def statuses(model: dict) -> dict:
    return {step: entry["status"] for step, entry in model["steps"].items()}


def by_name(report: dict) -> dict:
    return {m["name"]: m for m in report["models"]}


def assert_full_ladder(model: dict, export: bool) -> None:
    expected = {"names", "build", "shapes", "figures", "train", "reload"} | ({"export"} if export else set())
    got = statuses(model)
    assert {s for s, v in got.items() if v == "passed"} == expected, model["steps"]


def test_ultralytics_newest_toy_passes_every_step(cli, tmp_path):
    root = fresh(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    before = tree_snapshot(root)
    started = time.perf_counter()
    code, report, err = verify_json(cli, "--repo", root, "--export", "onnx")
    elapsed = time.perf_counter() - started
    assert code == 0, report["failures"]
    assert report["passed"] and report["exit_code"] == 0 and report["failures"] == []
    models = by_name(report)
    assert set(models) == {"yolov8n-toy", "yolov8s-toy", "yolov8m-toy", "yolov8l-toy", "yolov8x-toy", "rtdetr-l-toy"}
    for name in ("yolov8n-toy", "rtdetr-l-toy"):
        assert_full_ladder(models[name], export=True)
        assert models[name]["params"] == TOY_PARAMS[name]
        assert models[name]["new_modules"] == ["ToyBackbone (row 0)"]
    assert statuses(models["yolov8x-toy"]) == {"names": "passed", "build": "passed", "shapes": "passed",
                                               "figures": "passed", "train": "not-run", "reload": "not-run",
                                               "export": "not-run"}
    assert [m["params"] for m in report["models"] if m["kind"] == "detect"] == sorted(
        m["params"] for m in report["models"] if m["kind"] == "detect")  # n < s < m < l < x
    assert models["yolov8n-toy"]["gflops"] == pytest.approx(5.98, abs=0.05)
    assert all(m["strides"] == [8, 16, 32] for m in report["models"])
    stock = report["checks"]["stock"]
    assert stock["status"] == "passed"
    assert {s["name"]: s["params"] for s in stock["models"]} == {"yolov8n": STOCK_PARAMS["yolov8n"],
                                                                  "rtdetr-l": STOCK_PARAMS["rtdetr-l"]}
    assert "import  passed" in err and "export  passed rtdetr-l-toy" in err  # progress streamed to stderr
    assert tree_snapshot(root) == before  # no __pycache__, runs/, settings or checkpoints in the checkout
    # wall time is a benchmark figure (tests/benchmarks/bench_verify.py), not a test condition
    print(f"verify toy on ultralytics {upstream.NEWEST_ULTRALYTICS} with --export onnx: {elapsed:.1f}s")


@pytest.mark.parametrize("layout", ["yolov5-pypi", "yolov5-upstream"])
def test_yolov5_toy_passes_every_step(cli, tmp_path, layout):
    source = upstream.pristine("yolov5", upstream.YOLOV5_PACKAGE) if layout == "yolov5-pypi" else upstream.upstream_yolov5()
    root = fresh(source, tmp_path)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    before = tree_snapshot(root)
    code, report, _ = verify_json(cli, "--repo", root, "--export", "onnx")
    assert code == 0, report["failures"]
    assert report["target"]["flavour"] == layout
    (model,) = report["models"]
    assert model["name"] == "yolov5s-toy" and model["scale"] is None
    assert_full_ladder(model, export=True)
    assert model["params"] == TOY_PARAMS["yolov5s-toy"]
    assert model["strides"] == [8, 16, 32]
    assert [(s["name"], s["params"], s["status"]) for s in report["checks"]["stock"]["models"]] == [
        ("yolov5s", STOCK_PARAMS["yolov5s"], "passed")]
    assert tree_snapshot(root) == before


# backbone -> (model name, the step that must catch it, words its message must contain)
FAULTS = {
    "NoSuchBackbone": ("yolov8n-nosuch", "names", "unknown module names: NoSuchBackbone (backbone row 0)"),
    "BoomBackbone": ("yolov8n-boom", "build", "RuntimeError: BoomBackbone.forward always raises"),
    "LyingBackbone": ("yolov8n-lying", "shapes", "output 0 (stride 4): declares 16 channels, forward produces 24"),
    "NanBackbone": ("yolov8n-nan", "train", "the loss is nan"),
    "LambdaBackbone": ("yolov8n-lambda", "reload", "cannot pickle LambdaBackbone (row 0)"),
}


def test_each_fault_is_caught_by_its_own_step(cli, tmp_path):
    root = fresh(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path)
    assert cli("--recipes-dir", FAULTY_RECIPES, "apply", "faulty", "--repo", root)[0] == 0
    # a buggy edit of an upstream file: stock YOLOv8n keeps its parameters but not its outputs
    tasks = root / "ultralytics" / "nn" / "tasks.py"
    text = tasks.read_text(encoding="utf-8")
    assert text.count("m.bias_init()  # only run once") == 1
    tasks.write_text(text.replace("m.bias_init()  # only run once", "pass"), encoding="utf-8")
    yamls = []
    for backbone, (name, _, _) in FAULTS.items():
        path = tmp_path / f"{name.replace('yolov8n', 'yolov8')}.yaml"
        path.write_text(tutorial_yolov8_yaml(backbone, nc=4), encoding="utf-8")
        yamls += ["--yaml", path]
    code, report, err = verify_json(cli, "--repo", root, *yamls, recipes_dir=FAULTY_RECIPES)
    assert code == 4
    models = by_name(report)
    ladder = ["names", "build", "shapes", "figures", "train", "reload"]
    for name, step, words in FAULTS.values():
        steps = statuses(models[name])
        failing = ladder.index(step)
        assert [steps[s] for s in ladder] == ["passed"] * failing + ["failed"] + ["skipped"] * (len(ladder) - failing - 1)
        assert words in models[name]["steps"][step]["message"], models[name]["steps"][step]
    stock = report["checks"]["stock"]
    assert stock["status"] == "failed"
    assert stock["message"].startswith("yolov8n: outputs differ from the pristine files")
    assert {s["name"]: s["status"] for s in stock["models"]} == {"yolov8n": "failed", "rtdetr-l": "passed"}
    assert [(f["model"], f["step"]) for f in report["failures"]] == [(None, "stock")] + [
        (name, step) for name, step, _ in FAULTS.values()]
    # the one-line error names the step (and the model, for model steps)
    assert "error: verify failed at stock: yolov8n: outputs differ" in err and "(and 5 more failure(s))" in err


def test_names_are_checked_before_anything_is_built(cli, tmp_path):
    """An unknown name is reported before the first build starts (progress order on stderr)."""
    root = fresh(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    bad = tmp_path / "yolov8-bad.yaml"
    bad.write_text(tutorial_yolov8_yaml("ToyBackbone", nc=4).replace("C2f, [256]", "C3k9, [256]"), encoding="utf-8")
    good = root / "ultralytics" / "cfg" / "models" / "yolopatch" / "yolov8-toy.yaml"
    code, out, err = cli("verify", "--repo", root, "--quick", "--yaml", good, "--yaml", bad)
    assert code == 4
    assert "FAIL yolov8n-bad · names: unknown module names: C3k9 (head row 5)" in out
    lines = err.splitlines()
    first_build = next(k for k, line in enumerate(lines) if line.startswith("build"))
    assert any(line.startswith("names   failed yolov8n-bad") for line in lines[:first_build])
    assert "error: verify failed at yolov8n-bad: names: unknown module names: C3k9" in err


def test_hand_patched_checkout_verifies_with_yaml(cli, tmp_path):
    """No .yolopatch/ state: the YAML is still verified; new modules are found by where their class lives."""
    root = fresh(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    shutil.rmtree(root / ".yolopatch")
    yaml = root / "ultralytics" / "cfg" / "models" / "yolopatch" / "yolov8-toy.yaml"
    code, report, _ = verify_json(cli, "--repo", root, "--yaml", yaml)
    assert code == 0, report["failures"]
    assert report["checks"]["stock"]["status"] == "not-run"
    assert "pristine files are unknown" in report["checks"]["stock"]["message"]
    model = by_name(report)["yolov8n-toy"]
    assert model["source"] == "--yaml" and model["new_modules"] == ["ToyBackbone (row 0)"]
    assert_full_ladder(model, export=False)


def test_interpreter_without_torch_fails_the_import_step(cli, tmp_path):
    """--python names the target's interpreter; one without torch fails `import`, every model is skipped."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    root = fresh(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    code, report, err = verify_json(cli, "--repo", root, "--python", venv / "bin" / "python")
    assert code == 4
    assert report["checks"]["import"]["status"] == "failed"
    assert "cannot import torch" in report["checks"]["import"]["message"]
    assert report["checks"]["stock"]["status"] == "skipped"
    assert all(set(statuses(m).values()) <= {"skipped", "not-run"} for m in report["models"])
    assert "error: verify failed at import: cannot import torch" in err
