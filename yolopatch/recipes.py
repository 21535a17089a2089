"""Load and validate recipe metadata (recipes/<name>/recipe.toml) and hash a recipe's content."""

from __future__ import annotations

import difflib
import hashlib
import keyword
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import options as recipe_options, resources, roles
from .derive.facts import NOT_DECLARED, DeriveFacts, SchemaError
from .derive.facts import parse as parse_derive
from .errors import RefusedError, UsageError

TARGET_FAMILIES = ("yolov5", "ultralytics")
LOCAL_DIR = "yolopatch-recipes"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RECIPE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Module files several recipes ship (a [[files]] entry with `shared = true`) live once, in this folder of the
# shipped recipes; two recipes writing one of them write the same bytes.
SHARED_FOLDER = "_shared"


@dataclass(frozen=True)
class Module:
    name: str
    file: str
    role: str
    repeats: bool = False
    channels: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()


@dataclass(frozen=True)
class YamlSpec:
    name: str
    target: str
    template: str
    vars: dict = field(default_factory=dict, hash=False, compare=False)
    per_backbone: bool = False  # rendered once per applied backbone recipe; `{backbone}` in name = its recipe

    @property
    def backbone_choice(self) -> tuple[str, list] | None:
        """(module name, args) when this YAML puts a backbone module at row 0."""
        if self.per_backbone or "backbone" not in self.vars:
            return None
        return self.vars["backbone"], list(self.vars.get("args", []))


@dataclass(frozen=True)
class LossEdit:
    """A recipe that edits the target's box loss ([loss] in recipe.toml): the IoU call of the loss becomes
    `yolopatch_iou.<function>(...)` with the recipe's options (edits/loss_call.py)."""
    function: str
    rtdetr: bool   # RT-DETR's GIoU term is edited too; false: `show` says the recipe does not cover RT-DETR


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    summary: str
    paper: str
    targets: tuple[str, ...]
    requires: tuple[str, ...]
    notes: str
    files: tuple[str, ...]
    modules: tuple[Module, ...]
    yamls: tuple[YamlSpec, ...]
    folder: Path
    shared_files: tuple[str, ...] = ()  # the files of `files` taken from the shared folder
    home: str = ""  # a local recipe: its folder in the checkout (relative), where the plan writes its files
    group: str = ""  # recipes of one exclusive group replace the same thing: at most one of them is applied
    loss: LossEdit | None = None
    options: tuple[recipe_options.Option, ...] = ()
    derive: DeriveFacts = field(default=NOT_DECLARED, compare=False)  # the [derive] table (yolopatch.derive)

    def source_path(self, file: str) -> Path:
        """Where the bytes of a shipped file come from: the recipe folder, or the shared folder."""
        if file in self.shared_files:
            return resources.recipes_dir() / SHARED_FOLDER / file
        return self.folder / file

    def modules_with_role(self, role: str) -> list[Module]:
        return [m for m in self.modules if m.role == role]

    def yamls_for(self, family: str) -> list[YamlSpec]:
        return [y for y in self.yamls if y.target == family]

    def figures(self) -> list[dict]:
        """Measured figures of the recipe's YAMLs (figures.toml, written by tests/catalog_figures.py)."""
        path = self.folder / "figures.toml"
        if not path.is_file():
            return []
        try:
            return list(tomllib.loads(path.read_text(encoding="utf-8")).get("models", []))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            return []

    def own_files(self) -> list[str]:
        """What defines the recipe, relative to its folder: recipe.toml, its files and its own templates."""
        own_templates = sorted(p.relative_to(self.folder).as_posix() for p in (self.folder / "templates").rglob("*")
                               if p.is_file()) if (self.folder / "templates").is_dir() else []
        return ["recipe.toml", *sorted(self.files), *own_templates]

    def content_hash(self) -> str:
        """sha256 over recipe.toml, every shipped file and the recipe's own templates, in a fixed order."""
        digest = hashlib.sha256()
        for rel in self.own_files():
            digest.update(rel.encode() + b"\0")
            digest.update(self.source_path(rel).read_bytes() + b"\0")
        return digest.hexdigest()


def _fail(folder: Path, message: str) -> RefusedError:
    return RefusedError(f"recipe {folder.name}: {message}")


def _safe_relative(folder: Path, rel: object, what: str) -> str:
    """A path inside the recipe folder: relative, no '..', not leaving the folder through a symlink."""
    if not isinstance(rel, str) or not rel:
        raise _fail(folder, f"{what} must be a non-empty string")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise _fail(folder, f"{what} {rel!r} must be a relative path inside the recipe folder")
    resolved = (folder / rel).resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise _fail(folder, f"{what} {rel!r} points outside the recipe folder")
    return rel


