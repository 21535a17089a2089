"""Finding the anchors of the target's parser file by name and shape."""

from __future__ import annotations

import libcst as cst

from ..errors import RefusedError


class AnchorMissing(RefusedError):
    """An anchor the edit needs is not in the file: the release is not one the edits understand."""

    def __init__(self, file: str, anchor: str):
        super().__init__(f"{file}: cannot find {anchor}; this release's layout is not supported, nothing was written")


def code_of(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


def find_function(module: cst.Module, name: str) -> tuple[int, cst.FunctionDef] | None:
    for index, stmt in enumerate(module.body):
        if isinstance(stmt, cst.FunctionDef) and stmt.name.value == name:
            return index, stmt
    return None


def is_layer_loop(stmt: cst.CSTNode) -> bool:
    """parse_model's `for i, (f, n, m, args) in enumerate(d[...backbone...] + d[...head...])`."""
    if not isinstance(stmt, cst.For):
        return False
    target = code_of(stmt.target).replace(" ", "")
    return target.startswith("i,(f,n,m,args)") and "backbone" in code_of(stmt.iter)


def single_statement(stmt: cst.CSTNode) -> cst.BaseSmallStatement | None:
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
        return stmt.body[0]
    return None


def matches_code(stmt: cst.CSTNode, expected: str) -> bool:
    """Whether a one-statement line is `expected`, ignoring formatting and comments."""
    small = single_statement(stmt)
    if small is None:
        return False
    normal = lambda text: "".join(text.split()).replace("'", '"')  # noqa: E731
    return normal(code_of(small)) == normal(expected)


# The save step of every forward loop in every release.
SAVE_OUTPUT = "y.append(x if m.i in self.save else None)"
