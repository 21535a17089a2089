"""All edits to the target's parser file (yolo.py / tasks.py).

The edits (edits/registry.py) run on libcst trees of only the pieces they touch (edits/pieces.py): the
import block, `def parse_model` and the methods holding forward loops. `apply_patch_whole` runs the same
edits on a tree of the whole file; it is the fallback for unusual files, and the tests hold both to the
same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from .. import roles
from ..errors import RefusedError
from .anchors import AnchorMissing
from .loops import MISSING_LOOP
from .pieces import Piece, Pieces, locate
from .registry import SCOPES, parser_edits

SUPPORT_MODULE = "yolopatch_support"
SUPPORT_NAMES = ("claim_backbone_rows", "route_backbone_levels")
FUSE_MODULE = "yolopatch_fuse"   # conv + BatchNorm folding of the added modules, for fuse() (edits/fuse.py)
FUSE_NAMES = ("fold_batchnorms",)
# A class member is indented: it is parsed as the body of this class, which is then cut off again.
_WRAPPER = b"class _yolopatch_piece:"


@dataclass(frozen=True)
class ParserPatch:
    imports: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (dotted module, names) in order
    members: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (role, module names), roles in table order
    repeats: tuple[str, ...] = ()                          # modules taking a repeat count

    def names(self, role: str) -> tuple[str, ...]:
        return next((names for name, names in self.members if name == role), ())

    @property
    def scaled(self) -> tuple[str, ...]:
        return tuple(n for role in roles.ROLES if role.registration == "scaled" for n in self.names(role.name))

    @property
    def needs_multi_output(self) -> bool:
        return any(self.names(role.name) for role in roles.ROLES if role.multi_output)


def _require_utf8(source: bytes, file: str) -> None:
    try:
        source.decode("utf-8")  # every supported release ships UTF-8 sources
    except UnicodeDecodeError:
        raise RefusedError(f"{file} is not valid UTF-8 text; nothing was written") from None


def parse(source: bytes, file: str) -> cst.Module:
    _require_utf8(source, file)
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise RefusedError(f"{file} does not parse as Python ({str(exc).splitlines()[0]}); nothing was written") from None
    except UnicodeDecodeError:
        raise RefusedError(f"{file} is not valid UTF-8 text; nothing was written") from None


def apply_patch(source: bytes, patch: ParserPatch, file: str, import_prefix: str) -> bytes:
    _require_utf8(source, file)
    pieces = locate(source)
    if pieces is not None:
        try:
            return _apply_to_pieces(source, pieces, patch, file, import_prefix)
        except cst.ParserSyntaxError:
            pass  # libcst reads a piece differently from ast: the whole-file parse reports the file
    return apply_patch_whole(source, patch, file, import_prefix)


def apply_patch_whole(source: bytes, patch: ParserPatch, file: str, import_prefix: str) -> bytes:
    module = parse(source, file)
    for edit in parser_edits(patch, import_prefix):
        module = edit.apply(module, file)
    return module.bytes


def _apply_to_pieces(source: bytes, pieces: Pieces, patch: ParserPatch, file: str, import_prefix: str) -> bytes:
    config = cst.PartialParserConfig(default_newline=_first_newline(source))
    edits = parser_edits(patch, import_prefix)
    edited: list[tuple[Piece, bytes]] = []
    for scope in SCOPES:
        scoped = [edit for edit in edits if edit.scope == scope]
        if not scoped:
            continue
        if scope == "loops":
            if not pieces.loops:
                raise AnchorMissing(file, MISSING_LOOP)
            for piece in pieces.loops:
                edited.append((piece, _edit_piece(source, piece, scoped, file, config)))
            continue
        if scope == "fuse":
            for piece in pieces.fuse:
                edited.append((piece, _edit_piece(source, piece, scoped, file, config)))
            if not pieces.fuse:   # no fuse() to extend: its edit classifies the empty tree as nothing to do
                _edit_module(cst.parse_module(b"", config=config), scoped, file)
            continue
        piece = pieces.header if scope == "header" else pieces.parse_model
        if piece is None:  # no parse_model: its edits report the missing anchor
            _edit_module(cst.parse_module(b"", config=config), scoped, file)
            continue
        edited.append((piece, _edit_piece(source, piece, scoped, file, config)))
    return _splice(source, edited)


def _edit_module(module: cst.Module, edits: list, file: str) -> cst.Module:
    for edit in edits:
        module = edit.apply(module, file)
    return module


def _edit_piece(source: bytes, piece: Piece, edits: list, file: str, config) -> bytes:
    wrapped = _WRAPPER + config.default_newline.encode() if piece.nested else b""
    module = _edit_module(cst.parse_module(wrapped + source[piece.start:piece.end], config=config), edits, file)
    code = module.bytes
    assert code.startswith(wrapped), "the wrapper class must come back unchanged"
    return code[len(wrapped):]


def _splice(source: bytes, edited: list[tuple[Piece, bytes]]) -> bytes:
    out, at = [], 0
    for piece, code in sorted(edited, key=lambda e: e[0].start):
        out += [source[at:piece.start], code]
        at = piece.end
    out.append(source[at:])
    return b"".join(out)


def _first_newline(source: bytes) -> str:
    """The newline libcst would take for the whole file: its first line ending."""
    for i, byte in enumerate(source):
        if byte == 0x0A:
            return "\n"
        if byte == 0x0D:
            return "\r\n" if source[i + 1:i + 2] == b"\n" else "\r"
    return "\n"