def _int_tuple(folder: Path, value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and v > 0 for v in value):
        raise _fail(folder, f"{what} must be a list of positive integers")
    return tuple(value)


def _parse_module(folder: Path, raw: dict, files: tuple[str, ...]) -> Module:
    name = raw.get("name")
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise _fail(folder, f"module name {name!r} is not a Python identifier")
    role = raw.get("role")
    if role not in roles.NAMES:
        raise _fail(folder, f"module {name}: role {role!r} is not one of {', '.join(roles.NAMES)}")
    entry = roles.get(role)
    file = raw.get("file")
    if file not in files:
        raise _fail(folder, f"module {name}: file {file!r} is not listed in [[files]]")
    repeats = raw.get("repeats", False)
    if not isinstance(repeats, bool):
        raise _fail(folder, f"module {name}: repeats must be true or false")
    if repeats and not entry.repeats:
        raise _fail(folder, f"module {name}: a {role} takes no repeat count (repeats = true is for "
                            f"{', '.join(r.name for r in roles.ROLES if r.repeats)})")
    channels = strides = ()
    if entry.declares_outputs:
        channels = _int_tuple(folder, raw.get("channels"), f"module {name}: channels")
        strides = _int_tuple(folder, raw.get("strides"), f"module {name}: strides")
        if len(channels) != len(strides):
            raise _fail(folder, f"module {name}: channels and strides differ in length")
        if any(s & (s - 1) for s in strides) or list(strides) != sorted(set(strides)):
            raise _fail(folder, f"module {name}: strides must be increasing powers of two")
    return Module(name=name, file=file, role=role, repeats=repeats,
                  channels=channels, strides=strides)


def _parse_yaml(folder: Path, raw: dict) -> YamlSpec:
    name, target, template = raw.get("name"), raw.get("target"), raw.get("template")
    per_backbone = bool(raw.get("per_backbone", False))
    plain_name = name.replace("{backbone}", "x") if per_backbone and isinstance(name, str) else name
    if not isinstance(name, str) or not _RECIPE_NAME.match(str(plain_name)):
        raise _fail(folder, f"yaml name {name!r} must be lower-case letters, digits, '-' or '_'")
    if target not in TARGET_FAMILIES:
        raise _fail(folder, f"yaml {name}: target {target!r} is not one of {', '.join(TARGET_FAMILIES)}")
    if not isinstance(template, str) or PurePosixPath(template).is_absolute() or ".." in PurePosixPath(template).parts:
        raise _fail(folder, f"yaml {name}: template {template!r} must be a path inside templates/")
    variables = raw.get("vars", {})
    if not isinstance(variables, dict):
        raise _fail(folder, f"yaml {name}: vars must be a table")
    return YamlSpec(name=name, target=target, template=template, vars=variables, per_backbone=per_backbone)


def load_recipe(folder: Path) -> Recipe:
    toml_path = folder / "recipe.toml"
    try:
        raw = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(folder, "has no recipe.toml") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _fail(folder, f"recipe.toml does not parse: {exc}") from None
    name = raw.get("name")
    if name != folder.name or not _RECIPE_NAME.match(str(name)):
        raise _fail(folder, f"name {name!r} must equal the folder name")
    targets = tuple(raw.get("targets", ()))
    if not targets or any(t not in TARGET_FAMILIES for t in targets):
        raise _fail(folder, f"targets must be a non-empty subset of {', '.join(TARGET_FAMILIES)}")
    entries = raw.get("files", [])
    shared = tuple(f.get("source") for f in entries if f.get("shared"))
    files = tuple(f.get("source") if f.get("shared") else _safe_relative(folder, f.get("source"), "file")
                  for f in entries)
    for rel in files:
        where = resources.recipes_dir() / SHARED_FOLDER if rel in shared else folder
        if not isinstance(rel, str) or "/" in rel or "\\" in rel or not rel.endswith(".py"):
            raise _fail(folder, f"file {rel!r} must be a .py file at the top of the recipe folder"
                        + (f" ({SHARED_FOLDER}/ for shared files)" if rel in shared else ""))
        path = where / rel
        if path.is_symlink() or not path.is_file():
            raise _fail(folder, f"file {rel!r} is missing or is a symlink"
                        + (f" (shared files live in {where})" if rel in shared else ""))
        if not rel[:-3].isidentifier() or keyword.iskeyword(rel[:-3]):
            raise _fail(folder, f"file {rel!r}: its name is imported as a module, so it must be a Python identifier")
    modules = tuple(_parse_module(folder, m, files) for m in raw.get("modules", []))
    loss = _parse_loss(folder, raw.get("loss"), files)
    if not modules and loss is None and raw.get("derive") is None:  # p2 says what it derives instead
        raise _fail(folder, "declares no [[modules]] and no [loss] edit (a recipe that only derives YAMLs "
                            "declares a [derive] table)")
    group = raw.get("group", "")
    if not isinstance(group, str) or (group and not _RECIPE_NAME.match(group)):
        raise _fail(folder, f"group {group!r} must be lower-case letters, digits, '-' or '_'")
    yamls = tuple(_parse_yaml(folder, y) for y in raw.get("yamls", []))
    try:
        derive = parse_derive(raw.get("derive"), modules)
    except SchemaError as exc:
        raise _fail(folder, str(exc)) from None
    if not modules and loss is None and derive.kind == "none":
        raise _fail(folder, "declares no [[modules]] and derives nothing: it would never write a file")
    return Recipe(
        name=name, version=str(raw.get("version", "0")), summary=str(raw.get("summary", "")),
        paper=str(raw.get("paper", "")), targets=targets,
        requires=tuple(str(r) for r in raw.get("requires", [])), notes=str(raw.get("notes", "")),
        files=files, modules=modules, yamls=yamls, folder=folder, shared_files=shared, group=group, loss=loss,
        options=recipe_options.declarations(raw.get("options"), lambda message: _fail(folder, message)),
        derive=derive,
    )


