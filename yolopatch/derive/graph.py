"""A model config as a graph of rows with stable ids, so rows can be replaced, inserted and rewired
without hand-counting indices; indices are worked out again only when the YAML is written.

Each row knows its inputs by id (`Ref`); a multi-output backbone is one row whose outputs are read by
stride (`Ref(row, level=8)`). Strides and widths are computed from the modules (modules.py), never
stored by hand: every transform ends with `changed()`, and they are worked out again when next read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

from . import modules

INPUT = "input"


class NotDerivable(Exception):
    """This base does not take this recipe; the message says why in one sentence."""


class Ref(NamedTuple):
    row: str
    level: Optional[int] = None   # the stride of the output read from a multi-output backbone


@dataclass
class Row:
    id: str
    section: str                  # "backbone" | "head"
    sources: tuple                # Ref per input
    repeats: int
    module: str
    args: list
    stock: Optional[int] = None   # the stock row it stands for (None: a new row)
    note: str = ""                # what changed, for its comment: "was C2f", "new: 1x1 Conv …"
    listed: bool = False          # `from` is written as a list
    levels: tuple = ()            # multi-output backbone: the strides of its outputs
    level_widths: tuple = ()      # … and their widths
    facts: Optional[modules.Facts] = None  # a recipe module's geometry (stock modules: the table's)

    @property
    def semantics(self) -> Optional[modules.Facts]:
        return self.facts or modules.facts(self.module)

    @property
    def span(self) -> int:
        """How many row indices this row takes (a backbone fills one per stride level up to its deepest)."""
        return int(math.log2(self.levels[-1])) if self.levels else 1

    def copy(self, **changes) -> "Row":
        new = object.__new__(Row)  # a plain field copy: dataclasses.replace is too slow for `bases`
        new.__dict__.update(self.__dict__, **changes)
        return new


@dataclass
class Graph:
    rows: list
    top: dict                     # every top-level key but backbone and head, in file order
    family: str                   # "ultralytics" | "yolov5": how widths scale
    notes: list = field(default_factory=list)    # what a transform changed beyond rows, for the file header
    _ids: int = 0
    _facts: Optional[tuple] = None  # (stride, width, why), computed when first read after a change

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict, family: str) -> "Graph":
        backbone, head = config.get("backbone"), config.get("head")
        if not isinstance(backbone, list) or not isinstance(head, list) or not backbone or not head:
            raise NotDerivable("not a model config: no backbone and head lists")
        rows = []
        for i, raw in enumerate(backbone + head):
            if not (isinstance(raw, list) and len(raw) == 4 and isinstance(raw[2], str) and isinstance(raw[3], list)
                    and isinstance(raw[1], int) and _valid_from(raw[0], i)):
                raise NotDerivable(f"row {i} is not a [from, repeats, module, args] row")
            f, n, module, args = raw
            sources = tuple(Ref(INPUT) if i + x < 0 else Ref(f"s{i + x if x < 0 else x}")
                            for x in ([f] if isinstance(f, int) else f))
            rows.append(Row(id=f"s{i}", section="backbone" if i < len(backbone) else "head", sources=sources,
                            repeats=n, module=module, args=list(args), stock=i,
                            listed=isinstance(f, list)))
        top = {k: v for k, v in config.items() if k not in ("backbone", "head")}
        return cls(rows=rows, top=top, family=family)

    def copy(self) -> "Graph":
        """An independent copy to transform (rows are copied; their argument lists are never edited in place)."""
        self._computed()  # once here rather than once per copy
        return Graph(rows=[r.copy() for r in self.rows], top=dict(self.top), family=self.family,
                     notes=list(self.notes), _ids=self._ids, _facts=self._facts)  # facts are replaced, never edited

    def new_id(self, stem: str) -> str:
        self._ids += 1
        return f"{stem}{self._ids}"

    # -- queries --------------------------------------------------------------------------------------
    def row(self, row_id: str) -> Row:
        return self.rows[self.position(row_id)]

    def position(self, row_id: str) -> int:
        for i, row in enumerate(self.rows):
            if row.id == row_id:
                return i
        raise KeyError(row_id)

    @property
    def head(self) -> Row:
        """The model's output row: the last row (Detect, Segment, Classify, RTDETRDecoder, …)."""
        return self.rows[-1]

    def readers(self, ref: Ref) -> list:
        return [r for r in self.rows if ref in r.sources]

    def insert_after(self, row_id: str, new_rows: list) -> None:
        at = self.position(row_id) + 1
        self.rows[at:at] = new_rows

    def insert_before(self, row_id: str, new_rows: list) -> None:
        at = self.position(row_id)
        self.rows[at:at] = new_rows

    def rewire(self, old: Ref, new: Ref) -> None:
        """Every row reading `old` reads `new` instead."""
        for row in self.rows:
            if old in row.sources:
                row.sources = tuple(new if ref == old else ref for ref in row.sources)

    def section(self, name: str) -> list:
        return [r for r in self.rows if r.section == name]

    def describe(self, ref: Ref) -> str:
        """A row as messages name it: its stock index and module."""
        if ref.row == INPUT:
            return "the input image"
        row = self.row(ref.row)
        return f"{_where(row)} ({row.module})"

    def unsupported(self) -> Optional[str]:
        for row in self.rows:
            found = row.semantics
            if found is not None and found.unsupported:
                return f"{row.module} {'head' if found.head else 'layer'}: {found.unsupported}"
        return None

    # -- facts ----------------------------------------------------------------------------------------
    def changed(self) -> None:
        """Rows changed: strides and widths are worked out again when next read."""
        self._facts = None

    @property
    def stride(self) -> dict:
        """Ref -> output stride (None: a head output, or unknown, see `why`)."""
        return self._computed()[0]

    @property
    def width(self) -> dict:
        """Ref -> width fact: ("scaled", c2), ("fixed", c), ("sum", (…)), or None when unknown."""
        return self._computed()[1]

    @property
    def why(self) -> dict:
        """Ref -> why its stride is unknown."""
        return self._computed()[2]

    def _computed(self) -> tuple:
        if self._facts is None:
            self._facts = self._compute()
        return self._facts

    def _compute(self) -> tuple:
        """Strides and widths of every row, from the modules' own semantics and the rows' inputs."""
        stride, width, why = {Ref(INPUT): 1}, {Ref(INPUT): ("fixed", 3)}, {}
        for row in self.rows:  # in order: each row reads its inputs' entries
            if row.levels:
                for level, channels in zip(row.levels, row.level_widths):
                    stride[Ref(row.id, level)] = level
                    width[Ref(row.id, level)] = ("fixed", channels)
                continue
            ref = Ref(row.id)
            stride[ref], why[ref] = self._stride_of(row, stride, why)
            width[ref] = self._width_of(row, width)
        return stride, width, why

    def _stride_of(self, row: Row, stride: dict, why: dict):
        found = row.semantics
        label = f"{row.module} ({_where(row)})"  # only for messages
        if found is None:
            return None, f"{label} is a module yolopatch has no facts for"
        if found.head:
            return None, "a head output"
        inputs = [stride.get(ref) for ref in row.sources]
        unknown = [ref for ref, s in zip(row.sources, inputs) if s is None]
        if unknown:
            return None, why.get(unknown[0], "an input of unknown stride")
        if row.module == "Concat":
            if len(set(inputs)) != 1:
                return None, f"{label} joins maps of different strides"
            return inputs[0], ""
        if row.module == "CBFuse":
            return inputs[-1], ""
        down, up = found.down(row.args), found.up(row.args)
        if down is None or up is None:
            return None, f"the stride of {label} depends on arguments yolopatch cannot read"
        out = inputs[0] * down
        if out % up:
            return None, f"{label} upsamples below stride 1"
        return out // up, ""

    def _width_of(self, row: Row, width: dict):
        found = row.semantics
        if found is None or found.head:
            return None
        inputs = [width.get(ref) for ref in row.sources]
        if found.width == "scaled":
            c2 = row.args[0] if row.args else None
            return ("scaled", c2) if isinstance(c2, int) and not isinstance(c2, bool) else None
        if found.width == "fixed":
            c2 = found.fixed(row.args)
            return ("fixed", c2) if c2 else None
        if found.width == "sum":
            return ("sum", tuple(inputs)) if all(inputs) else None
        if found.width == "last":
            return inputs[-1]
        return inputs[0]

    # -- indices --------------------------------------------------------------------------------------
    def layout(self) -> dict:
        """Row id -> index of its first row in the written YAML."""
        starts, at = {}, 0
        for row in self.rows:
            starts[row.id] = at
            at += row.span
        return starts

    def index_of(self, ref: Ref, starts: dict) -> int:
        row = self.row(ref.row)
        if ref.level is not None:
            return starts[row.id] + int(math.log2(ref.level)) - 1
        return starts[row.id] + row.span - 1


def _where(row: Row) -> str:
    return "a new row" if row.stock is None else f"stock row {row.stock}"


def _valid_from(f, i: int) -> bool:
    """Every input is an earlier row (row 0 alone reads the image, as -1)."""
    values = [f] if isinstance(f, int) else f
    return isinstance(values, list) and bool(values) and all(
        isinstance(x, int) and not isinstance(x, bool) and (0 <= i + x < i if x < 0 else x < i) or (i == 0 and x == -1)
        for x in values)


def width_value(width, family: str, multiple: float, max_channels: float = float("inf")) -> Optional[int]:
    """A width fact evaluated at one scale (`multiple` = the width multiple), as parse_model computes it."""
    if width is None:
        return None
    kind, value = width
    if kind == "fixed":
        return value
    if kind == "sum":
        parts = [width_value(w, family, multiple, max_channels) for w in value]
        return None if None in parts else sum(parts)
    scaled = (value if family == "yolov5" else min(value, max_channels)) * multiple
    return math.ceil(scaled / 8) * 8


def level_name(stride: Optional[int]) -> str:
    """P3/8 for stride 8, as the targets' own comments name feature levels."""
    if not stride:
        return "stride unknown"
    return f"P{int(math.log2(stride))}/{stride}"
