"""Multi-GPU (DDP) workers of ultralytics before 8.4.140 import the package by module path from a script in
the settings folder: doctor and verify's import note say so when that import would not reach the checkout."""

import json
from pathlib import Path

import pytest

from lookalikes import make_target
from yolopatch import ddp, targets
from yolopatch.run_hint import import_hint


def _target(version: str, family: str = "ultralytics") -> targets.Target:
    return targets.Target(root=Path("/x"), flavour=family, family=family, version=version, parser_file="p.py",
                          modules_dir="m", import_prefix="m", cfg_dir="c", yaml_dialect="scales")


@pytest.mark.parametrize("version,affected", [("8.0.50", True), ("8.2.103", True), ("8.4.139", True),
                                              ("8.4.140", False), ("8.4.190", False), ("8.10.0", False),
                                              ("", False)])
def test_releases_whose_workers_import_by_path(version, affected):
    assert ddp.workers_import_by_path(_target(version)) is affected
    assert bool(ddp.worker_note(_target(version))) is affected


def test_yolov5_is_not_affected():
    assert not ddp.workers_import_by_path(_target("7.0.14", "yolov5"))


def test_worker_problems_name_the_copy_and_the_fix(tmp_path):
    root = make_target(tmp_path / "repo", "ul-set")          # ultralytics 8.2.0, a bare package tree
    target = targets.detect(root)
    package = root / "ultralytics"
    (line,) = ddp.worker_problems(target, "/site-packages/ultralytics", package)
    assert "ultralytics 8.2.0 starts multi-GPU (DDP) workers" in line and "(/site-packages/ultralytics)" in line
    assert line.endswith(import_hint(target)) and f"PYTHONPATH={root}" in line
    assert "(none)" in ddp.worker_problems(target, None, package)[0]
    assert ddp.worker_problems(target, str(package), package) == []


def test_doctor_warns_about_ddp_workers(cli, tmp_path):
    root = make_target(tmp_path / "repo", "ul-set")
    code, out, _ = cli("doctor", "--repo", root, "--json")
    assert code == 0
    problems = json.loads(out)["problems"]
    assert sum("multi-GPU (DDP) workers" in p for p in problems) == 1
    newer = make_target(tmp_path / "newer", "ul-set")
    (newer / "ultralytics" / "__init__.py").write_text('__version__ = "8.4.140"\n')
    code, out, _ = cli("doctor", "--repo", newer, "--json")
    assert not any("DDP" in p for p in json.loads(out)["problems"])


def test_verify_import_note_names_what_ddp_workers_load(tmp_path, monkeypatch):
    import sys

    from yolopatch.verify.protocol import Spec
    from yolopatch.verify.runner import imports

    package = tmp_path / "yp_ddp_probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("__version__ = '8.2.0'\n")
    (package / "tasks.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    note = ddp.worker_note(_target("8.2.0"))
    spec = Spec(mode="verify", root=str(tmp_path), family="ultralytics", flavour="ultralytics", version="8.2.0",
                package="yp_ddp_probe_pkg", parser_module="yp_ddp_probe_pkg.tasks", import_hint="HINT",
                ddp_note=note)
    check = imports.ImportCheck(spec)
    try:
        check.run()
    finally:
        for name in [m for m in sys.modules if m.startswith("yp_ddp_probe_pkg")]:
            del sys.modules[name]
    assert len(check.notes) == 2 and check.notes[1] == f"{note} (none); HINT"
    quiet = imports.ImportCheck(Spec(**{**spec.__dict__, "ddp_note": ""}))
    try:
        quiet.run()
    finally:
        for name in [m for m in sys.modules if m.startswith("yp_ddp_probe_pkg")]:
            del sys.modules[name]
    assert len(quiet.notes) == 1
