"""From a module file to a local recipe, checked at every step before anything is planned or written."""

from __future__ import annotations

from pathlib import Path

import libcst as cst

from .. import recipes as recipe_store
from ..engine import pristine_bytes
from ..errors import RefusedError
from ..manifest import State
from ..names import resolvable
from ..recipes import Recipe
from ..targets import Target
from .author import Added, module_file_name, recipe_name, sha256, write_folder
from .infer import decide, parse_role_options
from .layout import checkout_layout
from .measure import measure_backbones
from .rewrite import RewriteTargetImports, requirements
from .scan import scan


def compose(target: Target, old: State | None, file: Path, name: str | None, role_options: tuple[str, ...],
            python: str, recipe_dirs: tuple[Path, ...], scratch: Path) -> tuple[Recipe, str]:
    """The recipe (written to scratch/<name>, to be planned into the checkout) and a one-line summary."""
    chosen = parse_role_options(role_options)
    source = file.read_bytes()
    try:
        source.decode("utf-8")
    except UnicodeDecodeError:
        raise RefusedError(f"{file} is not valid UTF-8 text; nothing was written") from None
    decisions = decide(scan(source, str(file)), str(file), chosen)
    name = recipe_name(file, name)
    _refuse_taken_recipe_name(name, recipe_dirs)
    module_file = module_file_name(name)
    _refuse_taken_file(target, old, module_file, name)
    _refuse_taken_class_names(target, old, [d.name for d in decisions])
    module_source = _rewritten(source, target, str(file))
    backbones = [d.name for d in decisions if d.role == "backbone"]
    measured = measure_backbones(target, module_source, module_file, backbones, python) if backbones else {}
    added = Added(name=name, module_file=module_file, module_source=module_source, decisions=tuple(decisions),
                  measured=measured, requires=tuple(requirements(source)), source_name=file.name,
                  source_sha256=sha256(source))
    recipe = write_folder(added, target.family, scratch)
    roles_text = ", ".join(f"{d.name} {d.role}{' (repeats)' if d.repeats else ''}" for d in decisions)
    return recipe, f"{file.name} -> recipe {name} in {recipe.home}/ ({roles_text})"


def _refuse_taken_recipe_name(name: str, recipe_dirs: tuple[Path, ...]) -> None:
    """A local recipe may not take the name of a shipped one or one of --recipes-dir (those would win)."""
    found = recipe_store.recipe_folders(recipe_dirs)
    if name in found:
        raise RefusedError(f"recipe name {name!r} is taken by {found[name]}; pass --name; nothing was written")


def _refuse_taken_file(target: Target, old: State | None, module_file: str, name: str) -> None:
    rel = f"{target.modules_dir}/{module_file}"
    ours = old is not None and rel in old.files and old.files[rel].kind == "create"
    if (target.root / rel).exists() and not ours:
        raise RefusedError(f"{rel} already exists in the checkout; pass another --name than {name!r}; "
                           "nothing was written")


def _refuse_taken_class_names(target: Target, old: State | None, names: list[str]) -> None:
    def read(rel: str) -> bytes | None:
        return pristine_bytes(target.root, old, rel)

    parser = read(target.parser_file)
    if parser is None:
        raise RefusedError(f"{target.parser_file} is missing from the checkout")
    taken = resolvable(parser, target.parser_file, read)
    clashes = [n for n in names if n in taken]
    if clashes:
        raise RefusedError(f"{clashes[0]} is already a name parse_model resolves in {target.parser_file} "
                           f"({taken[clashes[0]]}); rename the class in your file; nothing was written")


def _rewritten(source: bytes, target: Target, file: str) -> bytes:
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise RefusedError(f"{file} does not parse as Python ({str(exc).splitlines()[0]}); nothing was written") from None
    return RewriteTargetImports(checkout_layout(target)).apply(module, file).bytes
