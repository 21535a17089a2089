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
from lookalikes import tree_snapshot, tutorial_yolov8_yaml, yolov5_tutorial

pytestmark = pytest.mark.real

FAULTY_RECIPES = Path(__file__).resolve().parents[1] / "fixtures" / "recipes_faulty"
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
    expected = {"names", "build", "shapes", "figures", "train", "amp", "fuse", "reload"} | ({"export"} if export else set())
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
                                               "figures": "passed", "train": "not-run", "amp": "not-run",
                                               "fuse": "not-run", "reload": "not-run", "export": "not-run",
                                               "fit": "not-run"}
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


TUTORIAL_YOLOV5_LAMBDA = yolov5_tutorial("LambdaBackbone", nc=4, half=True)


@pytest.mark.parametrize("layout", ["yolov5-pypi", "yolov5-upstream"])
def test_yolov5_environment_faults_exit_5_and_pass_once_fixed(cli, tmp_path, layout, monkeypatch, user_fixed_python):
    """YOLOv5 7.0 under torch 2.14: train.py's end (strip_optimizer) refuses its own checkpoint, for the stock
    yolov5s too: exit 5 naming weights_only. With the user's fixes (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, and in
    their interpreter the huggingface_hub the package pins and onnxscript for torch's default exporter) every
    step passes, export included. A patch-caused failure in the same broken environment still exits 4."""
    source = upstream.pristine("yolov5", upstream.YOLOV5_PACKAGE) if layout == "yolov5-pypi" else upstream.upstream_yolov5()
    root = fresh(source, tmp_path)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    before = tree_snapshot(root)
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    code, report, err = verify_json(cli, "--repo", root)
    assert code == 5, report["failures"]
    (failure,) = report["failures"]
    assert (failure["model"], failure["step"]) == ("yolov5s-toy", "reload")
    assert "Weights only load failed" in failure["message"] and "strip_optimizer" in failure["message"]
    assert failure["cause"]["origin"] == "environment" and failure["cause"]["name"] == "torch-weights-only"
    assert "the stock yolov5s fails reload the same way" in failure["cause"]["evidence"]
    assert "because of the environment, not the patch" in err and "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1" in err
    assert tree_snapshot(root) == before

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")   # the user's fixes
    export = ("--export", "onnx") if layout == "yolov5-pypi" else ()   # the same exporter in both layouts
    code, report, _ = verify_json(cli, "--repo", root, *export, "--python", user_fixed_python)
    assert code == 0, report["failures"]
    assert report["target"]["flavour"] == layout
    (model,) = report["models"]
    assert model["name"] == "yolov5s-toy" and model["scale"] is None
    assert_full_ladder(model, export=bool(export))
    assert model["params"] == TOY_PARAMS["yolov5s-toy"]
    assert model["strides"] == [8, 16, 32]
    assert [(s["name"], s["params"], s["status"]) for s in report["checks"]["stock"]["models"]] == [
        ("yolov5s", STOCK_PARAMS["yolov5s"], "passed")]
    assert tree_snapshot(root) == before
    if layout != "yolov5-pypi":
        return
    # a module that cannot be pickled fails reload at torch.save, the stock yolov5s at strip_optimizer: the patch
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    assert cli("--recipes-dir", FAULTY_RECIPES, "apply", "faulty", "--repo", root)[0] == 0
    lam = tmp_path / "yolov5s-lambda.yaml"
    lam.write_text(TUTORIAL_YOLOV5_LAMBDA)
    code, report, err = verify_json(cli, "--repo", root, "--yaml", lam, recipes_dir=FAULTY_RECIPES)
    assert code == 4
    (failure,) = report["failures"]
    assert (failure["model"], failure["step"]) == ("yolov5s-lambda", "reload")
    assert "cannot pickle LambdaBackbone (row 0)" in failure["message"]
    assert failure["cause"]["origin"] == "patch"
    assert failure["cause"]["evidence"].startswith("the stock yolov5s fails reload differently")


@pytest.mark.parametrize("version,step,cause", [(upstream.OLDEST_ULTRALYTICS, "reload", "torch-weights-only"),
                                                (upstream.MIDDLE_ULTRALYTICS, "export", "onnxscript-missing")])
