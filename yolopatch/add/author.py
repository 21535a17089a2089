"""The local recipe `yolopatch add` writes: its name, recipe.toml and the module file, loaded back through
the recipe loader (so an added recipe is exactly as valid as a shipped one)."""

from __future__ import annotations

import hashlib
import json
import keyword
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UsageError
from ..recipes import LOCAL_DIR, Recipe, load_recipe
from .infer import Decision

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# The YAML each family gets for an added backbone: a stock detection head on the backbone's P3-P5 rows.
BACKBONE_YAMLS = {"ultralytics": ("yolov8-{name}", "ultralytics/backbone.yaml.j2"),
                  "yolov5": ("yolov5s-{name}", "yolov5/backbone.yaml.j2")}


@dataclass(frozen=True)
class Added:
    name: str
    module_file: str                     # the file name the module gets in the recipe and the target
    module_source: bytes                 # the user's file, its target imports rewritten
    decisions: tuple[Decision, ...]
    measured: dict                       # backbone class -> (channels, strides)
    requires: tuple[str, ...]
    source_name: str                     # the user's file name
    source_sha256: str


def recipe_name(file: Path, given: str | None) -> str:
    if given is not None:
        if not _NAME.match(given):
            raise UsageError(f"--name {given!r}: use lower-case letters, digits, '-' or '_', starting with a letter or digit")
        return given
    derived = re.sub(r"[^a-z0-9_-]+", "-", file.stem.lower()).strip("-_")
    if not derived or not _NAME.match(derived):
        raise UsageError(f"cannot make a recipe name from {file.name!r}; pass --name")
    return derived


def module_file_name(name: str) -> str:
    """The module's file name: an importable identifier made from the recipe name."""
    stem = name.replace("-", "_")
    if stem[0].isdigit():
        stem = f"m_{stem}"
    if keyword.iskeyword(stem):
        stem += "_"
    return stem + ".py"


def _string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def recipe_toml(added: Added, family: str) -> str:
    roles_text = ", ".join(f"{d.name} ({d.role})" for d in added.decisions)
    lines = [
        f"# Written by `yolopatch add` from {added.source_name} (sha256 {added.source_sha256[:12]}).",
        "# Edit the original file and run `yolopatch add` again to update this recipe.",
        f"name = {_string(added.name)}",
        f"version = {_string('local-' + added.source_sha256[:12])}",
        f"summary = {_string(f'Modules added from {added.source_name}: {roles_text}')}",
        'paper = ""',
        f"targets = [{_string(family)}]",
        f"requires = [{', '.join(_string(r) for r in added.requires)}]",
        f"notes = {_string('Roles read from each class constructor and forward; imports of the target rewritten for this checkout.')}",
        "",
        "[[files]]",
        f"source = {_string(added.module_file)}",
    ]
    for decision in added.decisions:
        lines += ["", "[[modules]]", f"name = {_string(decision.name)}", f"file = {_string(added.module_file)}",
                  f"role = {_string(decision.role)}"]
        if decision.repeats:
            lines.append("repeats = true")
        if decision.name in added.measured:
            channels, strides = added.measured[decision.name]
            lines += [f"channels = {list(channels)}", f"strides = {list(strides)}"]
    for yaml_name, backbone in _backbone_yamls(added, family):
        lines += ["", "[[yamls]]", f"name = {_string(yaml_name)}", f"target = {_string(family)}",
                  f"template = {_string(BACKBONE_YAMLS[family][1])}",
                  f"vars = {{ backbone = {_string(backbone)}, args = [] }}"]
    return "\n".join(lines) + "\n"


def _backbone_yamls(added: Added, family: str) -> list[tuple[str, str]]:
    """A YAML per backbone whose outputs include strides 8, 16 and 32 (the stock head's inputs), 32 last."""
    fitting = [d.name for d in added.decisions if d.role == "backbone" and d.name in added.measured
               and {8, 16, 32} <= set(added.measured[d.name][1]) and added.measured[d.name][1][-1] == 32]
    stem = BACKBONE_YAMLS[family][0].format(name=added.name)
    if len(fitting) == 1:
        return [(stem, fitting[0])]
    return [(f"{stem}-{name.lower()}", name) for name in fitting]


def write_folder(added: Added, family: str, parent: Path) -> Recipe:
    """recipe.toml and the module file in parent/<name>/, loaded back; `home` says where the plan puts
    the folder in the checkout."""
    folder = parent / added.name
    folder.mkdir(parents=True)
    (folder / "recipe.toml").write_text(recipe_toml(added, family), encoding="utf-8")
    (folder / added.module_file).write_bytes(added.module_source)
    return replace(load_recipe(folder), home=f"{LOCAL_DIR}/{added.name}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
