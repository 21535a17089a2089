"""Apply recipes' derivation facts to a base, in a fixed order, and choose which combinations to write."""

from __future__ import annotations

from itertools import product

from .backbone import replace_backbone
from .facts import KINDS
from .fusion import fuse
from .graph import Graph, NotDerivable
from .insert import insert_after_head_inputs
from .neck import replace_upsample, substitute
from .p2 import add_p2

TRANSFORMS = {"backbone": replace_backbone, "p2": add_p2, "neck": substitute, "upsample": replace_upsample,
              "fusion": fuse, "insert": insert_after_head_inputs}


def in_order(chosen: list) -> list:
    """(recipe name, facts) pairs in the order their transforms run, which is also their order in names."""
    return sorted(chosen, key=lambda c: (KINDS.index(c[1].kind) if c[1].kind in KINDS else -1, c[0]))


def derive(base: Graph, chosen: list) -> Graph:
    """The base with each chosen recipe's transform applied; raises NotDerivable with the reason."""
    reason = base.unsupported()
    if reason:
        raise NotDerivable(reason)
    graph = base.copy()
    for _, facts in in_order(chosen):
        if facts.kind not in TRANSFORMS:
            raise NotDerivable(facts.reason)
        TRANSFORMS[facts.kind](graph, facts)
    return graph


def combinations(chosen: list) -> list:
    """What to write for several recipes: each recipe alone, and each way of taking one recipe of every
    kind present (at most one backbone, one fusion, …) when there are two kinds or more."""
    derivable = [c for c in in_order(chosen) if c[1].kind in TRANSFORMS]
    singles = [[c] for c in derivable]
    by_kind = {}
    for item in derivable:
        by_kind.setdefault(item[1].kind, []).append(item)
    if len(by_kind) < 2:
        return singles
    return singles + [in_order(list(combo)) for combo in product(*by_kind.values())]
