"""The edits of the parser file, in the order they run: the import block, then parse_model, then the
forward loops (the order of the pieces in the file, so the piecewise and the whole-file edit refuse a file
for the same first reason)."""

from __future__ import annotations

from .branches import RoleBranch
from .fuse import FoldNewBatchNorms
from .imports import ImportNames
from .loops import ForwardLoopStatement
from .parse_model import JoinModuleSet
from .rows import RowNumbering

REGISTRY = (ImportNames, JoinModuleSet, RoleBranch, RowNumbering, ForwardLoopStatement, FoldNewBatchNorms)
SCOPES = ("header", "parse_model", "loops", "fuse")


def parser_edits(patch, import_prefix: str) -> list:
    """Every edit a ParserPatch needs, in registry order."""
    return [edit for kind in REGISTRY for edit in kind.for_patch(patch, import_prefix)]