# The module holding the IoU functions a [loss] edit calls (edits/loss_call.MODULE, not imported here: libcst).
LOSS_MODULE_FILE = "yolopatch_iou.py"


def _parse_loss(folder: Path, raw: object, files: tuple[str, ...]) -> LossEdit | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not _IDENTIFIER.match(str(raw.get("function", ""))):
        raise _fail(folder, "[loss] needs `function`, the name of an IoU function of yolopatch_iou.py")
    if LOSS_MODULE_FILE not in files:
        raise _fail(folder, f"[loss] calls {LOSS_MODULE_FILE}, which [[files]] must list (shared = true)")
    rtdetr = raw.get("rtdetr", False)
    if not isinstance(rtdetr, bool):
        raise _fail(folder, "[loss] rtdetr must be true or false")
    return LossEdit(function=raw["function"], rtdetr=rtdetr)


def check_exclusive(applied: list[Recipe], requested: list[Recipe]) -> None:
    """Refuse a recipe of a group another applied or requested recipe of that group already holds."""
    holders: dict[str, str] = {}
    for recipe in applied:
        if recipe.group:
            holders.setdefault(recipe.group, recipe.name)
    for recipe in requested:
        if not recipe.group:
            continue
        holder = holders.setdefault(recipe.group, recipe.name)
        if holder != recipe.name:
            if holder in {r.name for r in applied}:
                where, then = "is applied", f"revert {holder} first"
            else:
                where, then = "is requested too", "apply one of them"
            raise RefusedError(f"recipe {recipe.name} cannot join {holder}, which {where}: both are "
                               f"{recipe.group} recipes and at most one is applied ({then}); nothing was written")


def check_supported(recipes: list[Recipe], family: str) -> None:
    for recipe in recipes:
        if family not in recipe.targets:
            raise RefusedError(f"recipe {recipe.name} does not support {family} "
                               f"(it supports {', '.join(recipe.targets)})")


def local_dir(root: Path) -> Path:
    """Where a checkout keeps its own recipes (`yolopatch add` writes them there): committed with the
    checkout, found without --recipes-dir."""
    return Path(root) / LOCAL_DIR


def with_local(extra_dirs: tuple[Path, ...], root: Path) -> tuple[Path, ...]:
    """The --recipes-dir folders and, last, the checkout's own recipes when it has any."""
    local = local_dir(root)
    if not local.is_dir() or any(Path(d).resolve() == local.resolve() for d in extra_dirs):
        return tuple(extra_dirs)
    return (*extra_dirs, local)


def recipe_folders(extra_dirs: tuple[Path, ...] = ()) -> dict[str, Path]:
    """Recipe name -> folder: the shipped recipes, then user folders (a user recipe may not shadow a shipped one)."""
    found: dict[str, Path] = {}
    for base in (resources.recipes_dir(), *extra_dirs):
        if not base.is_dir():
            raise RefusedError(f"recipe folder {base} does not exist")
        for child in sorted(base.iterdir()):
            if (child / "recipe.toml").is_file() and child.name not in found:
                found[child.name] = child
    return found


def load_all(extra_dirs: tuple[Path, ...] = ()) -> dict[str, Recipe]:
    return {name: load_recipe(folder) for name, folder in recipe_folders(extra_dirs).items()}


def resolve(names: list[str], extra_dirs: tuple[Path, ...] = ()) -> list[Recipe]:
    folders = recipe_folders(extra_dirs)
    recipes = []
    for name in names:
        if name not in folders:
            close = difflib.get_close_matches(name, list(folders), n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(folders)})"
            raise UsageError(f"unknown recipe {name!r}{hint}")
        recipes.append(load_recipe(folders[name]))
    return recipes
