"""Add a detection level at half the head's finest stride (P2 on a P3-P5 head), the way ultralytics'
yolov8-p2.yaml and YOLOv5's yolov5-p2.yaml extend their PAN heads.

A PAN head reaches its finest level X (say P3) top-down: [lateral conv L] -> upsample U -> Concat C with
the backbone's lateral map at that stride -> block X, then goes bottom-up from X: downsample D -> Concat
B with the level above -> block. The new level repeats that step once more at half the stride, with
every width argument halved: L' (if the head has lateral convs) -> U' -> C' with the backbone's map at
the new stride -> X' (the new finest output), then bottom-up D' -> B' with X (or L') -> X'' (a copy of X,
the finest level's new output); the old D then starts from X''. The head reads X', X'', and its other
levels as before.
"""

from __future__ import annotations

from .facts import DeriveFacts
from .graph import Graph, NotDerivable, Ref, Row, level_name

PAN_HEADS = frozenset({"Detect", "Segment", "Pose", "OBB", "Segment26", "Pose26", "OBB26", "v10Detect"})


def _single_source(graph: Graph, ref: Ref):
    """The row behind `ref` when it is a head row with one input, else None."""
    if ref.level is not None:
        return None
    row = graph.row(ref.row)
    return row if row.section == "head" and len(row.sources) == 1 else None


def _halved(row: Row, graph: Graph) -> list:
    if graph.width.get(Ref(row.id), (None,))[0] != "scaled":
        raise NotDerivable(f"{graph.describe(Ref(row.id))} has no width argument to halve for the new level")
    if row.semantics.width_rule:
        raise NotDerivable(f"{graph.describe(Ref(row.id))} cannot be copied at half width for the new level: "
                           f"{row.semantics.width_rule}")
    return [row.args[0] // 2, *row.args[1:]]


def _backbone_map(graph: Graph, stride: int) -> Ref:
    """The backbone's map at `stride`: a multi-output backbone's output, or the last stock row at it."""
    for row in graph.section("backbone"):
        if row.levels:
            if stride in row.levels:
                return Ref(row.id, stride)
    found = [r for r in graph.section("backbone") if not r.levels and graph.stride.get(Ref(r.id)) == stride]
    if not found:
        raise NotDerivable(f"the backbone has no {level_name(stride)} output for the new level")
    return Ref(found[-1].id)


def add_p2(graph: Graph, facts: DeriveFacts) -> None:
    head = graph.head
    if head.module not in PAN_HEADS:
        raise NotDerivable(f"{head.module} is not a PAN detection head yolopatch can extend by a level")
    strides = [graph.stride.get(ref) for ref in head.sources]
    if None in strides:
        raise NotDerivable("the head reads a map of unknown stride")
    finest = min(strides)
    if finest <= 4:
        raise NotDerivable(f"the head already reads {level_name(finest)}")
    x_ref = head.sources[strides.index(finest)]
    x = _single_source(graph, x_ref)
    concat = graph.row(x.sources[0].row) if x and x.sources[0].level is None else None
    if concat is None or concat.module != "Concat" or len(concat.sources) != 2:
        raise NotDerivable(f"not a PAN head: its {level_name(finest)} output does not come from a two-input Concat")
    up_ref = next((ref for ref in concat.sources if _upsamples(graph, ref)), None)
    if up_ref is None:
        raise NotDerivable(f"not a PAN head: nothing is upsampled into its {level_name(finest)} level")
    lateral_ref = next(ref for ref in concat.sources if ref != up_ref)
    up = graph.row(up_ref.row)
    above = _single_source(graph, up.sources[0])   # what U upsamples: the block above, or a lateral conv after it
    lateral_conv = above if above is not None and not _after_concat(graph, above) \
        and _after_concat(graph, _single_source(graph, above.sources[0])) else None
    down = next((r for r in graph.readers(x_ref) if len(r.sources) == 1
                 and graph.stride.get(Ref(r.id)) == 2 * finest), None)
    join = next((r for r in graph.readers(Ref(down.id)) if r.module == "Concat"), None) if down else None
    if join is None or len(join.sources) != 2:
        raise NotDerivable(f"not a PAN head: no bottom-up path leaves its {level_name(finest)} level")
    above_ref = next(ref for ref in join.sources if ref != Ref(down.id))
    if lateral_conv is not None and above_ref == Ref(lateral_conv.id):
        mirror = "lateral"
    elif above_ref == up.sources[0] or (lateral_conv is not None and above_ref == lateral_conv.sources[0]):
        mirror = "block"
    else:
        raise NotDerivable("not a PAN head: its bottom-up path joins a row yolopatch cannot match")

    new_stride = finest // 2
    rows = []

    def add(template: Row, sources: tuple, args: list = None) -> Ref:
        row = template.copy(id=graph.new_id("p"), sources=sources, args=list(template.args) if args is None else args,
                            stock=None, note=f"new: {level_name(new_stride)} level, like {graph.describe(Ref(template.id))}")
        rows.append(row)
        return Ref(row.id)

    lateral_new = add(lateral_conv, (x_ref,), _halved(lateral_conv, graph)) if lateral_conv else None
    up_new = add(up, (lateral_new or x_ref,))
    side = _backbone_map(graph, new_stride)
    if lateral_ref.level is None and graph.row(lateral_ref.row).section == "head":
        projection = _single_source(graph, lateral_ref)  # a head-side projection of the backbone map (input_proj)
        if projection is None:
            raise NotDerivable("not a PAN head: its lateral input is neither a backbone map nor a projection of one")
        side = add(projection, (side,))
    concat_new = add(concat, tuple(up_new if ref == up_ref else side for ref in concat.sources))
    finest_new = add(x, (concat_new,), _halved(x, graph))
    down_new = add(down, (finest_new,), _halved(down, graph))
    other = lateral_new if mirror == "lateral" else x_ref
    join_new = add(join, tuple(down_new if ref == Ref(down.id) else other for ref in join.sources))
    finest_again = add(x, (join_new,))
    graph.insert_after(x.id, rows)
    down.sources = (finest_again,)
    sources = []
    for ref in head.sources:
        sources += [finest_new, finest_again] if ref == x_ref else [ref]
    head.sources = tuple(sources)
    _anchors_for(graph, len(sources))
    graph.changed()


def _after_concat(graph: Graph, row) -> bool:
    """A block fed by a Concat (a PAN level's block)."""
    return row is not None and row.sources[0].level is None and graph.row(row.sources[0].row).module == "Concat"


def _upsamples(graph: Graph, ref: Ref) -> bool:
    row = _single_source(graph, ref)
    if row is None:
        return False
    before, after = graph.stride.get(row.sources[0]), graph.stride.get(ref)
    return before is not None and after is not None and after < before


def _anchors_for(graph: Graph, levels: int) -> None:
    """YOLOv5 lists anchors per level; a new level has none, so the count per level is kept and AutoAnchor
    computes them before training, as YOLOv5's own yolov5-p2.yaml does."""
    anchors = graph.top.get("anchors")
    if isinstance(anchors, list) and anchors and isinstance(anchors[0], list) and len(anchors) != levels:
        graph.top["anchors"] = len(anchors[0]) // 2
        graph.notes.append("anchors: the per-level lists became a count per level (AutoAnchor computes them), "
                           "as the new level has none")
