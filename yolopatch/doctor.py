"""`yolopatch doctor`: why a patched checkout may not be what Python runs, and the state folder's health."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from . import manifest, targets
from .ddp import worker_problems
from .engine import edited_files
from .errors import YolopatchError
from .run_hint import import_hint
from .writer import interrupted_run

# Run in the target's interpreter from a neutral folder: where does `import <package>` land, is it an
# editable install, which versions of the libraries verification needs are there.
_PROBE = r"""
import importlib.metadata as md, importlib.util, json, sys
package = sys.argv[1]
spec = importlib.util.find_spec(package)
out = {"python": sys.executable, "imports_from": None, "editable": None, "versions": {}}
if spec is not None and spec.submodule_search_locations:
    out["imports_from"] = list(spec.submodule_search_locations)[0]
try:
    direct = md.distribution(package).read_text("direct_url.json")
    out["editable"] = bool(direct and json.loads(direct).get("dir_info", {}).get("editable"))
except md.PackageNotFoundError:
    pass
for name in ("torch", "torchvision", "timm", "onnx", "onnxruntime", package):
    try:
        out["versions"][name] = md.version(name)
    except md.PackageNotFoundError:
        out["versions"][name] = None
print(json.dumps(out))
"""


def _package_folder(target: targets.Target) -> Path:
    return target.root / target.parser_file.split("/")[0] if target.flavour != "yolov5-upstream" else target.root


def diagnose(repo: Path, python: str | None = None) -> dict:
    target = targets.detect(repo)
    hint = import_hint(target)
    report: dict = {"target": {"flavour": target.flavour, "version": target.version, "root": str(target.root)},
                    "import_hint": hint, "problems": []}
    if target.flavour == "yolov5-upstream":
        report["imports"] = {"note": "an upstream YOLOv5 checkout is imported from its own folder"}
    else:
        package = target.parser_file.split("/")[0]
        result = subprocess.run([python or sys.executable, "-c", _PROBE, package], capture_output=True, text=True,
                                cwd=Path.home(), timeout=120)
        try:
            probe = json.loads(result.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            probe = {"error": (result.stderr.strip().splitlines() or ["no output"])[-1]}
        report["imports"] = probe
        found, checkout = probe.get("imports_from"), _package_folder(target)
        if found is None:
            report["problems"].append(f"`import {package}` fails outside the checkout; to fix it: {hint}")
        elif Path(found).resolve() != checkout.resolve():
            report["problems"].append(f"`import {package}` loads {found}, not the patched {checkout}: a site-packages "
                                      f"copy shadows the checkout (the usual cause of `KeyError` in parse_model); "
                                      f"to fix it: {hint}")
        report["problems"].extend(worker_problems(target, found, checkout))
    report["state"] = _state_health(target)
    if report["state"]["problem"]:
        report["problems"].append(report["state"]["problem"])
    return report


def _state_health(target: targets.Target) -> dict:
    root = target.root
    run = interrupted_run(root)
    if run is not None:
        return {"applied": None, "problem": f"an interrupted run{f' ({run})' if run else ''} left a journal: "
                                            "`yolopatch revert` rolls it back and restores the pristine files"}
    try:
        state = manifest.load(root)
    except YolopatchError as exc:
        return {"applied": None, "problem": str(exc)}
    if state is None:
        return {"applied": [], "problem": None}
    edited = edited_files(root, state)
    problem = f"patched files changed since apply: {', '.join(edited)}" if edited else None
    return {"applied": state.recipe_names, "edited": edited, "problem": problem}
