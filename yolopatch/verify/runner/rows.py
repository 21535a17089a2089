"""Static checks of a model YAML's rows, before anything is built.

Rows are named in the YAML's own numbering: a multi-output backbone at list position 0 fills rows 0 .. L-1
(row k holds its output of stride 2**(k + 1); a level it does not output is an empty row), and the row at
list position p > 0 is row p + L - 1. Checked for every row:

- every `from` index points to an earlier row (or, at row 0, the input image);
- that row holds a tensor (not an empty level of a multi-output backbone);
- the inputs of a Concat (and of a fusion module such as BiFPN) have equal strides;
- a head takes its inputs in increasing stride.

Strides are inferred where the rows tell them: the input has stride 1, a multi-output backbone's levels
have the strides its recipe declares (for the backbone built with default arguments), Conv-like rows
multiply by their stride argument, pooling rows by their stride, Upsample rows divide by their factor, and
known same-resolution blocks keep the stride. Anything else makes the stride unknown, which silences every
check that needs it: a row verify cannot reason about never raises a false alarm. Standard library only.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

# YAML args are [c2, k, s, ...] for these (parse_model puts c1 first): the stride is args[2], default 1
_STRIDE_ARG = {"Conv", "DWConv", "GhostConv", "RepConv", "SCDown", "GhostBottleneck"}
# transposed convolutions upsample by their stride argument (args[2]), default 2
_TRANSPOSED = {"ConvTranspose", "DWConvTranspose2d", "nn.ConvTranspose2d"}
_FIXED_DOWN = {"Focus": 2, "ADown": 2, "AConv": 2, "HGStem": 4}
_POOL = {"nn.MaxPool2d", "nn.AvgPool2d"}
_SAME = {"C1", "C2", "C2f", "C3", "C3k2", "C3x", "C3TR", "C3Ghost", "RepC3", "SPP", "SPPF", "SPPELAN", "C2PSA",
         "C2fPSA", "PSA", "C2fCIB", "A2C2f", "C2fAttn", "Bottleneck", "BottleneckCSP", "RepNCSPELAN4", "ELAN1",
         "AIFI", "HGBlock", "nn.Identity", "nn.BatchNorm2d", "nn.Dropout"}
_KNOWN = _STRIDE_ARG | _TRANSPOSED | set(_FIXED_DOWN) | _POOL | _SAME | {"nn.Upsample", "Concat"}


@dataclass
class Row:
    number: int                  # in the YAML's own numbering
    module: str
    written_from: object         # `from` as the YAML writes it
    sources: tuple = ()          # the rows it reads, absolute; -1 is the input image
    stride: int | None = None    # None: unknown
    empty: bool = False          # a level the multi-output backbone at row 0 does not output

    @property
    def label(self) -> str:
        return f"row {self.number} ({self.module}, from {self.written_from})"


def module_name(module) -> str:
    """A YAML module name as the tables here spell it (torch.nn.X is nn.X)."""
    name = str(module)
    return "nn." + name[len("torch.nn."):] if name.startswith("torch.nn.") else name


def _arg(args, k, default):
    """args[k] as parse_model reads it: YAML strings such as 'None' or '2' are Python literals."""
    value = args[k] if isinstance(args, (list, tuple)) and len(args) > k else default
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    return value


def _positive_int(args, k, default):
    value = _arg(args, k, default)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def output_stride(module: str, args, stride_in, role=None):
    """The stride of a single-input row's output, given its input's; None when it cannot be told."""
    if stride_in is None:
        return None
    if module in _SAME or role in ("same-width", "fusion"):
        return stride_in
    factor = None
    if module in _STRIDE_ARG:
        factor = _positive_int(args, 2, 1)
    elif module in _FIXED_DOWN:
        factor = _FIXED_DOWN[module]
    elif module in _POOL:   # nn.MaxPool2d(kernel, stride=kernel)
        factor = _positive_int(args, 1, _positive_int(args, 0, None))
    if factor:
        return stride_in * factor
    divisor = None
    if module == "nn.Upsample" and _arg(args, 0, None) is None:
        divisor = _positive_int(args, 1, None)   # nn.Upsample(None, scale_factor, mode); a fixed size: unknown
    elif module in _TRANSPOSED:
        divisor = _positive_int(args, 2, 2)
    return stride_in // divisor if divisor and stride_in % divisor == 0 else None


def _backbone_rows(row, declaration) -> list:
    """The rows a multi-output backbone at position 0 fills, with their strides when they are known."""
    strides = sorted(int(s) for s in declaration.strides)
    levels = max(strides).bit_length() - 1
    default_args = not (row[3] if len(row) > 3 else None)   # the declaration holds for default arguments
    return [Row(k, module_name(row[2]), row[0], (-1,), 2 ** (k + 1) if default_args else None,
                empty=default_args and 2 ** (k + 1) not in strides) for k in range(levels)]


def _well_formed(row) -> bool:
    return isinstance(row, (list, tuple)) and len(row) == 4


def analyse(rows: list, declarations: dict, heads) -> tuple:
    """(the Row of every YAML row, problems). `rows`: backbone + head rows as written ([from, n, module,
    args]); `declarations`: module name -> recipe declaration (.role, .strides); `heads`: the names of head
    modules, whose inputs must come in increasing stride."""
    table, problems = [], []
    if not rows or not all(_well_formed(r) for r in rows):
        return table, problems   # the YAML loader and parse_model report malformed rows
    first = module_name(rows[0][2])
    declaration = declarations.get(first)
    multi = getattr(declaration, "role", None) == "backbone" and bool(getattr(declaration, "strides", ()))
    if not multi and declaration is None and first not in _KNOWN:
        return table, problems   # an unknown module at row 0 may be a backbone filling several rows
    table = _backbone_rows(rows[0], declaration) if multi else []
    offset = len(table) - 1 if multi else 0
    for position, (f, _, module, args) in enumerate(rows):
        if multi and position == 0:
            continue
        entry = Row(position + offset, module_name(module), f)
        problems.extend(_sources(entry, f, table))
        table.append(entry)
        if any(problem.startswith(entry.label) for problem in problems):
            continue
        in_strides = [1 if s == -1 else table[s].stride for s in entry.sources]
        role = getattr(declarations.get(entry.module), "role", None)
        if entry.module == "Concat" or role == "fusion":
            problems.extend(_equal_strides(entry, in_strides))
            known = set(in_strides)
            entry.stride = in_strides[0] if len(known) == 1 and None not in known else None
        elif entry.module in heads:
            problems.extend(_increasing(entry, in_strides))
        elif len(entry.sources) == 1:
            entry.stride = output_stride(entry.module, args, in_strides[0], role)
    return table, problems


def _sources(entry: Row, f, table: list) -> list:
    problems, sources = [], []
    for x in (f if isinstance(f, (list, tuple)) else [f]):
        if not isinstance(x, int) or isinstance(x, bool):
            problems.append(f"{entry.label}: `from` holds {x!r}, not a row index")
            continue
        row = entry.number + x if x < 0 else x
        if entry.number == 0 and x == -1:
            sources.append(-1)
        elif not 0 <= row < entry.number:
            before = f"rows 0-{entry.number - 1} come before it" if entry.number else "it is the first row"
            problems.append(f"{entry.label}: `from` index {x} is not an earlier row ({before})")
        elif table[row].empty:
            held = [r for r in table if r.sources == (-1,) and r.module == table[row].module and not r.empty]
            problems.append(f"{entry.label}: row {row} is empty: the backbone {table[row].module} at row 0 has no "
                            f"output at stride {table[row].stride} (its outputs are at strides "
                            f"{', '.join(str(r.stride) for r in held)}: rows {held[0].number}-{held[-1].number})")
        else:
            sources.append(row)
    entry.sources = tuple(sources)
    return problems


def _equal_strides(entry: Row, in_strides: list) -> list:
    known = [(s, st) for s, st in zip(entry.sources, in_strides) if st is not None]
    if len({st for _, st in known}) <= 1:
        return []
    listed = ", ".join(f"row {s} at stride {st}" for s, st in known)
    return [f"{entry.label}: its inputs have different strides ({listed}); {entry.module} joins maps of one "
            "resolution"]


def _increasing(entry: Row, in_strides: list) -> list:
    if None in in_strides or all(b > a for a, b in zip(in_strides, in_strides[1:])):
        return []
    listed = ", ".join(f"row {s} at stride {st}" for s, st in zip(entry.sources, in_strides))
    return [f"{entry.label}: a head takes its inputs in increasing stride, these come as {listed}"]
