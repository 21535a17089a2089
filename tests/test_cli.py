"""CLI behaviour: light imports, exit codes, one-line errors, listings, the README's generated table."""

import json
import subprocess
import sys
from pathlib import Path

from lookalikes import make_target, tree_snapshot
from yolopatch.catalog import readme_section

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_cli_does_not_import_torch_or_libcst():
    code = "import sys, yolopatch.cli; print(sorted(m for m in ('torch', 'libcst') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_recipe_suggests_close_names(cli, tmp_path):
    root = make_target(tmp_path / "repo", "v5-set")
    before = tree_snapshot(root)
    code, _, err = cli("apply", "mobilenet4", "--repo", root)
    assert code == 2
    assert "mobilenetv4" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert tree_snapshot(root) == before


def test_not_a_target_and_missing_path_are_refused(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = cli("apply", "toy", "--repo", tmp_path / "empty")
    assert code == 3 and "not a YOLO checkout" in err
    code, _, err = cli("apply", "toy", "--repo", tmp_path / "nowhere")
    assert code == 3 and "does not exist" in err
    assert list((tmp_path / "empty").iterdir()) == []


def test_unsupported_release_is_refused_with_the_range(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-set")
    (root / "ultralytics" / "__init__.py").write_text('__version__ = "9.1.0"\n')
    before = tree_snapshot(root)
    code, _, err = cli("apply", "toy", "--repo", root)
    assert code == 3 and "9.1.0 is not supported" in err and "8.0.0" in err
    assert tree_snapshot(root) == before


def test_usage_error_exit_code(cli):
    code, _, _ = cli("apply")
    assert code == 2


def test_list_json_and_show(cli):
    code, out, _ = cli("list", "--json")
    assert code == 0
    listing = {r["name"]: r for r in json.loads(out)}
    assert {"mobilenetv4", "slimneck", "bifpn"} <= set(listing)
    roles = {m["name"]: m["role"] for m in listing["slimneck"]["modules"]}
    assert roles["VoVGSCSP"] == "block"
    code, out, _ = cli("show", "mobilenetv4")
    assert code == 0 and "MobileNetV4ConvSmall" in out and "2404.10518" in out


def test_status_reports_target_and_applied_recipes(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-frozenset")
    code, out, _ = cli("status", "--repo", root, "--json")
    report = json.loads(out)
    assert code == 0 and report["target"]["flavour"] == "ultralytics" and report["recipes"] == []
    cli("apply", "toy", "--repo", root)
    report = json.loads(cli("status", "--repo", root, "--json")[1])
    assert [r["name"] for r in report["recipes"]] == ["toy"]
    assert report["files"]["ultralytics/nn/tasks.py"] == {"kind": "modify", "state": "ok"}


def test_readme_recipe_table_is_generated_from_the_recipes():
    readme = (ROOT / "README.md").read_text()
    assert readme_section() in readme


def test_yolov5_before_v6_is_refused(cli, tmp_path):
    root = make_target(tmp_path / "repo", "v5-list")
    yolo = root / "models" / "yolo.py"
    yolo.write_text(yolo.read_text().replace("_forward_once", "forward_once"))
    before = tree_snapshot(root)
    code, _, err = cli("apply", "toy", "--repo", root)
    assert code == 3 and "v6.0" in err
    assert tree_snapshot(root) == before


def test_doctor_reports_shadowing_and_state(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-set")
    cli("apply", "toy", "--repo", root)
    (root / "ultralytics" / "nn" / "tasks.py").write_text("# edited\n")
    code, out, _ = cli("doctor", "--repo", root, "--json")
    report = json.loads(out)
    assert code == 0
    assert report["state"]["applied"] == ["toy"]
    assert report["state"]["edited"] == ["ultralytics/nn/tasks.py"]
    imports_from = report["imports"]["imports_from"]
    # this interpreter does not import the look-alike checkout: doctor must say so
    assert imports_from is None or not imports_from.startswith(str(root))
    assert any("shadows the checkout" in p or "fails outside the checkout" in p for p in report["problems"])
