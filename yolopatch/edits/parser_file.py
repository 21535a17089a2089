"""All edits to the target's parser file (yolo.py / tasks.py), applied to one parsed tree."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from ..errors import RefusedError
from .imports import add_from_import
from .loops import teach_forward_loops
from .parse_model import Registration, register

SUPPORT_MODULE = "yolopatch_support"
SUPPORT_NAMES = ["claim_backbone_rows", "spread_backbone_outputs"]


@dataclass(frozen=True)
class ParserPatch:
    imports: tuple[tuple[str, tuple[str, ...]], ...]  # (dotted module, names) in order
    registration: Registration

    @property
    def needs_multi_output(self) -> bool:
        return bool(self.registration.backbones)


def parse(source: bytes, file: str) -> cst.Module:
    try:
        source.decode("utf-8")  # every supported release ships UTF-8 sources
    except UnicodeDecodeError:
        raise RefusedError(f"{file} is not valid UTF-8 text; nothing was written") from None
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise RefusedError(f"{file} does not parse as Python ({str(exc).splitlines()[0]}); nothing was written") from None
    except UnicodeDecodeError:
        raise RefusedError(f"{file} is not valid UTF-8 text; nothing was written") from None


def apply_patch(source: bytes, patch: ParserPatch, file: str, import_prefix: str) -> bytes:
    module = parse(source, file)
    for dotted, names in patch.imports:
        module = add_from_import(module, dotted, list(names))
    if patch.needs_multi_output:
        module = add_from_import(module, f"{import_prefix}.{SUPPORT_MODULE}", SUPPORT_NAMES)
    module = register(module, patch.registration, file)
    if patch.needs_multi_output:
        module, _ = teach_forward_loops(module, file)
    return module.bytes
