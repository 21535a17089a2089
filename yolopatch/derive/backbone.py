"""Put a recipe's multi-output backbone in place of a stock config's backbone rows.

The backbone goes to row 0 in the tutorial convention (README "Multi-output backbones"): it fills one
row per stride level, 2 .. its deepest stride. Context blocks at the end of the stock backbone that keep
its deepest stride (SPPF, SPP, SPPELAN, C2PSA, PSA, …) and rows beyond it (the P6 levels of -p6 configs)
stay, fed by the new deepest output. Every other row that read a replaced row reads the new backbone's
output of the same stride.
"""

from __future__ import annotations

from .facts import DeriveFacts
from .graph import INPUT, Graph, NotDerivable, Ref, Row, level_name
from .modules import GLOBAL_HEADS

BACKBONE_ID = "backbone"


def kept_tail(graph: Graph, deepest: int) -> int:
    """Index (within the backbone section) of the first stock row kept after the new backbone."""
    rows = graph.section("backbone")
    keep_from = len(rows)
    for i in range(len(rows) - 1, -1, -1):
        stride, found = graph.stride[Ref(rows[i].id)], rows[i].semantics
        if stride is not None and (stride > deepest or (stride == deepest and found is not None and found.keeps_context)):
            keep_from = i
        else:
            break
    return keep_from


def replace_backbone(graph: Graph, facts: DeriveFacts) -> None:
    deepest = facts.strides[-1]
    keep_from = kept_tail(graph, deepest)
    replaced = graph.rows[:keep_from]
    if not replaced:
        raise NotDerivable(f"every backbone row is beyond stride {deepest}; there is nothing to replace")
    replaced_ids = {r.id for r in replaced}
    new = Row(id=BACKBONE_ID, section="backbone", sources=(Ref(INPUT),), repeats=1, module=facts.module,
              args=list(facts.args), note=f"replaces stock rows 0-{keep_from - 1}" if keep_from > 1 else
              "replaces stock row 0", levels=facts.strides, level_widths=facts.channels)
    taken: dict = {}  # stride -> the stock row read at that stride
    for row in graph.rows[keep_from:]:
        sources = []
        for ref in row.sources:
            if ref.row in replaced_ids:
                ref = Ref(BACKBONE_ID, _level(graph, row, ref, replaced[-1].id, facts, taken))
            sources.append(ref)
        row.sources = tuple(sources)
    graph.rows = [new, *graph.rows[keep_from:]]
    graph.changed()
    _match_residual_widths(graph)


def _match_residual_widths(graph: Graph) -> None:
    """A kept residual block (C2PSA, PSA: input width = output width) that now reads the new backbone gets a
    1x1 Conv to its width first; in the stock config the SPPF before it, or the stock backbone, had it."""
    for row in list(graph.rows):
        found = row.semantics
        if found is None or not found.same_width or not row.args or len(row.sources) != 1:
            continue
        width = ("scaled", row.args[0])
        if graph.width.get(row.sources[0]) == width:
            continue
        conv = Row(id=graph.new_id("w"), section=row.section, sources=row.sources, repeats=1, module="Conv",
                   args=[row.args[0], 1, 1], note=f"new: 1x1 Conv to the width {row.module} keeps")
        row.sources = (Ref(conv.id),)
        graph.insert_before(row.id, [conv])
    graph.changed()


def _level(graph: Graph, reader: Row, ref: Ref, last_id: str, facts: DeriveFacts, taken: dict) -> int:
    stride = graph.stride[ref]
    if stride is None:
        if reader.module in GLOBAL_HEADS and ref.row == last_id:
            stride = facts.strides[-1]  # a classifier pools the whole map: it takes the deepest output
        else:
            raise NotDerivable(f"{graph.describe(Ref(reader.id))} reads {graph.describe(ref)}, whose stride "
                               f"yolopatch cannot work out: {graph.why[ref]}")
    if stride not in facts.strides:
        raise NotDerivable(f"{graph.describe(Ref(reader.id))} reads {graph.describe(ref)} at {level_name(stride)}; "
                           f"the backbone has outputs at strides {', '.join(map(str, facts.strides))} only")
    first = taken.setdefault(stride, ref)
    if first != ref:
        raise NotDerivable(f"rows after the backbone read two backbone rows at {level_name(stride)} "
                           f"({graph.describe(first)} and {graph.describe(ref)}); a backbone has one output per stride")
    return stride