def test_older_ultralytics_environment_faults(cli, tmp_path, monkeypatch, user_fixed_python, version, step, cause):
    """Under torch 2.14, ultralytics 8.0.50 refuses its own checkpoints at the end of training (strip_optimizer
    calls torch.load without weights_only) and 8.2.103 (which patches torch.load itself) exports with torch's
    default dynamo exporter without onnxscript: the stock YOLOv8n fails the same way, verify exits 5 naming it.
    8.2.103 passes in the user's fixed environment (8.0.50's fixed run: test_verify_tasks.py)."""
    root = fresh(upstream.pristine("ultralytics", version), tmp_path)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    (yaml,) = [p for p in root.rglob("yolov8-toy.yaml") if ".yolopatch" not in p.parts]  # not the state's copy
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    args = ("--repo", root, "--yaml", yaml, "--one-scale", "--export", "onnx")
    code, report, err = verify_json(cli, *args)
    assert code == 5, report["failures"]
    assert [(f["step"], f["cause"]["origin"], f["cause"]["name"]) for f in report["failures"]] == [
        (step, "environment", cause)]
    assert "the stock yolov8n fails" in report["failures"][0]["cause"]["evidence"]
    assert "because of the environment, not the patch" in err
    if version == upstream.OLDEST_ULTRALYTICS:
        return
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    code, report, _ = verify_json(cli, *args, "--python", user_fixed_python)
    assert code == 0, report["failures"]
    assert_full_ladder(by_name(report)["yolov8n-toy"], export=True)


