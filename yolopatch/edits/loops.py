"""Teach every forward loop (`y.append(x if m.i in self.save else None)`) multi-output backbones.

Only statement blocks are walked (classes, functions, and the compound statements inside them), never
expressions: the parser files are thousands of lines and a full-tree visit costs more than the parse.
"""

from __future__ import annotations

import libcst as cst

from .anchors import SAVE_OUTPUT, AnchorMissing, matches_code

SPREAD = "x = spread_backbone_outputs(m, x, y, self.save)  # yolopatch: a backbone fills several rows\n"
_COMPOUND = (cst.ClassDef, cst.FunctionDef, cst.If, cst.Else, cst.For, cst.While, cst.With, cst.Try,
             cst.ExceptHandler, cst.Finally)


class _LoopEdit:
    def __init__(self, config):
        self.config = config
        self.loops = 0

    def block(self, statements):
        return [self.statement(stmt) for stmt in statements]

    def statement(self, node):
        if not isinstance(node, _COMPOUND):
            return node
        changes = {}
        body = getattr(node, "body", None)
        if isinstance(body, cst.IndentedBlock):
            statements = self.block(body.body)
            if isinstance(node, cst.For):
                statements = self._spread_before_save(statements)
            changes["body"] = body.with_changes(body=statements)
        for field in ("orelse", "finalbody"):
            child = getattr(node, field, None)
            if child is not None:
                changes[field] = self.statement(child)
        if isinstance(node, cst.Try):
            changes["handlers"] = [self.statement(h) for h in node.handlers]
        return node.with_changes(**changes)

    def _spread_before_save(self, statements):
        at = next((i for i, stmt in enumerate(statements) if matches_code(stmt, SAVE_OUTPUT)), None)
        if at is None:
            return statements
        self.loops += 1
        if at > 0 and matches_code(statements[at - 1], SPREAD.split("#")[0]):
            return statements
        return [*statements[:at], cst.parse_statement(SPREAD, config=self.config), *statements[at:]]


MISSING_LOOP = "a forward loop saving outputs with `y.append(x if m.i in self.save else None)`"


def edit_forward_loops(module: cst.Module) -> tuple[cst.Module, int]:
    """The edited module and how many forward loops it holds (0 is not an error here: a file is edited
    piece by piece, see parser_file.py)."""
    edit = _LoopEdit(module.config_for_parsing)
    return module.with_changes(body=edit.block(module.body)), edit.loops


def teach_forward_loops(module: cst.Module, file: str) -> tuple[cst.Module, int]:
    """Returns the edited module and how many forward loops it found; refuses a file with none."""
    module, loops = edit_forward_loops(module)
    if loops == 0:
        raise AnchorMissing(file, MISSING_LOOP)
    return module, loops
