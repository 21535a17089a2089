"""The stock model configs a checkout ships ("bases"), and which recipes derive onto each.

ultralytics keeps them under cfg/models/** (ultralytics/models/** and yolo/v8/models in older releases),
YOLOv5 in models/*.yaml, models/segment/ and models/hub/. Everything here is static: the configs are
read as text, never built, and neither torch nor the target is imported.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import manifest
from .derive.compose import combinations, derive, in_order
from .derive.graph import Graph, NotDerivable
from .derive.modules import facts as module_facts
from .derive.yamlsubset import ConfigError, load
from .engine import pristine_bytes
from .errors import RefusedError, UsageError
from .targets import Target

ALL = "all"
_ULTRALYTICS_ROOTS = ("ultralytics/cfg/models", "ultralytics/models", "ultralytics/yolo/v8/models")
_FAMILY_FOLDERS = {"v3": "yolov3", "v5": "yolov5u", "v6": "yolov6", "v8": "yolov8", "v9": "yolov9",
                   "v10": "yolov10", "11": "yolo11", "12": "yolo12", "26": "yolo26", "rt-detr": "rt-detr"}


@dataclass
class Base:
    name: str                 # the config's stem: what --base takes
    path: str                 # relative to the checkout root, POSIX
    family: str               # yolov8, yolo11, rt-detr, yolov5, …
    task: str                 # detect, segment, pose, obb, classify (depth, semantic: not derivable)
    scales: tuple             # the scale keys it declares; () for configs with depth/width multiples
    graph: Optional[Graph] = None
    problem: str = ""         # why no recipe derives onto it ("" when some may)
    _memo: dict = field(default_factory=dict, repr=False)

    def check(self, facts) -> str:
        """Why one recipe's facts do not derive onto this base ("" when they do). Recipes of one shape (every
        backbone with the same strides, …) share the answer; the reason names no module for that reason."""
        key = ("check", facts.shape)
        if key not in self._memo:
            try:
                self.derive([("", facts)])
                self._memo[key] = ""
            except NotDerivable as exc:
                self._memo[key] = str(exc)
        return self._memo[key]

    def derive(self, chosen: list) -> Graph:
        """The derived graph for (recipe name, facts) pairs, or NotDerivable with the reason."""
        key = tuple(facts.signature for _, facts in chosen)
        if key not in self._memo:
            try:
                if self.graph is None:
                    raise NotDerivable(self.problem)
                self._memo[key] = derive(self.graph, chosen)
            except NotDerivable as exc:
                self._memo[key] = exc
        found = self._memo[key]
        if isinstance(found, NotDerivable):
            raise found
        return found


def config_paths(target: Target) -> list:
    """Relative paths of every model config the checkout ships, in a stable order."""
    root = target.root
    if target.family == "ultralytics":
        models = next((r for r in _ULTRALYTICS_ROOTS if (root / r).is_dir()), None)
        if models is None:
            return []
        own = target.cfg_dir + "/"
        found = [p.relative_to(root).as_posix() for p in (root / models).rglob("*.yaml")]
        return sorted(rel for rel in found if not rel.startswith(own))
    folders = [target.modules_dir, f"{target.modules_dir}/segment", f"{target.modules_dir}/hub"]
    return [p.relative_to(root).as_posix() for folder in folders if (root / folder).is_dir()
            for p in sorted((root / folder).glob("*.yaml"))]


def discover(target: Target, state: Optional[manifest.State] = None) -> list:
    """Every stock model config, read from its pristine bytes; files yolopatch created are not bases."""
    created = {rel for rel, rec in state.files.items() if rec.kind == "create"} if state else set()
    bases, seen = [], {}
    for rel in config_paths(target):
        if rel in created:
            continue
        data = pristine_bytes(target.root, state, rel)
        base = _read_base(target, rel, data)
        if base is None:
            continue
        if base.name in seen:
            base.problem, base.graph = f"another stock config has the same name ({seen[base.name]})", None
        seen.setdefault(base.name, rel)
        bases.append(base)
    return bases


def _read_base(target: Target, rel: str, data: Optional[bytes]) -> Optional[Base]:
    name = Path(rel).stem
    family = _family(target, rel, name)
    try:
        config = load(data.decode("utf-8")) if data is not None else None
    except (ConfigError, UnicodeDecodeError) as exc:
        return Base(name=name, path=rel, family=family, task="", scales=(), problem=f"does not parse: {exc}")
    if not isinstance(config, dict) or "backbone" not in config or "head" not in config:
        return None  # not a model config (anchors.yaml, dataset or tracker settings)
    scales = config.get("scales")
    base = Base(name=name, path=rel, family=family, task=_task(config),
                scales=tuple(str(k) for k in scales) if isinstance(scales, dict) else ())
    try:
        base.graph = Graph.from_config(config, target.family)
        base.problem = base.graph.unsupported() or ""
    except NotDerivable as exc:
        base.problem = str(exc)
    if base.problem:
        base.graph = None
    return base


def _family(target: Target, rel: str, name: str) -> str:
    if target.family == "yolov5":
        return "yolov3" if name.startswith("yolov3") else "yolov5"
    if name.startswith("yoloe"):
        return "yoloe"
    if "world" in name:
        return "yolo-world"
    models = next((r for r in _ULTRALYTICS_ROOTS if rel.startswith(r + "/")), "")
    inside = rel[len(models) + 1:].split("/")
    folder = inside[0] if len(inside) > 1 else ""
    return _FAMILY_FOLDERS.get(folder, folder or name.split("-")[0])


def _task(config: dict) -> str:
    head = config.get("head")
    module = head[-1][2] if isinstance(head, list) and head and isinstance(head[-1], list) \
        and len(head[-1]) == 4 and isinstance(head[-1][2], str) else ""
    found = module_facts(module)
    return found.head if found is not None and found.head else ""


# -- choosing bases and writing derived YAMLs --------------------------------------------------------------
def select(bases: list, names: list) -> list:
    """The bases `--base` names (`all`: every one); an unknown name is a usage error."""
    if ALL in names:
        return list(bases)
    by_name = {b.name: b for b in bases}
    chosen = []
    for name in names:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (`yolopatch bases` lists them)"
            raise UsageError(f"no stock model config named {name!r}{hint}")
        chosen.append(by_name[name])
    return chosen


def merge_names(old: list, new: list) -> list:
    """The bases remembered in the state record after adding `new`: `all` absorbs every name."""
    names = list(dict.fromkeys([*old, *new]))
    return [ALL] if ALL in names else sorted(names)


def yaml_name(base: Base, chosen: list) -> str:
    return "-".join([base.name, *(name for name, _ in in_order(chosen))])


@dataclass
class Derived:
    files: dict = field(default_factory=dict)     # relative path -> bytes
    skipped: list = field(default_factory=list)   # (base, recipe names, reason)
    bases: int = 0                                # bases that got at least one file


def derived_yamls(target: Target, state, recipes: list, names: list, strict: tuple = ()) -> Derived:
    """Every derived YAML for the recipes on the named bases. A pair that does not derive is skipped; a base
    named explicitly (not through `all`) that none of the `strict` recipes derives onto is refused."""
    from .derive.render import render

    result = Derived()
    if not names:
        return result
    bases = select(discover(target, state), names)
    explicit = ALL not in names
    chosen = [(r.name, r.derive) for r in recipes]
    for recipe in recipes:
        if explicit and recipe.name in strict and recipe.derive.kind == "none":
            raise RefusedError(f"recipe {recipe.name} does not derive onto stock configs: {recipe.derive.reason}")
    for base in bases:
        wrote = False
        if explicit and strict:
            _require_one(base, [(name, facts) for name, facts in chosen if name in strict])
        for combo in combinations(chosen):
            names_in = [name for name, _ in combo]
            try:
                graph = base.derive(combo)
            except NotDerivable as exc:
                result.skipped.append((base.name, names_in, str(exc)))
                continue
            name = yaml_name(base, combo)
            rel = f"{target.cfg_dir}/{name}.yaml"
            if rel in result.files:
                raise RefusedError(f"two derived YAMLs would be written to {rel}")
            result.files[rel] = render(graph, name, base.path, base.family, base.task,
                                       [n for n, _ in in_order(combo)])
            wrote = True
        result.bases += wrote
    return result


def derived_paths(target: Target, state, recipes: list, recipe_name: str) -> list:
    """The derived YAMLs of the state record that come from `recipe_name` (alone or combined), found by their
    names: the remembered bases times the combinations of the applied recipes (nothing is derived again)."""
    if state is None or not state.bases:
        return []
    names = set(state.bases)
    chosen = [(r.name, r.derive) for r in recipes]
    found = []
    for base in discover(target, state):
        if ALL not in names and base.name not in names:
            continue
        for combo in combinations(chosen):
            rel = f"{target.cfg_dir}/{yaml_name(base, combo)}.yaml"
            if recipe_name in (name for name, _ in combo) and rel in state.files:
                found.append(rel)
    return found


def _require_one(base: Base, chosen: list) -> None:
    """A base asked for by name must take at least one of the recipes asked for."""
    reasons = [(name, base.check(facts)) for name, facts in chosen]
    if chosen and all(reason for _, reason in reasons):
        name, reason = reasons[0]
        others = f" (nor does {', '.join(n for n, _ in reasons[1:])})" if len(reasons) > 1 else ""
        raise RefusedError(f"recipe {name} does not derive onto {base.name} ({base.path}): {reason}{others}")


# -- the listing --------------------------------------------------------------------------------------------
def report(target: Target, state, recipes: list) -> dict:
    """What `yolopatch bases --json` prints. Recipes that change no model structure (a box-loss edit) are
    left out: they apply to every model as it is."""
    recipes = [r for r in recipes if r.modules or r.derive.kind != "none" or r.loss is None]
    rows = []
    for base in discover(target, state):
        entry = {"name": base.name, "path": base.path, "family": base.family, "task": base.task,
                 "scales": list(base.scales), "recipes": {}}
        for recipe in recipes:
            if target.family not in recipe.targets:
                continue
            reason = base.check(recipe.derive)
            entry["recipes"][recipe.name] = {"derives": False, "reason": reason} if reason else \
                {"derives": True, "yaml": f"{base.name}-{recipe.name}.yaml"}
        rows.append(entry)
    return {"target": {"flavour": target.flavour, "family": target.family, "version": target.version,
                       "root": str(target.root), "cfg_dir": target.cfg_dir},
            "recipes": [r.name for r in recipes if target.family in r.targets], "bases": rows}


def not_derived(entry: dict) -> dict:
    """Reason -> the recipes it keeps off one base of the report (empty when every recipe derives)."""
    reasons: dict = {}
    for name, result in entry["recipes"].items():
        if not result["derives"]:
            reasons.setdefault(result["reason"], []).append(name)
    return reasons


def summary(entry: dict) -> str:
    """One line: how many recipes derive onto a base, and why the others do not (grouped by reason)."""
    reasons, total = not_derived(entry), len(entry["recipes"])
    good = total - sum(len(names) for names in reasons.values())
    if not reasons:
        return f"all {total}" if total else "no recipes"
    if not good and len(reasons) == 1:
        return f"none: {next(iter(reasons))}"
    return f"{good} of {total}; " + "; ".join(f"not {', '.join(names)}: {reason}" for reason, names in reasons.items())