# backbone -> (model name, the step that must catch it, words its message must contain)
FAULTS = {
    "NoSuchBackbone": ("yolov8n-nosuch", "names", "unknown module names: NoSuchBackbone (row 0)"),
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
    assert "FAIL yolov8n-bad · names: unknown module names: C3k9 (row 11)" in out
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
    """--python names the target's interpreter; one without torch fails `import`, every model is skipped. The
    pristine files fail to import the same way there: the environment is the cause (exit 5)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    root = fresh(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    code, report, err = verify_json(cli, "--repo", root, "--python", venv / "bin" / "python")
    assert code == 5
    check = report["checks"]["import"]
    assert check["status"] == "failed" and "cannot import torch" in check["message"]
    assert check["cause"]["origin"] == "environment"
    assert check["cause"]["evidence"].startswith("the pristine files fail to import the same way: cannot import torch")
    assert report["checks"]["stock"]["status"] == "skipped"
    assert all(set(statuses(m).values()) <= {"skipped", "not-run"} for m in report["models"])
    assert "error: verify failed at import because of the environment, not the patch: the pristine files" in err


# YAML rows: static checks before anything is built, the failing row named when a build still fails
ROW_FAULTS = {
    "yolov8-concat": ("[[-1, 3], 1, Concat, [1]]", "[[-1, 2], 1, Concat, [1]]",
                      "row 7 (Concat, from [-1, 2]): its inputs have different strides (row 6 at stride 16, row 2 "
                      "at stride 8)"),
    "yolov8-empty": ("[[-1, 2], 1, Concat, [1]]", "[[-1, 0], 1, Concat, [1]]",
                     "row 10 (Concat, from [-1, 0]): row 0 is empty: the backbone ToyBackbone at row 0 has no output "
                     "at stride 2 (its outputs are at strides 4, 8, 16, 32: rows 1-4)"),
    "yolov8-range": ("[[-1, 8], 1, Concat, [1]]", "[[-1, 30], 1, Concat, [1]]",
                     "row 13 (Concat, from [-1, 30]): `from` index 30 is not an earlier row (rows 0-12 come before it)"),
    "yolov8-order": ("[[11, 14, 17], 1, Detect, [nc]]", "[[11, 17, 14], 1, Detect, [nc]]",
                     "row 18 (Detect, from [11, 17, 14]): a head takes its inputs in increasing stride, these come as "
                     "row 11 at stride 8, row 17 at stride 32, row 14 at stride 16"),
}


def test_yaml_row_faults_are_named_by_row(cli, tmp_path):
    """Each faulty tutorial YAML fails `names`, naming its row in the YAML's own numbering, before anything is
    built; a fault the static checks cannot see (a padding row of unknown stride) fails the build, and the
    message names the row that received mismatched maps, with their shapes."""
    root = fresh(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    yamls = []
    for name, (old, new, _) in ROW_FAULTS.items():
        text = tutorial_yolov8_yaml("ToyBackbone", nc=4)
        assert text.count(old) == 1
        (tmp_path / f"{name}.yaml").write_text(text.replace(old, new), encoding="utf-8")
        yamls += ["--yaml", tmp_path / f"{name}.yaml"]
    padded = tutorial_yolov8_yaml("ToyBackbone", nc=4).replace("[-1, 1, SPPF, [1024, 5]]", "[-1, 1, nn.ZeroPad2d, [1]]")
    (tmp_path / "yolov8-padded.yaml").write_text(padded, encoding="utf-8")
    code, report, _ = verify_json(cli, "--repo", root, "--quick", "--one-scale", *yamls,
                                  "--yaml", tmp_path / "yolov8-padded.yaml")
    assert code == 4
    models = by_name(report)
    for name, (_, _, words) in ROW_FAULTS.items():
        steps = models[name.replace("yolov8", "yolov8n")]["steps"]
        assert steps["names"]["status"] == "failed" and steps["build"]["status"] == "skipped"
        assert steps["names"]["message"].startswith(words), steps["names"]["message"]
    build = models["yolov8n-padded"]["steps"]["build"]
    assert models["yolov8n-padded"]["steps"]["names"]["status"] == "passed"
    assert build["status"] == "failed"
    # the stride probe's 256x256 input: rows 3 (stride 16) and 6 (the padded stride-32 map, upsampled)
    assert build["message"].startswith("row 7 (Concat, from [-1, 3] = rows 6, 3) received [[1, 128, 20, 20], "
                                       "[1, 64, 16, 16]]: RuntimeError: Sizes of tensors must match"), build["message"]


def test_shards_split_the_models(cli, tmp_path):
    """`--shard 2/2` of the toy YAML's five scales (n s m l x) builds only the 2nd and 4th."""
    root = fresh(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path)
    assert cli("apply", "toy", "--repo", root)[0] == 0
    yaml = root / "ultralytics" / "cfg" / "models" / "yolopatch" / "yolov8-toy.yaml"
    code, report, err = verify_json(cli, "--repo", root, "--yaml", yaml, "--quick", "--shard", "2/2")
    assert code == 0, report["failures"]
    assert [m["name"] for m in report["models"]] == ["yolov8s-toy", "yolov8l-toy"]
    assert "build   passed yolov8n-toy" not in err and "build   passed yolov8s-toy" in err


def test_report_names_the_reference_weights_loaded_and_a_missing_file_fails_the_build(cli, tmp_path):
    """A YAML giving MobileNetV2 torchvision's checkpoint (randomly initialised, saved to a file): verify's
    build step and notes say which weights were loaded; a path that does not exist fails `build` (exit 4),
    naming the file."""
    torchvision = pytest.importorskip("torchvision")
    import torch

    root = fresh(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path)
    assert cli("apply", "mobilenetv2", "--repo", root)[0] == 0
    checkpoint = tmp_path / "mobilenet_v2_reference.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), checkpoint)
    folder = root / "ultralytics" / "cfg" / "models" / "yolopatch"
    good, bad = folder / "yolov8-mnv2-weights.yaml", folder / "yolov8-mnv2-missing.yaml"
    good.write_text(tutorial_yolov8_yaml("MobileNetV2").replace("MobileNetV2, []", f"MobileNetV2, [1.0, \"'{checkpoint}'\"]"))
    bad.write_text(good.read_text().replace(str(checkpoint), str(tmp_path / "absent.pth")))
    code, report, _ = verify_json(cli, "--repo", root, "--quick", "--yaml", good)
    assert code == 0, report["failures"]
    (model,) = report["models"]
    build = model["steps"]["build"]["message"]
    assert f"weights: MobileNetV2 (row 0) {checkpoint}" in build
    assert any("reference weights loaded" in note and str(checkpoint) in note for note in report["notes"])
    code, report, _ = verify_json(cli, "--repo", root, "--quick", "--yaml", bad)
    assert code == 4
    failure = report["failures"][0]
    assert failure["step"] == "build" and "absent.pth" in failure["message"]
