"""Swap modules inside the neck (the head section but its output row): the blocks a recipe substitutes
(Slim-neck: C2f / C3k2 / C3 / … -> VoVGSCSP, the neck's convolutions -> GSConv) and the neck's
nn.Upsample rows (an upsampler such as DySample). A substitution `within = "model"` also swaps the
backbone's rows after the stem (RFAConv, DCNv2 in place of every stride-2 Conv). A swapped row keeps its
place, its inputs and its geometry: the stride change and the width of the row it stands for."""

from __future__ import annotations

from .facts import DeriveFacts
from .graph import INPUT, Graph, NotDerivable, Ref
from .modules import Facts

UPSAMPLE = ("nn.Upsample", "torch.nn.Upsample")


def neck_rows(graph: Graph) -> list:
    return [r for r in graph.rows if r.section == "head" and r is not graph.head]


def require_neck(graph: Graph) -> None:
    if not neck_rows(graph):
        raise NotDerivable(f"the model has no neck: its {graph.head.module} row reads the backbone directly")


def body_rows(graph: Graph) -> list:
    """The backbone's single-output rows after the stem (the first row, which reads the image), then the neck."""
    backbone = [r for r in graph.section("backbone") if not r.levels and Ref(INPUT) not in r.sources]
    return backbone + neck_rows(graph)


def _rule(facts: DeriveFacts, row, in_neck: bool):
    """The first substitution that swaps this row, or None."""
    stock = row.semantics
    for rule in facts.substitutions:
        if row.module not in rule.sources or (rule.within == "neck" and not in_neck):
            continue
        if rule.stride and (stock is None or stock.down(row.args) != rule.stride):
            continue
        return rule
    return None


def substitute(graph: Graph, facts: DeriveFacts) -> None:
    whole_model = any(s.within == "model" for s in facts.substitutions)
    if not whole_model:
        require_neck(graph)
    swapped = 0
    neck = {r.id for r in neck_rows(graph)}
    candidates = body_rows(graph) if whole_model else neck_rows(graph)
    for row in candidates:
        rule = _rule(facts, row, row.id in neck)
        stock = row.semantics
        if rule is None or stock is None or not row.args or not isinstance(row.args[0], int):
            continue  # not swapped, or a row whose width yolopatch cannot carry over
        kept = []
        for index in rule.keep:  # the kept arguments the row has, in order (trailing ones may be absent)
            if index >= len(row.args):
                break
            kept.append(row.args[index])
        down, up = stock.down(row.args), stock.up(row.args)
        if down is None or up is None:
            continue
        row.facts = Facts(down=lambda a, d=down: d, up=lambda a, u=up: u, width="scaled", repeats=rule.repeats)
        # repeats: the new block takes them itself, or the stock row built n copies in a row (kept as they are);
        # a stock block that took its repeats inside becomes one new block
        row.repeats = row.repeats if rule.repeats or not stock.repeats else 1
        row.note = f"was {row.module}"
        row.module, row.args = rule.module, kept + list(rule.extra)
        swapped += 1
    if not swapped:
        names = list(dict.fromkeys(name for s in facts.substitutions for name in s.sources))
        shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
        where = "the model" if whole_model else "the neck"
        strided = " with a stride of their own" if all(s.stride for s in facts.substitutions) else ""
        raise NotDerivable(f"{where} has none of the modules the recipe replaces ({shown}){strided}")
    graph.changed()


def replace_upsample(graph: Graph, facts: DeriveFacts) -> None:
    require_neck(graph)
    swapped = 0
    for row in neck_rows(graph):
        stock = row.semantics
        if row.module not in UPSAMPLE or stock is None or stock.up(row.args) != facts.scale:
            continue
        row.facts = Facts(up=lambda a, u=facts.scale: u)
        row.note = f"was {row.module}"
        row.module, row.args = facts.module, list(facts.args)
        swapped += 1
    if not swapped:
        raise NotDerivable(f"the neck has no nn.Upsample with scale factor {facts.scale} to replace")
    graph.changed()

