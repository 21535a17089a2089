"""The line `apply` prints on how to make Python import the checkout works, followed literally, in a fresh
virtual environment that sees the interpreter's site-packages (torch, and an ultralytics 8.4.190 that
shadows the checkout as on a user's machine): without it the patched model's name is unknown, with it
the model builds. For a bare package tree (PYTHONPATH), a checkout with packaging metadata (editable
install, offline) and the upstream YOLOv5 layout (the scripts' own folder). Nothing is trained."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import upstream

pytestmark = pytest.mark.real

HINT_PREFIX = "to use the patched models, Python must import this checkout: "

BUILD_ULTRALYTICS = """
import ultralytics.nn.tasks as tasks
print("FROM", tasks.__file__)
model = tasks.DetectionModel({yaml!r}, verbose=False)
print("BUILT", type(model.model[0]).__name__)
"""

IMPORT_YOLOV5 = """
import models.yolo as yolo
from models.yolo import MobileNetV4ConvSmall
print("FROM", yolo.__file__)
print("BUILT", MobileNetV4ConvSmall().__class__.__name__)
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtual environment over this interpreter's site-packages (no pip of its own: the
    interpreter's pip runs in it)."""
    folder = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(folder)], check=True)
    return folder / "bin" / "python"


def clean_env() -> dict:
    """The user's shell: no PYTHONPATH pointing at this repository, no bytecode written into the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONDONTWRITEBYTECODE="1", YOLO_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def apply_and_hint(root: Path, recipe: str = "mobilenetv4") -> str:
    result = subprocess.run([sys.executable, "-m", "yolopatch", "apply", recipe, "--repo", str(root)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(HINT_PREFIX)]
    assert len(lines) == 1, result.stderr
    return lines[0][len(HINT_PREFIX):]


def in_shell(python: Path, code: str, before: str = "", cwd: Path | None = None, config: Path | None = None):
    """`before` (a line of the hint, run by bash), then the venv's python running `code`."""
    env = clean_env()
    env["YOLO_CONFIG_DIR"] = env["YOLOV5_CONFIG_DIR"] = str(config or Path(cwd or Path.home()) / ".yolo-config")
    script = (f"{before}\n" if before else "") + f"{shlex.quote(str(python))} -c {shlex.quote(code)}"
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_bare_package_tree_pythonpath(tmp_path, venv):
    root = upstream.fresh_copy(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path / "repo")
    hint = apply_and_hint(root)
    assert hint.startswith(f"export PYTHONPATH={root}")
    command = hint.split("  (")[0]
    yaml = str(root / "ultralytics/cfg/models/yolopatch/yolov8-mobilenetv4.yaml")
    neutral = tmp_path / "elsewhere"
    neutral.mkdir()
    code = BUILD_ULTRALYTICS.format(yaml=yaml)

    without = in_shell(venv, code, cwd=neutral)
    assert without.returncode != 0
    assert "KeyError: 'MobileNetV4ConvSmall'" in without.stderr, without.stderr[-2000:]

    following = in_shell(venv, code, before=command, cwd=neutral)
    assert following.returncode == 0, following.stderr[-3000:]
    assert f"FROM {root}/ultralytics/nn/tasks.py" in following.stdout
    assert "BUILT MobileNetV4ConvSmall" in following.stdout

    doctor = subprocess.run([sys.executable, "-m", "yolopatch", "doctor", "--repo", str(root), "--python", str(venv)],
                            capture_output=True, text=True, env=clean_env())
    assert f"to import it: {hint}" in doctor.stdout
    assert "shadows the checkout" in doctor.stdout and hint in doctor.stdout


PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "ultralytics"
version = "8.4.190"

[tool.setuptools.packages.find]
include = ["ultralytics", "ultralytics.*"]
"""


def test_checkout_with_packaging_metadata_editable_install(tmp_path, venv):
    python = tmp_path / "own-venv" / "bin" / "python"  # this test installs into it: its own environment
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(python.parent.parent)], check=True)
    root = upstream.fresh_copy(upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS), tmp_path / "repo")
    (root / "pyproject.toml").write_text(PYPROJECT)
    hint = apply_and_hint(root)
    assert hint.startswith(f"pip install -e {root}")
    neutral = tmp_path / "elsewhere"
    neutral.mkdir()
    code = BUILD_ULTRALYTICS.format(yaml=str(root / "ultralytics/cfg/models/yolopatch/yolov8-mobilenetv4.yaml"))
    assert "KeyError: 'MobileNetV4ConvSmall'" in in_shell(python, code, cwd=neutral).stderr

    # the venv has no pip of its own: the interpreter's pip runs in it; offline, so no build isolation or deps
    install = f"{shlex.quote(str(python))} -m {hint} --no-build-isolation --no-deps --quiet"
    following = in_shell(python, code, before=install, cwd=neutral)
    assert following.returncode == 0, following.stderr[-3000:]
    assert f"FROM {root}/ultralytics/nn/tasks.py" in following.stdout
    assert "BUILT MobileNetV4ConvSmall" in following.stdout


def test_upstream_yolov5_layout_scripts_folder(tmp_path, venv):
    root = upstream.fresh_copy(upstream.upstream_yolov5(), tmp_path / "yolov5")
    hint = apply_and_hint(root)
    assert f"python {root / 'train.py'}" in hint
    neutral = tmp_path / "elsewhere"
    neutral.mkdir()
    config = tmp_path / "config"

    without = in_shell(venv, IMPORT_YOLOV5, cwd=neutral, config=config)
    assert without.returncode != 0 and "No module named 'models'" in without.stderr, without.stderr[-2000:]

    # a script of the checkout, run as the hint says: `python <checkout>/script.py` from anywhere
    script = root / "use_mobilenetv4.py"
    script.write_text(IMPORT_YOLOV5)
    scripted = subprocess.run(["bash", "-c", f"{shlex.quote(str(venv))} {shlex.quote(str(script))}"], cwd=neutral,
                              env={**clean_env(), "YOLOV5_CONFIG_DIR": str(config), "YOLO_CONFIG_DIR": str(config)},
                              capture_output=True, text=True,
                              timeout=900)
    assert scripted.returncode == 0, scripted.stderr[-3000:]
    assert f"FROM {root}/models/yolo.py" in scripted.stdout and "BUILT MobileNetV4ConvSmall" in scripted.stdout
    script.unlink()

    own = hint.split("for your own scripts: ")[1]
    following = in_shell(venv, IMPORT_YOLOV5, before=own, cwd=neutral, config=config)
    assert following.returncode == 0, following.stderr[-3000:]
    assert f"FROM {root}/models/yolo.py" in following.stdout
