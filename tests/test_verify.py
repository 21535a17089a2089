"""`yolopatch verify` without real targets: refusals and exit codes, what gets selected, the pristine
scratch copy, the stock comparison, the report and its JSON schema, the import check."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lookalikes import FIXTURE_RECIPES, make_target, tutorial_yolov8_yaml

from yolopatch import manifest, targets
from yolopatch.errors import RefusedError
from yolopatch.verify import plan_steps, stock
from yolopatch.verify.process import RUNNER
from yolopatch.verify.protocol import MODEL_STEPS, ModelYaml, ModuleDeclaration, RunnerOutput, Spec, StockModel, guess_task
from yolopatch.verify.report import SCHEMA, VerifyReport
from yolopatch.verify.runner import imports
from yolopatch.verify.scratch import pristine_copy
from yolopatch.verify.selection import select

VERIFY_DIR = Path(__file__).resolve().parents[1] / "yolopatch" / "verify"


def test_cli_import_does_not_import_torch():
    code = "import sys, yolopatch.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_verify_package_import_does_not_import_torch():
    code = "import sys, yolopatch.verify; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


RUNNER_DIR = VERIFY_DIR / "runner"


def _imports(path: Path):
    """(level, module, names) of every import statement in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [a.name for a in node.names]


def test_runner_modules_import_only_each_other_and_the_protocol():
    """The runner runs in the target's interpreter: it may import its own modules, ..protocol, the standard
    library and what the target itself needs (torch, yaml, onnxruntime), never the rest of yolopatch."""
    own = {p.stem for p in RUNNER_DIR.glob("*.py")}
    allowed = set(sys.stdlib_module_names) | {"torch", "torchvision", "yaml", "onnxruntime", "numpy"}
    checked = 0
    for path in sorted(RUNNER_DIR.glob("*.py")):
        for level, module, names in _imports(path):
            checked += 1
            if level == 1:
                assert (module in own) or (not module and set(names) <= own), (path.name, module, names)
            elif level == 2:
                assert module == "protocol", (path.name, module)
            else:
                assert level == 0 and module.split(".")[0] in allowed, (path.name, module)
    assert checked > 40
    for level, module, _ in _imports(VERIFY_DIR / "protocol.py"):
        assert level == 0 and module.split(".")[0] in sys.stdlib_module_names, module


