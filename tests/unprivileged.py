"""Run yolopatch the way a non-root user does: mode bits apply.

The suite runs as root, which ignores mode bits; these helpers start a subprocess without the
capabilities that let root bypass them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER), using
util-linux `setpriv`. Run by a non-root user, the subprocess starts as it is.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent
DROP = "-dac_override,-dac_read_search,-fowner"


def prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--bounding-set={DROP}", f"--inh-caps={DROP}", "--"]


@functools.lru_cache(maxsize=None)
def available() -> str | None:
    """None when mode bits can be made to apply, else why not."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "read-only"
        folder.mkdir(mode=0o555)
        probe = subprocess.run(prefix() + ["sh", "-c", f"touch {folder}/x"], capture_output=True)
        folder.chmod(0o755)
        if probe.returncode == 0:
            return "setpriv could not drop CAP_DAC_OVERRIDE here"
    return None


def env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


def yolopatch(*args, fault: str | None = None) -> subprocess.CompletedProcess:
    environment = env()
    if fault:
        environment["YOLOPATCH_FAULT"] = fault
    return subprocess.run(prefix() + [sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True,
                          text=True, env=environment)


def python(code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(prefix() + [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=env())
