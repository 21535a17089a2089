"""What `verify` checks in a checkout: the model YAMLs, the new module classes with their recipe
declarations, and the stock models to compare with the pristine files. Read from the filesystem and
`.yolopatch/state.json` only; nothing here imports torch or the target."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import recipes as recipe_store
from ..edits.parser_file import SUPPORT_MODULE
from ..errors import RefusedError, UsageError
from ..manifest import State
from ..targets import Target
from .protocol import ModelYaml, ModuleDeclaration, StockModel, guess_task

# Stock models compared with the pristine files: (name, candidate YAMLs relative to the package folder,
# scale). The first candidate that exists is used.
_STOCK = {
    "ultralytics": [("yolov8n", ("cfg/models/v8/yolov8.yaml", "models/v8/yolov8.yaml", "models/v8/yolov8n.yaml"), "n"),
                    ("rtdetr-l", ("cfg/models/rt-detr/rtdetr-l.yaml", "models/rt-detr/rtdetr-l.yaml"), "l")],
    "yolov5": [("yolov5s", ("models/yolov5s.yaml",), None)],
}


@dataclass
class Selection:
    yamls: list = field(default_factory=list)              # protocol.ModelYaml
    modules: dict = field(default_factory=dict)            # class name -> protocol.ModuleDeclaration
    new_module_files: list = field(default_factory=list)   # dotted names of module files the tool added
    recipes: list = field(default_factory=list)            # recipes whose YAMLs are verified
    notes: list = field(default_factory=list)


def package_dir(target: Target) -> str:
    """The folder (relative to the root) holding the target's package: "ultralytics", "yolov5" or ""."""
    return target.parser_file.split("/")[0] if target.flavour != "yolov5-upstream" else ""


def model_task(path: Path) -> str:
    """The orchestrator's guess of a YAML's task (the runner decides from the parsed YAML)."""
    return guess_task(path.read_text(encoding="utf-8", errors="replace"))


def stock_models(target: Target) -> list:
    base = package_dir(target)
    parser = (target.root / target.parser_file).read_bytes()
    found = []
    for name, candidates, scale in _STOCK[target.family]:
        if name.startswith("rtdetr") and b"class RTDETRDetectionModel" not in parser:
            continue  # this release has no RT-DETR
        for candidate in candidates:
            rel = f"{base}/{candidate}" if base else candidate
            if (target.root / rel).is_file():
                multi = rel.endswith("yolov8n.yaml") or target.family == "yolov5"
                found.append(StockModel(name, rel, None if multi else scale,
                                        "rtdetr" if name.startswith("rtdetr") else "detect"))
                break
    return found


def _module_files(target: Target, state: State) -> list:
    dotted = []
    for rel, record in sorted(state.files.items()):
        folder, _, name = rel.rpartition("/")
        if record.kind == "create" and folder == target.modules_dir and name.endswith(".py") \
                and name != f"{SUPPORT_MODULE}.py":
            dotted.append(f"{target.import_prefix}.{name[:-3]}")
    return dotted


def _resolve(names: list, recipe_dirs: tuple, notes: list) -> dict:
    found = {}
    for name in names:
        try:
            found[name] = recipe_store.resolve([name], recipe_dirs)[0]
        except (UsageError, RefusedError):
            notes.append(f"recipe {name} is applied but not found here (pass --recipes-dir): its modules are "
                         "checked without their recipe declarations")
    return found


def _recipe_yamls(target: Target, state: State, name: str, recipe) -> list:
    if recipe is None:  # unknown recipe: every YAML the tool wrote
        rels = [rel for rel in state.files if rel.startswith(target.cfg_dir + "/") and rel.endswith(".yaml")]
    else:
        rels = [f"{target.cfg_dir}/{spec.name}.yaml" for spec in recipe.yamls_for(target.family)]
    return [rel for rel in sorted(rels) if rel in state.files and (target.root / rel).is_file()]


def select(target: Target, state: State | None, recipe_names: list, yaml_files: list,
           recipe_dirs: tuple = ()) -> Selection:
    selection = Selection()
    applied = state.recipe_names if state else []
    missing = [n for n in recipe_names if n not in applied]
    if missing:
        have = f"applied: {', '.join(applied)}" if applied else "nothing is applied"
        raise RefusedError(f"nothing to verify: {', '.join(missing)} not applied to {target.describe()} ({have})")
    resolved = _resolve(applied, recipe_dirs, selection.notes)
    for recipe in resolved.values():
        for module in recipe.modules:
            selection.modules[module.name] = ModuleDeclaration(module.role, tuple(module.channels),
                                                               tuple(module.strides), recipe.name)
    if state is not None:
        selection.new_module_files = _module_files(target, state)
    chosen = list(dict.fromkeys(recipe_names)) or ([] if yaml_files else applied)
    for name in chosen:
        rels = _recipe_yamls(target, state, name, resolved.get(name))
        if not rels:
            selection.notes.append(f"recipe {name} wrote no model YAML for {target.family}")
        for rel in rels:
            path = target.root / rel
            selection.yamls.append(ModelYaml(str(path), name))
    selection.recipes = chosen
    seen = {y.path for y in selection.yamls}
    for file in yaml_files:
        path = Path(file).resolve()
        if not path.is_file():
            raise UsageError(f"--yaml {file}: no such file")
        if str(path) not in seen:
            seen.add(str(path))
            selection.yamls.append(ModelYaml(str(path), "--yaml"))
    if not selection.yamls:
        if state is None:
            raise RefusedError(f"nothing to verify: no recipe is applied to {target.describe()} (no "
                               f".yolopatch/state.json) and no --yaml was given")
        raise RefusedError(f"nothing to verify: the selected recipes wrote no model YAML for {target.family}; "
                           "pass --yaml FILE")
    return selection
