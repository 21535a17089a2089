"""Insert a same-width block (attention such as SE or CBAM) after each input of the model's output row.

The block reads the input row and every row that read that input reads the block instead, so the rest
of the neck continues from the attended map, as the tutorials do it.
"""

from __future__ import annotations

from .facts import DeriveFacts
from .graph import INPUT, Graph, NotDerivable, Ref, Row
from .modules import Facts

_SAME_WIDTH = Facts(width="same")


def insert_after_head_inputs(graph: Graph, facts: DeriveFacts) -> None:
    for ref in dict.fromkeys(graph.head.sources):
        if ref.row == INPUT:
            raise NotDerivable("the output row reads the input image directly")
        source = graph.row(ref.row)
        block = Row(id=graph.new_id("a"), section="backbone" if source.section == "backbone" else "head",
                    sources=(ref,), repeats=1, module=facts.module, args=list(facts.args),
                    note=f"new: {facts.module} after {graph.describe(ref)}",
                    facts=_SAME_WIDTH)
        graph.rewire(ref, Ref(block.id))
        graph.insert_after(source.id, [block])
    graph.changed()
