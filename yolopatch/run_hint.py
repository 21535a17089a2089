"""How to make Python import a checkout, in one line, for each layout.

Patched models only load when `import <package>` finds the checkout (a site-packages copy does not know
the new module names, and a `best.pt` saved from the checkout cannot be unpickled there). The fix depends
on the layout: a checkout with packaging metadata installs in editable mode; a bare package tree (the
ultralytics or yolov5 wheel layout, no pyproject.toml / setup.py) goes on PYTHONPATH; an upstream YOLOv5
checkout is imported from its own folder by its scripts.
"""

from __future__ import annotations

from pathlib import Path

from .targets import Target

PACKAGING_FILES = ("pyproject.toml", "setup.py", "setup.cfg")


def has_packaging(root: Path) -> bool:
    return any((root / name).is_file() for name in PACKAGING_FILES)


def import_hint(target: Target) -> str:
    """The one line that makes Python import this checkout (no trailing period)."""
    root = target.root
    if target.flavour == "yolov5-upstream":
        return (f"run the scripts from the checkout (python {root / 'train.py'} …, which import it from their own "
                f"folder); for your own scripts, export PYTHONPATH={root}")
    if has_packaging(root):
        return f"pip install -e {root}"
    return f"export PYTHONPATH={root}  (this package tree has no pyproject.toml or setup.py to install)"
