"""The environment a user gets after following verify's fixes for this machine's faults in older releases
(see README, "When the environment is at fault"): TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 in the environment,
and an interpreter that also has onnxscript (torch's dynamo ONNX exporter) and the huggingface_hub the
yolov5 7.0.x package pins (< 0.25). The interpreter is a virtual environment over this one's packages,
cached beside the downloaded releases (tests/upstream.py), so everything else stays as installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import upstream

USER_FIX_PACKAGES = ("onnxscript", "huggingface_hub<0.25")
USER_FIX_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def _fixed_interpreter() -> Path:
    venv = upstream.cache_dir() / "venvs" / "user-fixes"
    python = venv / "bin" / "python"
    ready = venv / "ready"
    with upstream.cache_lock():
        if not ready.is_file() or ready.read_text() != "\n".join(USER_FIX_PACKAGES):
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--clear", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", *USER_FIX_PACKAGES], check=True)
            ready.write_text("\n".join(USER_FIX_PACKAGES))
    return python


@pytest.fixture(scope="session")
def user_fixed_python() -> Path:
    """An interpreter with the packages verify's fixes install (the user's own, fixed environment)."""
    return _fixed_interpreter()


@pytest.fixture
def user_fixes(user_fixed_python, monkeypatch):
    """The user's fixed environment for this test: the variable set, the fixed interpreter returned."""
    for key, value in USER_FIX_ENV.items():
        monkeypatch.setenv(key, value)
    return user_fixed_python
