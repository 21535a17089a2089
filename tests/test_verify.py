"""`yolopatch verify` without real targets: refusals and exit codes, what gets selected, the pristine
scratch copy, the stock comparison, the report and its JSON schema, the import check."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lookalikes import FIXTURE_RECIPES, make_target

from yolopatch import manifest, targets
from yolopatch.errors import RefusedError
from yolopatch.verify import plan_steps, stock
from yolopatch.verify.report import MODEL_STEPS, SCHEMA, VerifyReport
from yolopatch.verify.scratch import pristine_copy
from yolopatch.verify.selection import select

VERIFY_DIR = Path(__file__).resolve().parents[1] / "yolopatch" / "verify"


def test_cli_import_does_not_import_torch():
    code = "import sys, yolopatch.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_verify_package_import_does_not_import_torch():
    code = "import sys, yolopatch.verify; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_runner_files_never_import_yolopatch():
    for path in VERIFY_DIR.glob("runner*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import yolopatch" not in text and "from yolopatch" not in text and "from ." not in text, path


def test_not_a_target_exits_3(cli, tmp_path):
    code, _, err = cli("verify", "--repo", tmp_path)
    assert code == 3
    assert "not a YOLO checkout" in err


def test_nothing_applied_and_no_yaml_exits_3(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-frozenset")
    code, _, err = cli("verify", "--repo", root)
    assert code == 3
    assert "nothing to verify" in err


def test_recipe_not_applied_exits_3(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-frozenset")
    assert cli("apply", "toy", "--repo", root)[0] == 0
    code, _, err = cli("verify", "--repo", root, "--recipe", "nosuch")
    assert code == 3
    assert "nosuch not applied" in err and "applied: toy" in err


def test_missing_yaml_is_a_usage_error(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-frozenset")
    code, _, _ = cli("verify", "--repo", root, "--yaml", tmp_path / "absent.yaml")
    assert code == 2


@pytest.mark.parametrize("quick,export,has_state", [(False, None, True), (True, None, True),
                                                      (False, "onnx", True), (False, None, False)])
def test_plan_steps(quick, export, has_state):
    steps, reasons = plan_steps(quick, export, has_state)
    if quick:
        assert steps == ["import", "names", "build", "shapes", "figures"]
        assert reasons["train"] == "not run with --quick"
    else:
        assert ("export" in steps) == bool(export)
        assert ("stock" in steps) == has_state
        assert steps[:4] == ["import", "names", "build", "shapes"]
    if not has_state:
        assert "pristine files are unknown" in reasons["stock"]


@pytest.fixture
def applied_lookalike(tmp_path, cli):
    root = make_target(tmp_path / "repo", "ul-frozenset")
    assert cli("apply", "toy", "--repo", root)[0] == 0
    target = targets.detect(root)
    return target, manifest.load(target.root)


def test_selection_of_an_applied_recipe(applied_lookalike):
    target, state = applied_lookalike
    selection = select(target, state, [], [], (FIXTURE_RECIPES,))
    # the look-alike release has no RT-DETR, so apply wrote no rtdetr-toy.yaml
    assert [(Path(y["path"]).name, y["kind"], y["source"]) for y in selection.yamls] == [
        ("yolov8-toy.yaml", "detect", "toy")]
    assert selection.new_module_files == ["ultralytics.nn.modules.toy"]  # not the support module
    assert selection.modules["ToyBackbone"] == {"role": "backbone", "channels": [16, 32, 64, 128],
                                                "strides": [4, 8, 16, 32], "recipe": "toy"}


def test_selection_of_one_recipe_among_several(tmp_path, cli):
    faulty = Path(__file__).resolve().parent / "fixtures" / "recipes_faulty"
    root = make_target(tmp_path / "repo", "ul-frozenset")
    assert cli("--recipes-dir", faulty, "apply", "toy", "faulty", "--repo", root)[0] == 0
    target = targets.detect(root)
    state = manifest.load(target.root)
    selection = select(target, state, ["toy"], [], (FIXTURE_RECIPES, faulty))
    assert [Path(y["path"]).name for y in selection.yamls] == ["yolov8-toy.yaml"] and selection.recipes == ["toy"]
    assert {"ToyBackbone", "LyingBackbone"} <= set(selection.modules)  # every applied recipe's modules
    assert selection.new_module_files == ["ultralytics.nn.modules.faulty", "ultralytics.nn.modules.toy"]
    with pytest.raises(RefusedError, match="nothing to verify: the selected recipes wrote no model YAML"):
        select(target, state, ["faulty"], [], (FIXTURE_RECIPES, faulty))


def test_selection_yaml_only_skips_the_recipe_yamls(applied_lookalike, tmp_path):
    target, state = applied_lookalike
    mine, detr = tmp_path / "mine.yaml", tmp_path / "detr.yaml"
    mine.write_text("nc: 1\n")
    detr.write_text("head:\n  - [[16, 19, 22], 1, RTDETRDecoder, [nc]]\n")
    selection = select(target, state, [], [mine, detr], (FIXTURE_RECIPES,))
    assert [(y["path"], y["kind"], y["source"]) for y in selection.yamls] == [
        (str(mine.resolve()), "detect", "--yaml"), (str(detr.resolve()), "rtdetr", "--yaml")]
    assert selection.modules  # the applied recipes still say which layers are new


def test_selection_unknown_recipe_folder_falls_back_to_written_yamls(applied_lookalike):
    target, state = applied_lookalike
    selection = select(target, state, [], [], ())  # toy's folder not given
    assert [Path(y["path"]).name for y in selection.yamls] == ["yolov8-toy.yaml"]
    assert not selection.modules and any("not found" in n for n in selection.notes)


def test_pristine_copy_restores_originals_and_drops_created_files(applied_lookalike, tmp_path):
    target, state = applied_lookalike
    copy = pristine_copy(target, state, tmp_path / "scratch")
    original = manifest.original_path(target.root, target.parser_file).read_bytes()
    assert (copy / target.parser_file).read_bytes() == original
    assert (target.root / target.parser_file).read_bytes() != original
    for rel, record in state.files.items():
        if record.kind == "create":
            assert not (copy / rel).exists(), rel


FINGERPRINT = {"params": 3157200, "digest": "ab" * 32, "checksum": 12.5, "output_shape": [1, 84, 420]}
ITEMS = [{"name": "yolov8n", "yaml": "ultralytics/cfg/models/v8/yolov8.yaml"}]


def test_stock_identical_passes():
    check = stock.compare(ITEMS, {"yolov8n": FINGERPRINT}, {"yolov8n": dict(FINGERPRINT)})
    assert check["status"] == "passed"
    assert check["models"][0]["params"] == check["models"][0]["pristine_params"] == 3157200


@pytest.mark.parametrize("change,expected", [({"params": 3157201}, "3,157,201 parameters in the patched checkout"),
                                             ({"digest": "cd" * 32}, "outputs differ"),
                                             ({"error": "KeyError: 'C2f'"}, "cannot build it: KeyError")])
def test_stock_differences_fail_naming_the_model(change, expected):
    patched = {**FINGERPRINT, **change}
    if "error" in change:
        patched = change
    check = stock.compare(ITEMS, {"yolov8n": patched}, {"yolov8n": FINGERPRINT})
    assert check["status"] == "failed"
    assert check["message"].startswith("yolov8n: ") and expected in check["message"]


def _model(name, failing=None):
    steps = {s: {"status": "passed", "message": "", "seconds": 0.0} for s in MODEL_STEPS}
    if failing:
        steps[failing] = {"status": "failed", "message": "boom", "seconds": 0.1}
    return {"name": name, "yaml": "x.yaml", "scale": "n", "kind": "detect", "source": "toy", "params": 1000,
            "gflops": 1.5, "strides": [8, 16, 32], "output_shapes": None, "new_modules": [], "steps": steps}


def _report(models, stock_status="passed"):
    return VerifyReport(target={"flavour": "ultralytics", "version": "8.4.190", "root": "/r"},
                        steps=["import", "names"], models=models,
                        checks={"import": {"status": "passed", "message": "ok", "seconds": 1.0},
                                "stock": {"status": stock_status, "message": "yolov8n: outputs differ", "models": []}})


def test_report_passes_with_exit_0_and_documented_keys():
    report = _report([_model("a"), _model("b")])
    data = json.loads(report.to_json())
    assert data["schema"] == SCHEMA and data["passed"] is True and data["exit_code"] == 0
    assert set(data) == {"schema", "passed", "exit_code", "target", "recipes", "steps", "checks", "models",
                         "failures", "notes", "seconds"}
    assert set(data["models"][0]["steps"]) == set(MODEL_STEPS)
    assert "verify passed" in report.table()


def test_report_failures_name_model_and_step():
    report = _report([_model("a"), _model("yolov8n-x", failing="shapes")], stock_status="failed")
    assert report.exit_code == 4 and not report.passed
    assert [(f["model"], f["step"]) for f in report.failures] == [(None, "stock"), ("yolov8n-x", "shapes")]
    assert report.failure_summary().startswith("verify failed at stock: yolov8n: outputs differ")
    table = report.table()
    assert "FAIL yolov8n-x · shapes: boom" in table and "FAIL stock:" in table


def _load_runner_module(name):
    spec = importlib.util.spec_from_file_location(f"_test_{name}", VERIFY_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_check_names_both_paths_when_another_copy_is_loaded(tmp_path):
    imports = _load_runner_module("runner_imports")
    check = imports.ImportCheck({"root": str(tmp_path), "package": "json", "parser_module": "json.decoder",
                                 "flavour": "ultralytics"})
    with pytest.raises(RuntimeError) as failure:
        check.run()
    message = str(failure.value)
    assert str(Path(json.__file__)) in message and str(tmp_path.resolve()) in message
    assert "pip install -e" in message and "PYTHONPATH" in message


def test_import_check_notes_a_shadowing_copy(tmp_path, monkeypatch):
    imports = _load_runner_module("runner_imports")
    package = tmp_path / "yp_verify_probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("__version__ = '1.0'\n")
    (package / "tasks.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    check = imports.ImportCheck({"root": str(tmp_path), "package": "yp_verify_probe_pkg",
                                 "parser_module": "yp_verify_probe_pkg.tasks", "flavour": "ultralytics"})
    try:
        assert check.run().startswith("yp_verify_probe_pkg 1.0 from")
    finally:
        for name in [m for m in sys.modules if m.startswith("yp_verify_probe_pkg")]:
            del sys.modules[name]
    # without the entry verify puts first, nothing else provides the package: the note says so
    assert check.notes and "loads nothing instead of this checkout" in check.notes[0]
