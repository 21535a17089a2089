"""What a set of recipes makes of a pristine checkout: the full bytes of every file it writes.

The patched state is a pure function of (pristine files, recipe set): recipes are applied in name
order, so `apply a b`, `apply b a` and `apply a` then `apply b` give the same bytes, and reverting one
recipe of several re-plans the others from the pristine files.
"""

from __future__ import annotations

from typing import Callable

from . import roles
from .engine import PlannedFile
from .edits.parser_file import FUSE_MODULE, SUPPORT_MODULE, ParserPatch, apply_patch
from .errors import RefusedError
from .names import names_in_parse_model, resolvable
from .recipes import LOSS_MODULE_FILE, Recipe, check_exclusive, check_supported
from .render import render_yaml
from .resources import runtime_dir
from .targets import Target


def parser_patch(recipes: list[Recipe], target: Target) -> ParserPatch:
    """What the parser file needs for these recipes: imports, and each module's registration by role."""
    seen: dict[str, str] = {}
    imports, repeats = [], []
    members: dict[str, list[str]] = {role: [] for role in roles.NAMES}
    for recipe in recipes:
        for module in recipe.modules:
            if module.name in seen:
                raise RefusedError(f"recipes {seen[module.name]} and {recipe.name} both define {module.name}")
            seen[module.name] = recipe.name
            members[module.role].append(module.name)
            if module.repeats:
                repeats.append(module.name)
        for file in recipe.files:
            names = tuple(m.name for m in recipe.modules if m.file == file)
            if names:
                imports.append((f"{target.import_prefix}.{file[:-3]}", names))
    return ParserPatch(imports=tuple(imports), repeats=tuple(repeats),
                       members=tuple((role, tuple(names)) for role, names in members.items() if names))


def _home(recipe: Recipe, target: Target) -> str:
    """The recipe's folder in the checkout, relative, when it is one of the checkout's own recipes."""
    if recipe.home:
        return recipe.home
    try:
        return recipe.folder.resolve().relative_to(target.root.resolve()).as_posix()
    except ValueError:
        return ""


def _refuse_taken_names(recipes: list[Recipe], target: Target, parser_source: bytes, pristine) -> None:
    """A module whose name parse_model already resolves would replace the target's own in every YAML."""
    def read(rel: str) -> bytes | None:
        try:
            return pristine(rel)
        except RefusedError:
            return None

    taken = resolvable(parser_source, target.parser_file, read)
    routed = None  # parse_model's names, read only when a star-imported name is taken
    for recipe in recipes:
        for module in recipe.modules:
            if module.name not in taken:
                continue
            if taken[module.name].startswith("star-imported") and routed is None:
                routed = names_in_parse_model(parser_source)
            if not _shadowable(module.name, taken[module.name], routed or set()):
                raise RefusedError(f"recipe {recipe.name}: {module.name} is already a name parse_model resolves in "
                                   f"{target.parser_file} ({taken[module.name]}); rename the class")


def _shadowable(name: str, origin: str, routed: set[str]) -> bool:
    """A star-imported name parse_model never names (ultralytics 8.0's CBAM, from its one modules.py) is
    bound in the parser file only by the star import; the recipe's import, placed after it, takes the name
    there and leaves the target's class untouched in its own module."""
    return origin.startswith("star-imported") and name not in routed


def _has_rtdetr(parser_source: bytes) -> bool:
    return b"class RTDETRDetectionModel" in parser_source


