"""The few runs of lines of a parser file that the edits touch, found with Python's own `ast`.

tasks.py is over 100 KB and a libcst parse of all of it costs more than everything else `apply` does;
the edits only ever touch four places:

  header       the top-level statements before the first def/class (where imports are added)
  parse_model  the top-level `def parse_model`
  loops        every method of a top-level class (or top-level function) holding a forward loop's save
               step `y.append(x if m.i in self.save else None)`
  fuse         every `def fuse` method of a top-level class

`ast` (C, an order of magnitude faster than a libcst parse) finds them by structure; libcst then parses and
edits each piece on its own and the edited pieces are spliced back between the untouched bytes. When a
file is not of this plain shape, `locate` returns None and the caller parses the whole file instead.
Where a file defines `parse_model` twice, the first is edited, as in the whole-file edit.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass

from .. import pyast
from .anchors import SAVE_OUTPUT

_SAVE_STEP = ast.dump(ast.parse(SAVE_OUTPUT).body[0])
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class Piece:
    start: int      # byte offsets into the file; whole lines
    end: int
    nested: bool    # a class member: indented, parsed inside a wrapper class


@dataclass(frozen=True)
class Pieces:
    header: Piece
    parse_model: Piece | None
    loops: tuple[Piece, ...]
    fuse: tuple[Piece, ...] = ()


def locate(source: bytes) -> Pieces | None:
    """The pieces of `source`, or None when the whole file must be parsed (ast cannot read it, no import
    block before the first def/class, a save step outside a def, a byte-order mark or another encoding
    declared: every piece must read the way the whole file does)."""
    try:
        if tokenize.detect_encoding(io.BytesIO(source).readline)[0] != "utf-8":
            return None
    except SyntaxError:
        return None
    try:
        tree = pyast.parse(source)
    except (SyntaxError, ValueError):
        return None
    line_starts = _line_starts(source)

    def piece(node: ast.stmt, nested: bool = False) -> Piece:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        return Piece(line_starts[first - 1], line_starts[node.end_lineno], nested)

    body = tree.body
    first_def = next((i for i, node in enumerate(body) if isinstance(node, _DEFS)), len(body))
    header_nodes = body[:first_def]
    if not any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in header_nodes):
        return None
    if any(_holds_save_step(node) for node in header_nodes):
        return None
    header = Piece(0, line_starts[header_nodes[-1].end_lineno], False)

    parse_model, loops, fuse = None, [], []
    for node in body[first_def:]:
        if isinstance(node, ast.FunctionDef) and node.name == "parse_model" and parse_model is None:
            if _holds_save_step(node):
                return None
            parse_model = piece(node)
        elif isinstance(node, ast.ClassDef):
            loops.extend(piece(member, nested=True) for member in node.body if _holds_save_step(member))
            for member in node.body:
                if isinstance(member, ast.FunctionDef) and member.name == "fuse":
                    if _holds_save_step(member):
                        return None
                    fuse.append(piece(member, nested=True))
        elif _holds_save_step(node):
            if not isinstance(node, _DEFS):
                return None
            loops.append(piece(node))
    return Pieces(header, parse_model, tuple(loops), tuple(fuse))


def _line_starts(source: bytes) -> list[int]:
    """Byte offset of the start of every line, and the end of the file last (ast's line numbering:
    `\\n`, `\\r\\n` and `\\r` end a line, which is what bytes.splitlines splits on)."""
    starts, offset = [0], 0
    for line in source.splitlines(keepends=True):
        offset += len(line)
        starts.append(offset)
    return starts


def _holds_save_step(node: ast.AST) -> bool:
    """Whether a statement holds a `for` loop with the save step directly in its body. Only statement
    blocks are walked, as the libcst loop edit walks them (edits/loops.py): expressions hold no loops."""
    for field in ("body", "orelse", "finalbody", "handlers"):
        for child in getattr(node, field, ()):
            if field == "body" and isinstance(node, (ast.For, ast.AsyncFor)) and isinstance(child, ast.Expr) \
                    and isinstance(child.value, ast.Call) and ast.dump(child) == _SAVE_STEP:
                return True
            if isinstance(child, (ast.stmt, ast.excepthandler)) and _holds_save_step(child):
                return True
    return False