def test_runner_starts_without_yolopatch_and_never_shadows_the_target(tmp_path):
    """Started as the orchestrator starts it, in an interpreter where `import yolopatch` fails: the runner
    mounts its own package and the protocol, and its folder (which holds a train.py) is not on sys.path, so a
    target whose package is named `train` is found at the checkout."""
    blocker = tmp_path / "blocker" / "yolopatch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('the runner must not import yolopatch')\n")
    root = tmp_path / "root"
    (root / "train").mkdir(parents=True)
    (root / "train" / "__init__.py").write_text("__version__ = '9.9'\n")
    (root / "train" / "tasks.py").write_text("")
    assert (RUNNER_DIR / "train.py").is_file()  # the name a careless sys.path would let shadow the target
    result = tmp_path / "result.json"
    spec = Spec(mode="stock", root=str(root), family="ultralytics", flavour="ultralytics", version="9.9",
                package="train", parser_module="train.tasks", result=str(result), shadow_check=False)
    (tmp_path / "spec.json").write_text(spec.to_json())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(tmp_path / "blocker")]),
           "PYTHONDONTWRITEBYTECODE": "1", "YOLO_CONFIG_DIR": str(tmp_path / "config"),
           "OMP_NUM_THREADS": "1", "YOLOPATCH_VERIFY_THREADS": "1"}
    done = subprocess.run([sys.executable, str(RUNNER), str(tmp_path / "spec.json")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    output = RunnerOutput.from_json(result.read_text())
    assert output.checks["import"]["status"] == "passed", output.checks
    assert output.checks["import"]["message"] == f"train 9.9 from {root.resolve() / 'train'}"
    assert output.runner["torch"]  # every torch-dependent runner module imported in the mount


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
    assert "loss" not in steps and reasons["loss"] == "no IoU-loss recipe is applied"


@pytest.mark.parametrize("quick", [False, True])
def test_plan_steps_with_an_iou_recipe(quick):
    steps, _ = plan_steps(quick, None, True, loss=True)
    assert steps[steps.index("loss") - 1] == ("shapes" if quick else "stock")


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
    assert [(Path(y.path).name, y.source) for y in selection.yamls] == [("yolov8-toy.yaml", "toy")]
    assert selection.new_module_files == ["ultralytics.nn.modules.toy"]  # not the support module
    assert selection.modules["ToyBackbone"] == ModuleDeclaration("backbone", (16, 32, 64, 128), (4, 8, 16, 32), "toy")


def test_selection_of_one_recipe_among_several(tmp_path, cli):
    faulty = Path(__file__).resolve().parent / "fixtures" / "recipes_faulty"
    root = make_target(tmp_path / "repo", "ul-frozenset")
    assert cli("--recipes-dir", faulty, "apply", "toy", "faulty", "--repo", root)[0] == 0
    target = targets.detect(root)
    state = manifest.load(target.root)
    selection = select(target, state, ["toy"], [], (FIXTURE_RECIPES, faulty))
    assert [Path(y.path).name for y in selection.yamls] == ["yolov8-toy.yaml"] and selection.recipes == ["toy"]
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
    assert selection.yamls == [ModelYaml(str(mine.resolve()), "--yaml"), ModelYaml(str(detr.resolve()), "--yaml")]
    assert selection.modules  # the applied recipes still say which layers are new


def test_selection_unknown_recipe_folder_falls_back_to_written_yamls(applied_lookalike):
    target, state = applied_lookalike
    selection = select(target, state, [], [], ())  # toy's folder not given
    assert [Path(y.path).name for y in selection.yamls] == ["yolov8-toy.yaml"]
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
ITEMS = [StockModel("yolov8n", "ultralytics/cfg/models/v8/yolov8.yaml", "n", "detect")]


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


def _spec(root: Path, package: str, parser_module: str, hint: str = "") -> Spec:
    return Spec(mode="verify", root=str(root), family="ultralytics", flavour="ultralytics", version="1.0",
                package=package, parser_module=parser_module, import_hint=hint)


def test_import_check_names_both_paths_when_another_copy_is_loaded(tmp_path):
    check = imports.ImportCheck(_spec(tmp_path, "json", "json.decoder", "pip install -e X or put it on PYTHONPATH"))
    with pytest.raises(RuntimeError) as failure:
        check.run()
    message = str(failure.value)
    assert str(Path(json.__file__)) in message and str(tmp_path.resolve()) in message
    assert "pip install -e" in message and "PYTHONPATH" in message


def test_import_check_notes_a_shadowing_copy(tmp_path, monkeypatch):
    package = tmp_path / "yp_verify_probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("__version__ = '1.0'\n")
    (package / "tasks.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    check = imports.ImportCheck(_spec(tmp_path, "yp_verify_probe_pkg", "yp_verify_probe_pkg.tasks"))
    try:
        assert check.run().startswith("yp_verify_probe_pkg 1.0 from")
    finally:
        for name in [m for m in sys.modules if m.startswith("yp_verify_probe_pkg")]:
            del sys.modules[name]
    # without the entry verify puts first, nothing else provides the package: the note says so
    assert check.notes and "loads nothing instead of this checkout" in check.notes[0]


# tasks: what the runner decides per model (in-process: these runner modules need torch) ----------------------
@pytest.mark.parametrize("head,task", [("Detect, [nc]", "detect"), ("Segment26, [nc, 32, 256]", "segment"),
                                       ("Pose, [nc, kpt_shape]", "pose"), ("OBB26, [nc, 1]", "obb"),
                                       ("Classify, [nc]", "classify"), ("RTDETRDecoder, [nc]", "rtdetr"),
                                       ("v10Detect, [nc]", "detect"), ("WorldDetect, [nc, 512, True]", "world"),
                                       ("MyOwnHead, [nc]", "detect")])
def test_guess_task_reads_the_last_row_that_names_a_head(head, task):
    text = ("backbone:\n  - [-1, 1, Conv, [64, 3, 2]]\n  - [[-1, 0], 1, Concat, [1]]\n"
            f"head:\n  - [[0, 1], 1, {head}]  # the head\n")
    assert guess_task(text) == task


def test_head_class_task_follows_its_base_classes():
    from yolopatch.verify.runner.tasks import task_of_class

    class Segment:  # noqa: D401 - stand-ins named like the targets' heads
        pass

    class MySegmentHead(Segment):
        pass

    assert task_of_class(MySegmentHead) == "segment" and task_of_class(int) is None


def test_class_state_undoes_what_parse_model_sets_on_classes():
    """ultralytics sets Detect.legacy (and subclasses') and Conv.default_act for the whole process."""
    import types

    from yolopatch.verify.runner.adapters import class_state

    class Conv:
        default_act = "SiLU"

    class Detect:
        legacy = True

    class Segment(Detect):
        pass

    parser = types.SimpleNamespace(Conv=Conv, Detect=Detect)
    with class_state(parser):
        Detect.legacy, Segment.legacy, Conv.default_act = False, False, "ReLU"  # what a YOLO11 build leaves
    assert (Detect.legacy, Conv.default_act) == (True, "SiLU")
    assert "legacy" not in Segment.__dict__ and Segment.legacy is True  # inherits again, as before the build


def test_synthetic_targets_per_task():
    import types

    import torch

    from yolopatch.verify.runner.tasks import BOXES, MASK_RATIO, targets

    head = types.SimpleNamespace(nc=3, nm=32, kpt_shape=(5, 3), ne=1)
    model = types.SimpleNamespace(model=[head], yaml={"nc": 3})
    size = (96, 160)
    seg = targets("segment", model, size)
    assert seg["masks"].shape == seg["sem_masks"].shape == (2, size[0] // MASK_RATIO, size[1] // MASK_RATIO)
    # overlap format: image i's k-th object is k + 1; the semantic map holds its class
    assert sorted(seg["masks"][0].unique().tolist()) == [0, 1, 2] and sorted(seg["masks"][1].unique().tolist()) == [0, 1, 2]
    y, x = int(BOXES[1][3] * size[0] / MASK_RATIO), int(BOXES[1][2] * size[1] / MASK_RATIO)
    assert seg["masks"][0, y, x] == 2 and seg["sem_masks"][0, y, x] == BOXES[1][1]
    pose = targets("pose", model, size)
    assert pose["keypoints"].shape == (len(BOXES), 5, 3) and bool((pose["keypoints"][..., 2] == 1).all())
    for b, (_, _, cx, cy, w, h) in enumerate(BOXES):   # every keypoint inside its box
        assert bool(((pose["keypoints"][b, :, 0] - cx).abs() <= w / 2).all())
        assert bool(((pose["keypoints"][b, :, 1] - cy).abs() <= h / 2).all())
    obb = targets("obb", model, size)
    assert obb["bboxes"].shape == (len(BOXES), 5)
    cls = targets("classify", model, size)
    assert cls["cls"].dtype == torch.long and cls["cls"].tolist() == [0, 1]
    assert targets("detect", model, size)["cls"].max() < 3   # class ids wrap at nc


def test_output_problems_name_a_wrong_head_output():
    import types

    import torch

    from yolopatch.verify.runner.tasks import output_problems

    head = types.SimpleNamespace(nc=80, named_children=lambda: iter(()))
    model = types.SimpleNamespace(model=[head])
    features = [torch.zeros(1, 64, 16, 20), torch.zeros(1, 128, 8, 10), torch.zeros(1, 256, 4, 5)]
    assert output_problems("detect", "ultralytics", model, torch.zeros(1, 84, 420), features, (128, 160), None) == []
    problems = output_problems("detect", "ultralytics", model, torch.zeros(1, 85, 420), features, (128, 160), None)
    assert problems and "expected (1, 84, 420)" in problems[0]
    classifier = types.SimpleNamespace(model=[types.SimpleNamespace(linear=torch.nn.Linear(4, 10))])
    logits = torch.randn(1, 10)
    assert output_problems("classify", "ultralytics", classifier, logits.softmax(1), [], (96, 96), None) == []
    assert "not probabilities" in output_problems("classify", "ultralytics", classifier, logits, [], (96, 96), None)[0]


def _layer(cls_name: str, i: int, **attrs):
    import torch

    layer = type(cls_name, (torch.nn.Module,), {})()
    layer.i = i
    for key, value in attrs.items():
        setattr(layer, key, value)
    return layer


@pytest.mark.parametrize("aligned", [False, True])
def test_yaml_rows_of_a_multi_output_backbone_in_either_layout(aligned):
    """Today a 4-output backbone is one layer whose .i is its last level's row (4); aligned, it is row 0 and
    BackboneLevel placeholders fill rows 1-4. Either way the YAML rows come out the same."""
    import types

    from yolopatch.verify.runner.layers import yaml_row

    backbone = _layer("Toy", 0 if aligned else 4, feature_strides=[4, 8, 16, 32], feature_channels=[8, 16, 32, 64])
    levels = [_layer("BackboneLevel", k, level=k) for k in range(1, 5)] if aligned else []
    sppf = _layer("SPPF", 5)
    model = types.SimpleNamespace(model=[backbone, *levels, sppf])
    assert [yaml_row(model, m) for m in model.model] == (list(range(6)) if aligned else [0, 5])
    assert yaml_row(model, backbone) == 0 and yaml_row(model, sppf) == 5


def test_parse_watch_keeps_each_row_at_its_index_when_a_row_records_a_list():
    """YOLOv9's CBLinear rows record a list of widths in parse_model's `ch`; the rows after them must keep
    their own index (dropping the lists shifted every later row and compared VoVGSCSP with another row)."""
    import types

    from yolopatch.verify.runner.layers import ParseWatch

    def parse_model(d, ch):
        ch = []
        for width in d["widths"]:
            ch.append(width)
        return [], []

    parser = types.SimpleNamespace(parse_model=parse_model)
    with ParseWatch(parser) as watch:
        parser.parse_model({"widths": [64, [64, 128], 256, 512]}, [3])
    assert watch.channels == [64, None, 256, 512]


def _toy_model(first_index: int, levels: int, sppf_index: int):
    import types

    backbone = _layer("Toy", first_index, feature_strides=[4, 8, 16, 32], feature_channels=[8, 16, 32, 64])
    placeholders = [_layer("BackboneLevel", k, level=k) for k in range(1, levels + 1)]
    return types.SimpleNamespace(model=[backbone, *placeholders, _layer("SPPF", sppf_index)])


ROWS_TOY_SPPF = [[-1, 1, "Toy", []], [-1, 1, "SPPF", [64, 5]]]


@pytest.mark.parametrize("model,problem", [
    (_toy_model(0, 4, 5), None),                       # aligned: rows 0-4 the backbone's, row 5 SPPF
    (_toy_model(4, 0, 5), None),                       # the older layout a hand-patched checkout builds
    (_toy_model(0, 4, 6), "layer 5 says row 6"),       # a layer whose .i is not its position
    (_toy_model(0, 3, 4), "5 layers for 6 YAML rows"),  # a placeholder short
])
def test_the_layer_table_must_match_the_yaml_rows(model, problem):
    from yolopatch.verify.runner.layers import alignment_problem

    found = alignment_problem(model, ROWS_TOY_SPPF)
    assert (found is None) if problem is None else (problem in found and "freeze=N" in found)


# environment or patch ------------------------------------------------------------------------------------------
WEIGHTS_ONLY = ("the end of training (the target's strip_optimizer on the saved checkpoint) failed: UnpicklingError: "
                "Weights only load failed. This file can still be loaded (at general.py:972 in strip_optimizer)")


@pytest.mark.parametrize("message,name", [
    (WEIGHTS_ONLY, "torch-weights-only"),
    ("ModuleNotFoundError: No module named 'onnxscript' (at exporter.py:410 in export_onnx)", "onnxscript-missing"),
    ("AttributeError: module 'numpy' has no attribute 'trapz'", "numpy-trapz"),
    ("AttributeError: 'FreeTypeFont' object has no attribute 'getsize'", "pillow-getsize"),
    ("ModuleNotFoundError: No module named 'pkg_resources'", "setuptools-pkg-resources"),
    ("ModuleNotFoundError: No module named 'huggingface_hub.utils._errors'", "huggingface-hub-too-new"),
    ("URLError: <urlopen error network access is disabled while yolopatch verify runs>", "network-needed"),
    ("RuntimeError: Sizes of tensors must match except in dimension 1", None),
])
def test_known_environment_causes_are_recognised(message, name):
    from yolopatch.verify.runner.causes import recognise

    found = recognise(message)
    assert (found.name if found else None) == name
    if found:
        assert found.fix and found.what


def test_same_failure_ignores_names_paths_and_numbers_only():
    from yolopatch.verify.runner.causes import same_failure

    mine = "RuntimeError: shape '[1, 3, 85]' is invalid for input of size 9120 in yolov5s-toy (at /tmp/a/yolo.py:12 in f)"
    stock = "RuntimeError: shape '[1, 3, 85]' is invalid for input of size 24960 in yolov5s (at /tmp/b/yolo.py:99 in f)"
    assert same_failure(mine, stock, ("yolov5s-toy", "yolov5s"))
    assert not same_failure(mine, "RuntimeError: CUDA error: out of memory", ("yolov5s-toy", "yolov5s"))
    # the same known cause with different wording is the same failure; a known cause and an unknown one are not
    assert same_failure(WEIGHTS_ONLY, "loading with the target's loader failed: UnpicklingError: Weights only load failed.")
    assert not same_failure(WEIGHTS_ONLY, "PicklingError: cannot pickle LambdaBackbone (row 0)")


def _failed(model_name, step, origin):
    from yolopatch.verify.runner.causes import cause_record

    model = _model(model_name, failing=step)
    model["steps"][step]["cause"] = cause_record(origin, "evidence", WEIGHTS_ONLY if origin == "environment" else "x")
    return model


def test_exit_5_only_when_every_failure_is_the_environments():
    env = _report([_model("a"), _failed("b", "reload", "environment"), _failed("c", "reload", "environment")])
    assert env.exit_code == 5 and not env.passed
    assert env.failure_summary().startswith("verify failed at b: reload because of the environment, not the patch: "
                                            "torch >= 2.6 loads checkpoints")
    assert "Fix: set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1" in env.failure_summary()
    assert "cause: the environment, not the patch" in env.table()
    failure = env.to_dict()["failures"][0]
    assert failure["cause"]["origin"] == "environment" and failure["cause"]["name"] == "torch-weights-only"
    mixed = _report([_failed("b", "reload", "environment"), _failed("c", "train", "patch")])
    assert mixed.exit_code == 4
    assert mixed.failure_summary().startswith("verify failed at c: train: ")   # the patch's failure comes first
    # a failed target-level check without a cause (the stock comparison) is the patch's
    stock = _report([_failed("b", "reload", "environment")], stock_status="failed")
    assert stock.exit_code == 4 and stock.failures[0]["cause"]["origin"] == "patch"


# static row checks (rows.py: standard library only) ------------------------------------------------------------
def _yaml_rows(text: str) -> list:
    import yaml

    d = yaml.safe_load(text)
    return d["backbone"] + d["head"]


MOBILENETV2 = {"MobileNetV2": ModuleDeclaration("backbone", (24, 32, 96, 320), (4, 8, 16, 32), "mobilenetv2")}


def _row_problems(text: str, declarations=MOBILENETV2) -> list:
    from yolopatch.verify.protocol import HEAD_TASKS
    from yolopatch.verify.runner.rows import analyse

    return analyse(_yaml_rows(text), declarations, set(HEAD_TASKS))[1]


def test_row_checks_pass_a_tutorial_yaml_and_infer_its_strides():
    from yolopatch.verify.protocol import HEAD_TASKS
    from yolopatch.verify.runner.rows import analyse

    table, problems = analyse(_yaml_rows(tutorial_yolov8_yaml("MobileNetV2")), MOBILENETV2, set(HEAD_TASKS))
    assert problems == []
    assert [r.number for r in table] == list(range(19))          # rows 0-4 the backbone, then 5..18
    assert [r.empty for r in table[:5]] == [True, False, False, False, False]
    assert [table[k].stride for k in (5, 6, 7, 8, 11, 12, 14, 15, 17)] == [32, 16, 16, 16, 8, 16, 16, 32, 32]


@pytest.mark.parametrize("old,new,message", [
    ("[[-1, 3], 1, Concat, [1]]", "[[-1, 2], 1, Concat, [1]]",
     "row 7 (Concat, from [-1, 2]): its inputs have different strides (row 6 at stride 16, row 2 at stride 8); "
     "Concat joins maps of one resolution"),
    ("[[-1, 2], 1, Concat, [1]]", "[[-1, 0], 1, Concat, [1]]",
     "row 10 (Concat, from [-1, 0]): row 0 is empty: the backbone MobileNetV2 at row 0 has no output at stride 2 "
     "(its outputs are at strides 4, 8, 16, 32: rows 1-4)"),
    ("[[-1, 8], 1, Concat, [1]]", "[[-1, 30], 1, Concat, [1]]",
     "row 13 (Concat, from [-1, 30]): `from` index 30 is not an earlier row (rows 0-12 come before it)"),
    ("[[11, 14, 17], 1, Detect, [nc]]", "[[11, 17, 14], 1, Detect, [nc]]",
     "row 18 (Detect, from [11, 17, 14]): a head takes its inputs in increasing stride, these come as row 11 at "
     "stride 8, row 17 at stride 32, row 14 at stride 16"),
])
def test_row_checks_name_the_row(old, new, message):
    text = tutorial_yolov8_yaml("MobileNetV2")
    assert text.count(old) == 1
    assert _row_problems(text.replace(old, new)) == [message]


def test_row_checks_never_guess():
    """An unknown module makes its stride unknown (no alarm after it); an unknown module at row 0 may be a
    backbone filling several rows, so nothing is checked; a backbone with arguments has unknown strides."""
    text = tutorial_yolov8_yaml("MobileNetV2").replace("[[-1, 3], 1, Concat, [1]]", "[[-1, 2], 1, Concat, [1]]")
    assert _row_problems(text.replace("SPPF, [1024, 5]", "MyOwnBlock, [1024]")) == []
    assert _row_problems(text, {}) == []
    assert _row_problems(text.replace("MobileNetV2, []", "MobileNetV2, [0.5]")) == []
    # every stock config of the newest ultralytics passes (no false alarm on real YAMLs)
    stock = upstream_configs()
    assert len(stock) > 60 and all(_row_problems(path.read_text(), {}) == [] for path in stock)


def upstream_configs() -> list:
    import upstream

    return sorted((upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS) / "ultralytics" / "cfg" / "models")
                  .rglob("*.yaml"))


# --shard K/N ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["0/4", "5/4", "1/0", "2", "a/b", "1/-2", "-1/3", ""])
def test_bad_shard_exits_2(cli, tmp_path, bad):
    root = make_target(tmp_path / "repo", "ul-frozenset")
    code, _, err = cli("verify", "--repo", root, "--shard", bad)
    assert code == 2 and "--shard" in err and "1 <= K <= N" in err


def test_shards_are_every_nth_model_from_k():
    from yolopatch.verify import parse_shard
    from yolopatch.verify.runner.ladder import shard

    models = list(range(1, 11))   # the models in the order verify lists them, counted from 1
    assert shard(models, parse_shard("1/1")) == models
    assert shard(models, parse_shard("2/3")) == [2, 5, 8]
    assert shard(models, parse_shard("3/3")) == [3, 6, 9]
    parts = [shard(models, (k, 4)) for k in range(1, 5)]
    assert sorted(sum(parts, [])) == models and shard(models[:2], (4, 4)) == []   # disjoint, complete; may be empty


def test_failing_rows_are_named_with_what_they_received():
    """A row parse_model cannot construct is named from its own frame; a row whose forward raises is named
    from the forward pre-hooks, with the shapes it received (YAML numbering, `from` made absolute)."""
    import types

    import torch

    from yolopatch.verify.runner.layers import ParseWatch
    from yolopatch.verify.runner.messages import describe
    from yolopatch.verify.runner.rowtrace import RowTrace

    class Concat(torch.nn.Module):
        def forward(self, x):
            return torch.cat(x, 1)

    def parse_model(d, ch):
        layers = []
        for i, (f, n, m, args) in enumerate(d["backbone"]):
            m = {"Identity": torch.nn.Identity, "Concat": Concat}[m]
            m_ = m(*args)
            m_.i, m_.f, m_.type = i, f, m.__name__
            layers.append(m_)
        return torch.nn.Sequential(*layers), []

    parser = types.SimpleNamespace(parse_model=parse_model)
    with ParseWatch(parser) as watch, RowTrace(watch) as trace, pytest.raises(KeyError) as failure:
        parser.parse_model({"backbone": [[-1, 1, "Identity", []], [-1, 1, "Nope", []]]}, [3])
    assert trace.explain(failure.value, describe).startswith("row 1 (Nope, from -1 = row 0) could not be built: "
                                                              "KeyError: 'Nope'")
    with ParseWatch(parser) as watch:
        layers, _ = parser.parse_model({"backbone": [[-1, 1, "Identity", []], [-1, 1, "Identity", []],
                                                     [[-1, 0], 1, "Concat", []]]}, [3])
    assert watch.layers is layers and watch.failed_row is None
    x = torch.zeros(1, 3, 8, 8)
    with RowTrace(layers=layers) as trace, pytest.raises(RuntimeError) as failure:
        y = x
        for layer in layers:   # row 0's map stands in as a stride-2 one: the Concat of row 2 cannot join them
            y = layer(y if layer.f == -1 else [y, torch.zeros(1, 3, 4, 4)])
    message = trace.explain(failure.value, describe)
    assert message.startswith("row 2 (Concat, from [-1, 0] = rows 1, 0) received [[1, 3, 8, 8], [1, 3, 4, 4]]: "
                              "RuntimeError: Sizes of tensors must match"), message


def test_stock_models_both_copies_fail_to_build_the_same_way_is_the_environment():
    error = {"error": "AttributeError: module 'numpy' has no attribute 'trapz'"}
    check = stock.compare(ITEMS, {"yolov8n": dict(error)}, {"yolov8n": dict(error)})
    assert check["status"] == "failed" and check["cause"]["origin"] == "environment"
    assert check["cause"]["name"] == "numpy-trapz" and "environment" not in check["models"][0]
    differently = stock.compare(ITEMS, {"yolov8n": dict(error)}, {"yolov8n": FINGERPRINT})
    assert "cause" not in differently and differently["message"].startswith("yolov8n: the patched checkout cannot")
