"""The `[derive]` table of recipe.toml: what a recipe does to a stock model config (recipes/README.md).

Exactly one of:
  backbone = { module = "MobileNetV4ConvSmall", args = [] }     replace the backbone (role backbone)
  [[derive.substitute]] from = [...], to = "VoVGSCSP",          swap neck blocks (role block); keep = the
      keep = [0, 1], extra = [],                                stock arguments kept, extra = appended;
      within = "neck", stride = 2                               within "model": backbone rows after the
                                                                stem too; stride: only rows that change
                                                                the stride by this factor
  fusion = { module = "BiFPN", args = [] }                      Concat -> weighted fusion (role fusion)
  insert = { module = "CBAM", args = [] }                       after each head input (role same-width)
  upsample = { module = "DySample", args = [2], scale = 2 }     replaces nn.Upsample (role upsample)
  p2 = true                                                     adds a stride-4 detection level
  reason = "…"                                                  the recipe does not derive, and why
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

# The order transforms run in when recipes combine, which is also the order of their names in a file name.
KINDS = ("backbone", "p2", "neck", "upsample", "fusion", "insert")
_TABLE_KEYS = {"backbone": "backbone", "substitute": "neck", "fusion": "fusion", "insert": "insert",
               "upsample": "upsample", "p2": "p2", "reason": "none"}
WITHIN = ("neck", "model")  # where [[derive.substitute]] swaps rows
_ROLE = {"backbone": "backbone", "fusion": "fusion", "insert": "same-width", "upsample": "upsample"}


class SchemaError(ValueError):
    """A [derive] table that does not follow the schema."""


@dataclass(frozen=True)
class Substitution:
    sources: tuple            # stock module names replaced
    module: str               # the recipe's block
    keep: tuple               # indices of the stock YAML arguments kept, in order
    extra: tuple = ()         # arguments appended after them
    repeats: bool = False     # the block takes a repeat count (keeps the row's repeats)
    within: str = "neck"      # "neck", or "model": every row after the stem, the backbone's too
    stride: int = 0           # only rows whose stride grows by this factor (0: any row)


@dataclass(frozen=True)
class DeriveFacts:
    kind: str                 # one of KINDS, or "none"
    module: str = ""
    args: tuple = field(default=(), compare=False)
    strides: tuple = ()       # backbone: declared output strides, channels: their widths
    channels: tuple = ()
    substitutions: tuple = ()
    scale: int = 0            # upsample: the scale factor it replaces
    reason: str = ""          # kind "none": why the recipe does not derive

    @cached_property
    def signature(self) -> str:
        """Equal for facts that derive to the same YAML."""
        return json.dumps([self.shape, self.module, list(self.args), self.channels,
                           [[s.module, list(s.extra), s.repeats] for s in self.substitutions]])

    @cached_property
    def shape(self) -> str:
        """Equal for facts that derive onto the same bases (names and arguments of modules aside)."""
        return json.dumps([self.kind, self.strides, self.scale, self.reason,
                           [[list(s.sources), list(s.keep), s.within, s.stride] for s in self.substitutions]])


NOT_DECLARED = DeriveFacts(kind="none", reason="the recipe declares no [derive] table")


def parse(raw, modules) -> DeriveFacts:
    """`raw`: the recipe's [derive] table (or None); `modules`: its parsed [[modules]] entries."""
    if raw is None:
        return NOT_DECLARED
    if not isinstance(raw, dict):
        raise SchemaError("[derive] must be a table")
    present = [key for key in raw if key in _TABLE_KEYS]
    unknown = [key for key in raw if key not in _TABLE_KEYS]
    if unknown:
        raise SchemaError(f"[derive] has unknown key(s) {', '.join(unknown)} (known: {', '.join(_TABLE_KEYS)})")
    if len(present) != 1:
        raise SchemaError(f"[derive] must hold exactly one of {', '.join(_TABLE_KEYS)}")
    key = present[0]
    value = raw[key]
    by_name = {m.name: m for m in modules}
    if key == "reason":
        if not isinstance(value, str) or not value.strip():
            raise SchemaError("[derive] reason must be a non-empty string")
        return DeriveFacts(kind="none", reason=value.strip())
    if key == "p2":
        if value is not True:
            raise SchemaError("[derive] p2 must be true")
        return DeriveFacts(kind="p2")
    if key == "substitute":
        return DeriveFacts(kind="neck", substitutions=tuple(_substitution(s, by_name) for s in _tables(value, key)))
    if not isinstance(value, dict):
        raise SchemaError(f"[derive] {key} must be a table")
    module = _module(value.get("module"), by_name, _ROLE[key], key)
    args = value.get("args", [])
    if not isinstance(args, list):
        raise SchemaError(f"[derive] {key}.args must be a list")
    extra_keys = set(value) - {"module", "args"} - ({"scale"} if key == "upsample" else set())
    if extra_keys:
        raise SchemaError(f"[derive] {key} has unknown key(s) {', '.join(sorted(extra_keys))}")
    if key == "backbone":
        return DeriveFacts(kind="backbone", module=module.name, args=tuple(args), strides=tuple(module.strides),
                           channels=tuple(module.channels))
    if key == "upsample":
        scale = value.get("scale")
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 2:
            raise SchemaError("[derive] upsample.scale must be an integer of at least 2")
        return DeriveFacts(kind="upsample", module=module.name, args=tuple(args), scale=scale)
    return DeriveFacts(kind=_TABLE_KEYS[key], module=module.name, args=tuple(args))


def _tables(value, key: str) -> list:
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise SchemaError(f"[[derive.{key}]] must be one or more tables")
    return value


def _module(name, by_name: dict, role: str, key: str):
    if not isinstance(name, str) or name not in by_name:
        raise SchemaError(f"[derive] {key} names module {name!r}, which is not one of the recipe's [[modules]]")
    if by_name[name].role != role:
        raise SchemaError(f"[derive] {key} needs a module of role {role}; {name} is {by_name[name].role}")
    return by_name[name]


def _substitution(raw: dict, by_name: dict) -> Substitution:
    unknown = set(raw) - {"from", "to", "keep", "extra", "within", "stride"}
    if unknown:
        raise SchemaError(f"[[derive.substitute]] has unknown key(s) {', '.join(sorted(unknown))}")
    sources = raw.get("from")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
        raise SchemaError("[[derive.substitute]] from must be a list of module names")
    module = _module(raw.get("to"), by_name, "block", "substitute.to")
    keep = raw.get("keep", [0])
    if not isinstance(keep, list) or not keep or keep[0] != 0 or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in keep):
        raise SchemaError("[[derive.substitute]] keep must list argument indices starting with 0 (the width)")
    extra = raw.get("extra", [])
    if not isinstance(extra, list):
        raise SchemaError("[[derive.substitute]] extra must be a list")
    within = raw.get("within", "neck")
    if within not in WITHIN:
        raise SchemaError(f"[[derive.substitute]] within must be one of {', '.join(WITHIN)}")
    stride = raw.get("stride", 0)
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 0 or stride & (stride - 1):
        raise SchemaError("[[derive.substitute]] stride must be a power of two (the stride factor of the rows swapped)")
    return Substitution(sources=tuple(sources), module=module.name, keep=tuple(keep), extra=tuple(extra),
                        repeats=bool(module.repeats), within=within, stride=stride)
