"""All edits to the target's parser file (yolo.py / tasks.py).

The edits run on libcst trees of only the pieces they touch (edits/pieces.py): the import block,
`def parse_model` and the methods holding forward loops. `apply_patch_whole` runs the same edits on a
tree of the whole file; it is the fallback for unusual files, and the tests hold both to the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from ..errors import RefusedError
from .anchors import AnchorMissing
from .imports import add_from_import
from .loops import MISSING_LOOP, edit_forward_loops, teach_forward_loops
from .parse_model import Registration, register
from .pieces import Piece, Pieces, locate

SUPPORT_MODULE = "yolopatch_support"
SUPPORT_NAMES = ["claim_backbone_rows", "spread_backbone_outputs"]
# A class member is indented: it is parsed as the body of this class, which is then cut off again.
_WRAPPER = b"class _yolopatch_piece:"


@dataclass(frozen=True)
class ParserPatch:
    imports: tuple[tuple[str, tuple[str, ...]], ...]  # (dotted module, names) in order
    registration: Registration

    @property
    def needs_multi_output(self) -> bool:
        return bool(self.registration.backbones)


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
    module = _add_imports(module, patch, import_prefix)
    module = register(module, patch.registration, file)
    if patch.needs_multi_output:
        module, _ = teach_forward_loops(module, file)
    return module.bytes


def _add_imports(module: cst.Module, patch: ParserPatch, import_prefix: str) -> cst.Module:
    for dotted, names in patch.imports:
        module = add_from_import(module, dotted, list(names))
    if patch.needs_multi_output:
        module = add_from_import(module, f"{import_prefix}.{SUPPORT_MODULE}", SUPPORT_NAMES)
    return module


def _apply_to_pieces(source: bytes, pieces: Pieces, patch: ParserPatch, file: str, import_prefix: str) -> bytes:
    config = cst.PartialParserConfig(default_newline=_first_newline(source))
    edited: list[tuple[Piece, bytes]] = []

    header = cst.parse_module(_text(source, pieces.header), config=config)
    edited.append((pieces.header, _add_imports(header, patch, import_prefix).bytes))

    model_source = _text(source, pieces.parse_model) if pieces.parse_model else b""
    model = register(cst.parse_module(model_source, config=config), patch.registration, file)
    edited.append((pieces.parse_model, model.bytes))

    if patch.needs_multi_output:
        loops = 0
        for piece in pieces.loops:
            wrapped = _WRAPPER + config.default_newline.encode() if piece.nested else b""
            module, found = edit_forward_loops(cst.parse_module(wrapped + _text(source, piece), config=config))
            loops += found
            code = module.bytes
            assert code.startswith(wrapped), "the wrapper class must come back unchanged"
            edited.append((piece, code[len(wrapped):]))
        if loops == 0:
            raise AnchorMissing(file, MISSING_LOOP)
    return _splice(source, edited)


def _text(source: bytes, piece: Piece) -> bytes:
    return source[piece.start:piece.end]


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