def build(target: Target, recipes: list[Recipe], pristine: Callable[[str], bytes],
          options: dict[str, dict] | None = None, derived: dict | None = None) -> list[PlannedFile]:
    """Every file the recipes write, computed from the pristine bytes `pristine(rel)` returns; `options`:
    recipe name -> {option: value} (options.resolve), defaults where absent; `derived`: YAMLs derived from
    stock configs (`--base`, yolopatch.bases), relative path -> bytes."""
    recipes = sorted(recipes, key=lambda r: r.name)
    check_supported(recipes, target.family)
    check_exclusive([], recipes)
    planned: dict[str, PlannedFile] = {}

    def add(rel: str, content: bytes, modifies: bool = False) -> None:
        if rel in planned and planned[rel].content != content:
            raise RefusedError(f"two recipes write different bytes to {rel}")
        planned[rel] = PlannedFile(rel, content, modifies)

    for recipe in recipes:
        for file in recipe.files:
            if recipe.loss is None or file != LOSS_MODULE_FILE:   # the IoU module goes where the loss imports it
                add(f"{target.modules_dir}/{file}", recipe.source_path(file).read_bytes())
        if recipe.loss is not None:
            from .loss_plan import loss_files

            for rel, content in loss_files(target, recipe, (options or {}).get(recipe.name, {}), pristine).items():
                add(rel, content, modifies=not rel.endswith(LOSS_MODULE_FILE))
        home = _home(recipe, target)
        if home:  # a local recipe is part of the patch: the lock pins it, revert restores it
            for rel in recipe.own_files():
                add(f"{home}/{rel}", (recipe.folder / rel).read_bytes(), modifies=(target.root / home / rel).is_file())
    patch = parser_patch(recipes, target)
    if patch.needs_multi_output:
        support = f"{SUPPORT_MODULE}.py"
        add(f"{target.modules_dir}/{support}", (runtime_dir() / support).read_bytes())
    if patch.imports:   # the target's fuse() folds the added modules' conv+BN pairs with it
        folding = f"{FUSE_MODULE}.py"
        add(f"{target.modules_dir}/{folding}", (runtime_dir() / folding).read_bytes())
    parser_source = pristine(target.parser_file)
    if patch.imports or patch.members or patch.repeats:   # a loss-only recipe leaves the parser file alone
        _refuse_taken_names(recipes, target, parser_source, pristine)
        patched = apply_patch(parser_source, patch, target.parser_file, target.import_prefix)
        _check_output(patched, target)
        add(target.parser_file, patched, modifies=True)
    backbones = _backbone_choices(recipes, target.family)
    for recipe in recipes:
        for spec in recipe.yamls_for(target.family):
            if "rtdetr" in spec.template and not _has_rtdetr(parser_source):
                continue  # this release has no RT-DETR model class
            if not spec.per_backbone:
                add(f"{target.cfg_dir}/{spec.name}.yaml", render_yaml(recipe, spec, target.yaml_dialect))
                continue
            for owner, (module, args) in backbones.items():  # compose with every applied backbone recipe
                name = spec.name.replace("{backbone}", owner)
                extra = {"backbone": module, "args": args}
                add(f"{target.cfg_dir}/{name}.yaml", render_yaml(recipe, spec, target.yaml_dialect, extra, name))
    for rel, content in (derived or {}).items():  # derived from the checkout's own config: wins over a template
        planned[rel] = PlannedFile(rel, content, False)
    return [planned[rel] for rel in sorted(planned)]


def _backbone_choices(recipes: list[Recipe], family: str) -> dict[str, tuple[str, list]]:
    """Recipe name -> (backbone module, YAML args) its own YAMLs use, for YAMLs that compose recipes."""
    choices = {}
    for recipe in recipes:
        found = [spec.backbone_choice for spec in recipe.yamls_for(family) if spec.backbone_choice]
        if found:
            choices[recipe.name] = found[0]
    return choices


def _check_output(patched: bytes, target: Target) -> None:
    """The patched file is valid Python. (That a second pass is a no-op is proven by the test suite for
    every edit and anchor shape; re-running it here would double the cost of every apply.)"""
    try:
        compile(patched, target.parser_file, "exec", dont_inherit=True)
    except SyntaxError as exc:  # a bug in an edit, never the user's fault
        raise RuntimeError(f"edit produced invalid Python in {target.parser_file}: {exc}") from exc
