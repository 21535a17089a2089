"""Turn the head's Concat nodes into weighted fusion (BiFPN).

A fusion node takes inputs of one width and keeps it. Each Concat takes the width argument of the block
that reads it (C2f [512] after a Concat: 512); an input of another width gets a 1x1 Conv with that same
argument, so every input scales identically at every width multiple. Inputs whose width already is that
argument (the same width-scaled argument) are taken as they are. The conv on an upsampled input goes
before the nn.Upsample, where the map is four times smaller.

Bottom-up nodes also take the backbone's lateral input at their stride (the input of the top-down node
at that stride), the same-level skip of EfficientDet's BiFPN.
"""

from __future__ import annotations

from .facts import DeriveFacts
from .graph import Graph, NotDerivable, Ref, Row
from .modules import Facts
from .neck import require_neck

_FUSION = Facts(width="same")


def _upsampled(graph: Graph, ref: Ref) -> bool:
    """The row makes its single input's map larger (nn.Upsample, a transposed conv, …)."""
    if ref.level is not None:
        return False
    row = graph.row(ref.row)
    if len(row.sources) != 1:
        return False
    before, after = graph.stride.get(row.sources[0]), graph.stride.get(ref)
    return before is not None and after is not None and after < before


def _laterals(graph: Graph, concats: list) -> dict:
    """Stride -> the lateral input of the top-down node at that stride."""
    laterals = {}
    for row in concats:
        upsampled = [ref for ref in row.sources if _upsampled(graph, ref)]
        others = [ref for ref in row.sources if ref not in upsampled]
        if len(upsampled) == 1 and len(others) == 1:
            laterals.setdefault(graph.stride[Ref(row.id)], others[0])
    return laterals


def fuse(graph: Graph, facts: DeriveFacts) -> None:
    require_neck(graph)
    concats = [r for r in graph.rows if r.section == "head" and r.module == "Concat"]
    if not concats:
        raise NotDerivable("the neck has no Concat to turn into weighted fusion")
    laterals = _laterals(graph, concats)
    convs: dict = {}  # (input, width) -> the 1x1 Conv already made for it, shared by later nodes
    for row in concats:
        here = Ref(row.id)
        stride = graph.stride[here]
        if stride is None:
            raise NotDerivable(f"{graph.describe(here)} joins maps of unknown stride ({graph.why[here]})")
        width = _fused_width(graph, row)
        inputs = list(row.sources)
        lateral = laterals.get(stride)
        top_down = any(_upsampled(graph, ref) for ref in inputs)
        if lateral is not None and lateral not in inputs and not top_down:
            inputs.append(lateral)
        row.sources = tuple(_matched(graph, ref, row, width, convs) for ref in inputs)
        row.note = "was Concat"
        row.module, row.args, row.listed, row.facts = facts.module, list(facts.args), True, _FUSION
    graph.changed()


def _fused_width(graph: Graph, row: Row) -> int:
    readers = graph.readers(Ref(row.id))
    reader = readers[0] if len(readers) == 1 else None
    found = reader.semantics if reader else None
    if reader is None or found is None or found.width != "scaled" or not reader.args \
            or not isinstance(reader.args[0], int) or isinstance(reader.args[0], bool):
        what = "several rows" if len(readers) > 1 else (graph.describe(Ref(reader.id)) if reader else "nothing")
        raise NotDerivable(f"{graph.describe(Ref(row.id))} feeds {what}, not one width-scaled block whose "
                           "width the fused inputs can take")
    return reader.args[0]


def _matched(graph: Graph, ref: Ref, node: Row, width: int, convs: dict) -> Ref:
    """`ref`, or a 1x1 Conv bringing it to `width`."""
    if graph.width.get(ref) == ("scaled", width):
        return ref
    if (ref, width) in convs:
        return convs[(ref, width)]
    conv = Row(id=graph.new_id("w"), section="head", sources=(ref,), repeats=1, module="Conv", args=[width, 1, 1],
               note=f"new: 1x1 Conv to the fused width {width}")
    target = graph.row(ref.row) if ref.level is None else None
    if target is not None and _upsampled(graph, ref) and graph.readers(ref) == [node] \
            and target.section == "head":
        conv.sources = target.sources  # convolve the small map, then upsample the result
        target.sources = (Ref(conv.id),)
        graph.insert_before(target.id, [conv])
        return ref
    graph.insert_before(node.id, [conv])
    convs[(ref, width)] = Ref(conv.id)
    return Ref(conv.id)
