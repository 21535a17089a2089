"""The module names a target's parse_model resolves, read statically from the parser file.

parse_model looks names up in the parser file's globals (`eval(m)` in YOLOv5, `globals()[m]` in
ultralytics): what the file imports, defines or assigns at top level, and every public name of a module it
star-imports (YOLOv5's `from models.common import *`). A new module with one of these names would replace
the target's own (`Conv`, `C2f`) in every YAML, so it is refused — unless the name only arrives through a
star import and parse_model never names it (see plan._shadowable). A name that exists elsewhere in the
package but is not among these (ultralytics' CBAM in conv.py) is free.
"""

from __future__ import annotations

import ast
from pathlib import PurePosixPath
from typing import Callable

from . import pyast

_NESTED = (ast.If, ast.Try, ast.With)


def _top_level(statements):
    """Statements run at module level, including inside top-level if/try/with blocks."""
    for node in statements:
        yield node
        if isinstance(node, _NESTED) or (hasattr(ast, "TryStar") and isinstance(node, ast.TryStar)):
            for field in ("body", "orelse", "finalbody"):
                yield from _top_level(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)


def _module_path(dotted: str, level: int, here: str) -> list[str]:
    """Candidate files (relative, POSIX) for an import of `dotted` at `level` from the file `here`."""
    if level:
        base = PurePosixPath(here).parent
        for _ in range(level - 1):
            base = base.parent
        parts = [*base.parts, *(dotted.split(".") if dotted else [])]
    else:
        parts = dotted.split(".")
    stem = "/".join(parts)
    return [f"{stem}.py", f"{stem}/__init__.py"]


def bound_names(source: bytes, here: str, read: Callable[[str], bytes | None], public_only: bool = False,
                _seen: frozenset = frozenset()) -> dict[str, str]:
    """Name -> where it comes from, for every global a module file binds at top level."""
    try:
        tree = pyast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    names: dict[str, str] = {}
    exported = None
    for node in _top_level(tree.body):
        if isinstance(node, ast.ImportFrom):
            source_name = "." * node.level + (node.module or "")
            for alias in node.names:
                if alias.name == "*":
                    names.update(_star(node.module or "", node.level, here, read, _seen))
                else:
                    names[alias.asname or alias.name] = f"imported from {source_name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = f"imported as a module ({alias.name})"
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = f"defined in {here}"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = f"assigned in {here}"
                        if name.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                            exported = {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
    if public_only:
        names = {n: w for n, w in names.items() if (n in exported if exported is not None else not n.startswith("_"))}
    return names


def _star(module: str, level: int, here: str, read, seen: frozenset) -> dict[str, str]:
    for rel in _module_path(module, level, here):
        if rel in seen:
            return {}
        data = read(rel)
        if data is not None:
            found = bound_names(data, rel, read, public_only=True, _seen=seen | {rel})
            return {n: f"star-imported from {module or rel}" for n in found}
    return {}


def resolvable(parser_source: bytes, parser_file: str, read: Callable[[str], bytes | None]) -> dict[str, str]:
    """Name -> origin for every name the parser file's parse_model resolves. Paths are relative to the
    checkout root, which is where the targets' absolute imports start; `read(rel)` gives a file's bytes
    (None when absent)."""
    return bound_names(parser_source, parser_file, read)


def names_in_parse_model(parser_source: bytes) -> set[str]:
    """Every bare name parse_model's body mentions: the names it routes (`if m in {Conv, C2f, ...}`)."""
    try:
        tree = pyast.parse(parser_source)
    except (SyntaxError, ValueError):
        return set()
    for node in _top_level(tree.body):
        if isinstance(node, ast.FunctionDef) and node.name == "parse_model":
            return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    return set()
