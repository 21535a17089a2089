"""Real upstream targets for tests: release wheels from PyPI, unpacked into a cache outside the source
tree (never committed: YOLOv5 and ultralytics are AGPL), and fresh copies of them per test.

The cache is $YOLOPATCH_TEST_CACHE or ~/.cache/yolopatch-tests. A wheel of ultralytics is a checkout
of its package; the upstream YOLOv5 layout (top-level models/, utils/, imports without the `yolov5.`
prefix) is rebuilt from the yolov5 PyPI package.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

NEWEST_ULTRALYTICS = "8.4.190"
OLDEST_ULTRALYTICS = "8.0.50"  # the oldest of the support table (tests/matrix.py)
MIDDLE_ULTRALYTICS = "8.2.103"
YOLOV5_PACKAGE = "7.0.14"


def cache_dir() -> Path:
    root = Path(os.environ.get("YOLOPATCH_TEST_CACHE", Path.home() / ".cache" / "yolopatch-tests"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def cache_lock():
    """Held while the cache is filled: the test run's workers (pytest -n) share it, and the first one to
    need a release unpacks it while the others wait."""
    with open(cache_dir() / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wheel(project: str, version: str) -> Path:
    wheels = cache_dir() / "wheels"
    wheels.mkdir(exist_ok=True)
    found = sorted(wheels.glob(f"{project}-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels),
                        f"{project}=={version}"], check=True)
        found = sorted(wheels.glob(f"{project}-{version}-*.whl"))
    return found[0]


def pristine(project: str, version: str) -> Path:
    """The unpacked wheel (read-only by convention: copy it before patching)."""
    folder = cache_dir() / "unpacked" / f"{project}-{version}"
    if not folder.is_dir():
        with cache_lock():
            _unpack(project, version, folder)
    return folder


def _unpack(project: str, version: str, folder: Path) -> None:
    if not folder.is_dir():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(_wheel(project, version)) as archive:
            archive.extractall(tmp)
        for info in tmp.glob("*.dist-info"):
            shutil.rmtree(info)
        tmp.rename(folder)


def upstream_yolov5(version: str = YOLOV5_PACKAGE) -> Path:
    """An upstream-layout YOLOv5 checkout rebuilt from the PyPI package (imports without `yolov5.`)."""
    folder = cache_dir() / "unpacked" / f"yolov5-upstream-{version}"
    if not folder.is_dir():
        source = pristine("yolov5", version)
        with cache_lock():
            _rebuild_upstream(source, folder)
    return folder


def _rebuild_upstream(source: Path, folder: Path) -> None:
    if not folder.is_dir():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source / "yolov5", tmp)
        for path in tmp.rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            rewritten = text.replace("from yolov5.", "from ").replace("import yolov5.", "import ")
            if rewritten != text:
                path.write_text(rewritten, encoding="utf-8")
        (tmp / "__init__.py").unlink(missing_ok=True)  # the checkout root is not a package
        tmp.rename(folder)


def fresh_copy(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, symlinks=True)
    return dest


def target_env(root: Path) -> dict:
    """Environment that imports the checkout (not a site-packages copy) and writes no bytecode."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["YOLO_OFFLINE"] = "1"
    return env
