"""Add `from package.module import A, B` to a file, after its leading block of imports."""

from __future__ import annotations

import libcst as cst

from .anchors import code_of


def _imported(stmt: cst.CSTNode) -> tuple[str, set[str]] | None:
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.ImportFrom):
        node = stmt.body[0]
        if node.module is None or isinstance(node.names, cst.ImportStar):
            return None
        return code_of(node.module), {alias.evaluated_name for alias in node.names}
    return None


def _is_import(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(
        isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body
    )


def add_from_import(module: cst.Module, dotted: str, names: list[str]) -> cst.Module:
    """Insert the import after the last top-level import before the first def/class (fixed point)."""
    for stmt in module.body:
        found = _imported(stmt)
        if found and found[0] == dotted and set(names) <= found[1]:
            return module
    insert_at = 0
    for index, stmt in enumerate(module.body):
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            break
        if _is_import(stmt):
            insert_at = index + 1
    line = cst.parse_statement(f"from {dotted} import {', '.join(names)}\n", config=module.config_for_parsing)
    body = list(module.body)
    body.insert(insert_at, line)
    return module.with_changes(body=body)
