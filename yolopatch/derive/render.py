"""Write a derived row graph as a model YAML (jinja2 template templates/derived/model.yaml.j2), in the
base's own dialect: its top-level keys as they were (`scales:` or depth/width multiples, `anchors:`,
`kpt_shape`, `end2end`, …), block lists of flow rows, indices worked out from the graph."""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache

from .. import resources
from .graph import INPUT, Graph, Ref, level_name

_PLAIN_SAFE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


def key(value) -> str:
    """A mapping key: plain when it reads back as the same string."""
    if isinstance(value, str) and _PLAIN_SAFE.match(value) and value.lower() not in _YAML_WORDS - {"y", "n"}:
        return value
    return flow(value)


def flow(value, bare=frozenset()) -> str:
    """A value in YAML flow syntax that reads back (yaml.safe_load) as the same value. Strings in `bare`
    (the names parse_model resolves: None, nc, anchors, kpt_shape, …) are written unquoted like the stock
    configs write them; other strings are quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return value if value in bare and _PLAIN_SAFE.match(value) else json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v, bare) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{flow(k, bare)}: {flow(v, bare)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} into a model YAML")


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:  # YAML 1.1 reads 1e-05 as a string
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent if exponent[0] in '+-' else '+' + exponent}"
    elif "e" in text and text.split("e")[1][0] not in "+-":
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e+{exponent}"
    return text


@lru_cache(maxsize=1)
def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resources.templates_dir())),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["flow"] = flow
    env.filters["key"] = key
    return env.get_template("derived/model.yaml.j2")


def rows_for_yaml(graph: Graph) -> tuple:
    """(backbone rows, head rows) as the template writes them."""
    starts = graph.layout()
    backbone, head = [], []
    for row in graph.rows:
        start = starts[row.id]
        sources = [-1 if ref.row == INPUT else graph.index_of(ref, starts) for ref in row.sources]
        if sources[0] == start - 1:  # the previous row is -1, as the stock configs write it
            sources[0] = -1
        item = {"frm": sources if row.listed or len(sources) > 1 else sources[0], "n": row.repeats,
                "module": row.module, "args": row.args, "comment": _comment(graph, row, start)}
        (backbone if row.section == "backbone" else head).append(item)
    return backbone, head


def _comment(graph: Graph, row, start: int) -> str:
    if row.levels:
        levels = ", ".join(level_name(s) for s in row.levels)
        return f"{start}-{start + row.span - 1} {levels}: {row.note}"
    stride = graph.stride.get(Ref(row.id))
    if stride is None and row is graph.head:
        where = f"{row.module}({', '.join(level_name(graph.stride.get(ref)) for ref in row.sources)})"
    else:
        where = level_name(stride)
    origin = f"stock row {row.stock}" if row.stock is not None else ""
    return ", ".join(part for part in (f"{start} {where}", origin, row.note) if part)


def render(graph: Graph, name: str, base: str, family: str, task: str, recipes: list) -> bytes:
    backbone, head = rows_for_yaml(graph)
    notes = list(graph.notes)
    first = graph.rows[0]
    if first.levels:
        notes.insert(0, f"{first.module} sits at row 0 and fills rows 0-{first.span - 1} with its outputs at strides "
                        f"{', '.join(map(str, first.levels))}; the next row is {first.span}.")
    bare = frozenset({"None", *graph.top})
    text = _template().render(name=name, base=base, family=family, task=task, recipes=recipes, notes=notes,
                              top=list(graph.top.items()), backbone=backbone, head=head, bare=bare)
    return text.encode("utf-8")
