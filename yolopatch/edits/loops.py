"""Teach every forward loop (`y.append(x if m.i in self.save else None)`) multi-output backbones."""

from __future__ import annotations

import libcst as cst

from .anchors import SAVE_OUTPUT, AnchorMissing, matches_code

SPREAD = "x = spread_backbone_outputs(m, x, y, self.save)  # yolopatch: a backbone fills several rows\n"


class _LoopEdit(cst.CSTTransformer):
    def __init__(self, config):
        self.config = config
        self.loops = 0

    def leave_For(self, original: cst.For, updated: cst.For) -> cst.For:
        body = list(updated.body.body)
        at = next((i for i, stmt in enumerate(body) if matches_code(stmt, SAVE_OUTPUT)), None)
        if at is None:
            return updated
        self.loops += 1
        if at > 0 and matches_code(body[at - 1], SPREAD.split("#")[0]):
            return updated
        body.insert(at, cst.parse_statement(SPREAD, config=self.config))
        return updated.with_changes(body=updated.body.with_changes(body=body))


def teach_forward_loops(module: cst.Module, file: str) -> tuple[cst.Module, int]:
    """Returns the edited module and how many forward loops it found."""
    edit = _LoopEdit(module.config_for_parsing)
    module = module.visit(edit)
    if edit.loops == 0:
        raise AnchorMissing(file, "a forward loop saving outputs with `y.append(x if m.i in self.save else None)`")
    return module, edit.loops
