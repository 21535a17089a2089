"""A pristine copy of the target's package in a scratch folder: the checkout's package folders with the
saved originals written back and the files the tool created removed. The stock models built from it
are what the checkout built before `apply`."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..manifest import State, original_path
from ..targets import Target
from .selection import package_dir

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", "*.pt", "*.onnx", "*.engine", "runs")


def _package_folders(target: Target) -> list:
    base = package_dir(target)
    if base:
        return [base]
    # upstream YOLOv5 layout: the importable packages at the top (models/, utils/)
    return sorted(p.name for p in target.root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "__init__.py").is_file())


def pristine_copy(target: Target, state: State, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    folders = _package_folders(target)
    for folder in folders:
        shutil.copytree(target.root / folder, dest / folder, ignore=_IGNORE, symlinks=False)
    for rel, record in state.files.items():
        if rel.split("/")[0] not in folders:
            continue
        path = dest / rel
        if record.kind == "create":
            if path.is_file():
                path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(original_path(target.root, rel).read_bytes())
    return dest
