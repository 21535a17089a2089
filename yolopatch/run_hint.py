"""How to make Python import a checkout, in one line, for each layout.

Patched models only load when `import <package>` finds the checkout (a site-packages copy does not know
the new module names, and a `best.pt` saved from the checkout cannot be unpickled there). The fix depends
on the layout: a checkout with packaging metadata installs in editable mode; a bare package tree (the
ultralytics or yolov5 wheel layout, no pyproject.toml / setup.py) goes first on PYTHONPATH, which Python
searches before site-packages; an upstream YOLOv5 checkout is imported by its scripts from their own folder.

The editable install asks setuptools for its `compat` mode: the checkout goes on sys.path through a .pth
file, ahead of the interpreter's own site-packages. The default mode adds an import hook that Python
consults only after sys.path, so a copy pip cannot uninstall (a virtual environment made with
--system-site-packages over a Python that has the package) would still win.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .targets import Target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def has_packaging(root: Path) -> bool:
    """Can `pip install -e root` install it: setup.py / setup.cfg, or a pyproject.toml declaring a project."""
    if (root / "setup.py").is_file() or (root / "setup.cfg").is_file():
        return True
    try:
        return "project" in tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def import_command(target: Target) -> str:
    """The shell command of the hint (for your own scripts, on an upstream YOLOv5 checkout)."""
    root = shlex.quote(str(target.root))
    if target.flavour != "yolov5-upstream" and has_packaging(target.root):
        return f"pip install -e {root} --config-settings editable_mode=compat"
    return f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}"


def import_hint(target: Target) -> str:
    """The one line that makes Python import this checkout (no trailing period)."""
    command = import_command(target)
    if target.flavour == "yolov5-upstream":
        train = shlex.quote(str(target.root / "train.py"))
        return (f"run its scripts from the checkout (python {train} …: they import it from their own folder); "
                f"for your own scripts: {command}")
    if command.startswith("pip "):
        return command
    return f"{command}  (in each shell; this package tree has no packaging metadata to install it with pip)"
