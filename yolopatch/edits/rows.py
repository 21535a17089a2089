"""RowNumbering: YAML rows after a multi-output backbone keep the numbers the YAML gives them.

A backbone is one YAML row that fills one row per output stride (P1..P5). Three statements in parse_model:
the counter before the layer loop, the shift of `i` at the top of the loop, and the claim after
`ch.append(c2)`: `claim_backbone_rows` (the support module) gives each row the backbone fills after its own
a placeholder layer and its channels, and says how many rows that was.
"""

from __future__ import annotations

import libcst as cst

from .anchors import matches_code
from .base import ConflictExample, Edit, Example, Verdict, applied, conflict, missing, pending
from .parse_model import Missing, ParseModel
from .samples import PARSE_MODEL

ROW_COUNTER = "backbone_extra_rows = 0  # rows filled by multi-output backbones beyond their own\n"
ROW_SHIFT = "i += backbone_extra_rows  # later rows are numbered after every backbone output row\n"
ROW_CLAIM = "backbone_extra_rows += claim_backbone_rows(m_, ch, layers, args)\n"
APPEND_ANCHOR = "`ch.append(c2)` at the end of the layer loop in parse_model()"


def _code(statement: str) -> str:
    return statement.split("#")[0]


class RowNumbering(Edit):
    id = "row-numbering"
    scope = "parse_model"

    def _state(self, view: ParseModel) -> tuple[bool, bool, bool, int]:
        """Which of counter, shift, claim are there, and where `ch.append(c2)` is in the loop body."""
        body = view.loop_body
        append_at = next((i for i, s in enumerate(body) if matches_code(s, "ch.append(c2)")), None)
        if append_at is None:
            raise Missing(APPEND_ANCHOR)
        counter = view.loop_at > 0 and matches_code(view.statements[view.loop_at - 1], _code(ROW_COUNTER))
        shift = matches_code(body[0], _code(ROW_SHIFT))
        claim = append_at + 1 < len(body) and matches_code(body[append_at + 1], ROW_CLAIM)
        return counter, shift, claim, append_at

    def classify(self, module: cst.Module) -> Verdict:
        try:
            present = self._state(ParseModel.find(module))[:3]
        except Missing as exc:
            return missing(str(exc))
        if all(present):
            return applied()
        if any(present):
            have = [what for what, there in zip(("row counter", "row shift", "row claim"), present) if there]
            return conflict(f"parse_model() holds part of a backbone row numbering ({', '.join(have)}) but not "
                            "all of it")
        return pending()

    def transform(self, module: cst.Module) -> cst.Module:
        view = ParseModel.find(module)
        *_, append_at = self._state(view)
        body = view.loop_body
        body.insert(append_at + 1, view.parse(ROW_CLAIM))
        body.insert(0, view.parse(ROW_SHIFT))
        view.set_loop_body(body)
        view.statements.insert(view.loop_at, view.parse(ROW_COUNTER))
        view.loop_at += 1
        return view.rebuilt()

    @classmethod
    def for_patch(cls, patch, import_prefix: str) -> list:
        return [cls()] if patch.needs_multi_output else []

    @classmethod
    def examples(cls) -> list:
        after = PARSE_MODEL.replace(
            "    for i,", "    backbone_extra_rows = 0  # rows filled by multi-output backbones beyond their own\n    for i,",
        ).replace(
            "  # rows\n", "  # rows\n        i += backbone_extra_rows  # later rows are numbered after every backbone "
                          "output row\n",
        ).replace(
            "        ch.append(c2)\n", "        ch.append(c2)\n        backbone_extra_rows += claim_backbone_rows(m_, "
                                      "ch, layers, args)\n")
        return [
            Example("counter, shift and claim", cls(), PARSE_MODEL, after),
            ConflictExample("a counter without its claim", cls(),
                            after.replace("        backbone_extra_rows += claim_backbone_rows(m_, ch, layers, args)\n", ""),
                            "part of a backbone row numbering (row counter, row shift)"),
            ConflictExample("no `ch.append(c2)`", cls(), PARSE_MODEL.replace("ch.append(c2)", "ch += [c2]"),
                            "ch.append(c2)"),
        ]
