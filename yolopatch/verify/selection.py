"""What `verify` checks in a checkout: the model YAMLs, the new module classes with their recipe
declarations, and the stock models to compare with the pristine files. Read from the filesystem and
`.yolopatch/state.json` only; nothing here imports torch or the target."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import recipes as recipe_store
from ..bases import derived_paths
from ..edits.parser_file import FUSE_MODULE, SUPPORT_MODULE
from ..errors import RefusedError, UsageError
from ..manifest import State
from ..targets import Target
from .protocol import ModelYaml, ModuleDeclaration, StockModel, guess_task

# The stock model of each task: (name, task, one-to-one head, candidate YAMLs relative to the package folder,
# scale). The first candidate that exists is used; a task whose YAMLs a release lacks is absent there.
_STOCK = {
    "ultralytics": [
        ("yolov8n", "detect", False, ("cfg/models/v8/yolov8.yaml", "models/v8/yolov8.yaml", "models/v8/yolov8n.yaml"), "n"),
        ("rtdetr-l", "rtdetr", False, ("cfg/models/rt-detr/rtdetr-l.yaml", "models/rt-detr/rtdetr-l.yaml"), "l"),
        ("yolov8n-seg", "segment", False, ("cfg/models/v8/yolov8-seg.yaml", "models/v8/yolov8-seg.yaml",
                                          "models/v8/seg/yolov8n-seg.yaml"), "n"),
        ("yolov8n-pose", "pose", False, ("cfg/models/v8/yolov8-pose.yaml", "models/v8/yolov8-pose.yaml"), "n"),
        ("yolov8n-obb", "obb", False, ("cfg/models/v8/yolov8-obb.yaml",), "n"),
        ("yolov8n-cls", "classify", False, ("cfg/models/v8/yolov8-cls.yaml", "models/v8/yolov8-cls.yaml",
                                           "models/v8/cls/yolov8n-cls.yaml"), "n"),
        ("yolo26n", "detect", True, ("cfg/models/26/yolo26.yaml",), "n"),
        ("yolo26n-seg", "segment", True, ("cfg/models/26/yolo26-seg.yaml",), "n"),
        ("yolo26n-pose", "pose", True, ("cfg/models/26/yolo26-pose.yaml",), "n"),
        ("yolo26n-obb", "obb", True, ("cfg/models/26/yolo26-obb.yaml",), "n"),
        ("yolo26n-cls", "classify", True, ("cfg/models/26/yolo26-cls.yaml",), "n"),
    ],
    "yolov5": [("yolov5s", "detect", False, ("models/yolov5s.yaml",), None),
               ("yolov5s-seg", "segment", False, ("models/segment/yolov5s-seg.yaml",), None)],
}
_ALWAYS_COMPARED = ("detect", "rtdetr")   # the stock check's models whatever is verified


@dataclass
class Selection:
    yamls: list = field(default_factory=list)              # protocol.ModelYaml
    modules: dict = field(default_factory=dict)            # class name -> protocol.ModuleDeclaration
    new_module_files: list = field(default_factory=list)   # dotted names of module files the tool added
    recipes: list = field(default_factory=list)            # recipes whose YAMLs are verified
    loss: dict = field(default_factory=dict)               # the applied IoU-loss recipe (protocol.Spec.loss)
    notes: list = field(default_factory=list)


def package_dir(target: Target) -> str:
    """The folder (relative to the root) holding the target's package: "ultralytics", "yolov5" or ""."""
    return target.parser_file.split("/")[0] if target.flavour != "yolov5-upstream" else ""


def model_task(path: Path) -> str:
    """The orchestrator's guess of a YAML's task (the runner decides from the parsed YAML)."""
    return guess_task(path.read_text(encoding="utf-8", errors="replace"))


def task_stock_models(target: Target) -> list:
    """The stock model of every task this release ships a YAML for (YOLO26 ones marked end2end)."""
    base = package_dir(target)
    parser = (target.root / target.parser_file).read_bytes()
    found = []
    for name, task, end2end, candidates, scale in _STOCK[target.family]:
        if task == "rtdetr" and b"class RTDETRDetectionModel" not in parser:
            continue  # this release has no RT-DETR
        for candidate in candidates:
            rel = f"{base}/{candidate}" if base else candidate
            if (target.root / rel).is_file():
                per_scale = target.family == "yolov5" or re.search(r"\d[nsmlx](-\w+)?$", Path(rel).stem) is not None
                found.append(StockModel(name, rel, None if per_scale else scale, task, end2end))
                break
    return found


def stock_models(target: Target, tasks=()) -> list:
    """The stock models the `stock` step compares with the pristine files: detection and RT-DETR, and the
    (pre-YOLO26) stock model of every other task among `tasks`, the tasks of the models verified."""
    wanted = set(_ALWAYS_COMPARED) | set(tasks)
    return [m for m in task_stock_models(target) if m.task in wanted and not m.end2end]


def _module_files(target: Target, state: State) -> list:
    dotted = []
    for rel, record in sorted(state.files.items()):
        folder, _, name = rel.rpartition("/")
        if record.kind == "create" and folder == target.modules_dir and name.endswith(".py") \
                and name not in (f"{SUPPORT_MODULE}.py", f"{FUSE_MODULE}.py"):
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


def _loss_spec(target: Target, state: State, recipe) -> dict:
    """What the runner's `loss` step needs of an applied recipe with a [loss] edit: its function and options
    (as applied), and the module of the detection loss with the format of its boxes."""
    from .. import options as recipe_options
    from ..loss_plan import loss_sites

    sites = loss_sites(target, lambda rel: (target.root / rel).is_file(), rtdetr=recipe.loss.rtdetr)
    if not sites or sites[0].key == "rtdetr":
        return {}
    remembered = {r["name"]: dict(r.get("options") or {}) for r in state.recipes}
    values = recipe_options.resolve([recipe], (), remembered).get(recipe.name, {})
    dotted = {site.key: site.file[:-3].replace("/", ".") for site in sites}
    return {"recipe": recipe.name, "function": recipe.loss.function, "options": values,
            "module": dotted[sites[0].key], "xywh": sites[0].xywh, "rtdetr_module": dotted.get("rtdetr", "")}


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
                                                               tuple(module.strides), recipe.name,
                                                               _inside(recipe.folder, target.root))
    if state is not None:
        selection.new_module_files = _module_files(target, state)
        for recipe in resolved.values():
            if recipe.loss is not None:
                selection.loss = _loss_spec(target, state, recipe)
    chosen = list(dict.fromkeys(recipe_names)) or ([] if yaml_files else applied)
    for name in chosen:
        rels = _recipe_yamls(target, state, name, resolved.get(name))
        listed = {y.path for y in selection.yamls}  # a YAML combining recipes is verified once, for the first
        rels += [rel for rel in derived_paths(target, state, list(resolved.values()), name)
                 if rel not in rels and str(target.root / rel) not in listed]
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
    if not selection.yamls and not selection.loss:
        if state is None:
            raise RefusedError(f"nothing to verify: no recipe is applied to {target.describe()} (no "
                               f".yolopatch/state.json) and no --yaml was given")
        raise RefusedError(f"nothing to verify: the selected recipes wrote no model YAML for {target.family}; "
                           "pass --yaml FILE")
    return selection


def _inside(folder, root) -> bool:
    """Whether a recipe lives in the checkout (a local recipe written by `yolopatch add`)."""
    try:
        Path(folder).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False
