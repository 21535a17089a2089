"""RoleBranch: an `elif m in {...}:` in parse_model's if/elif chain for the modules of a role.

The branch goes just before the final `else: c2 = ch[f]`; its body is the role's template (roles.py).
Roles with the same body share one branch. A later patch with more names extends the branch's set.
"""

from __future__ import annotations

import libcst as cst

from .. import roles
from .anchors import code_of, single_statement
from .base import ConflictExample, Edit, Example, Verdict, applied, conflict, missing, pending
from .parse_model import Missing, ParseModel, extend_collection, membership
from .samples import PARSE_MODEL

_ELSE = "        else:\n            c2 = ch[f]\n"


def _body_code(node: cst.If) -> list:
    return [code_of(single_statement(s)) if single_statement(s) else None for s in node.body.body]


class RoleBranch(Edit):
    id = "role-branch"
    scope = "parse_model"

    def __init__(self, template: str, names):
        self.template, self.names = template, tuple(names)

    def _new_branch(self, view: ParseModel) -> cst.If:
        return view.parse(self.template.format(names=", ".join(self.names)))

    def _existing(self, view: ParseModel, wanted: list) -> cst.If | None:
        node = view.chain()
        while isinstance(node, cst.If):
            if _body_code(node) == wanted:
                return node
            node = node.orelse
        return None

    def classify(self, module: cst.Module) -> Verdict:
        try:
            view = ParseModel.find(module)
            view.chain()
        except Missing as exc:
            return missing(str(exc))
        existing = self._existing(view, _body_code(self._new_branch(view)))
        if existing is not None and (membership(existing.test) is None
                                     or not isinstance(membership(existing.test).comparator, cst.Set)):
            return conflict(f"the yolopatch branch `if {code_of(existing.test)}:` in parse_model() is not "
                            "`m in {...}`")
        have = view.tested_names(existing.test) if existing is not None else set()
        if set(self.names) <= have:
            return applied()
        earlier = view.handled_before([n for n in self.names if n not in have], stop=existing)
        if earlier:
            return conflict(f"{earlier[0]} is already handled by `if {earlier[1]}:` in parse_model()")
        return pending()

    def transform(self, module: cst.Module) -> cst.Module:
        view = ParseModel.find(module)
        new_branch = self._new_branch(view)
        existing = self._existing(view, _body_code(new_branch))

        def rebuild(node):
            if isinstance(node, cst.If):
                if node is existing:
                    target = membership(node.test)
                    extended = extend_collection(target.comparator, self.names)
                    return node.with_changes(test=node.test.with_changes(
                        comparisons=[target.with_changes(comparator=extended)]))
                return node.with_changes(orelse=rebuild(node.orelse))
            return new_branch.with_changes(orelse=node)  # node is the final `else`

        view.set_chain(rebuild(view.chain()))
        return view.rebuilt()

    @classmethod
    def for_patch(cls, patch, import_prefix: str) -> list:
        edits = []
        for template, role_names in roles.branches():
            names = [name for role in role_names for name in patch.names(role)]
            if names:
                edits.append(cls(template, names))
        return edits

    @classmethod
    def examples(cls) -> list:
        backbone, same_width = roles.get("backbone").branch, roles.get("same-width").branch
        upsample, fusion = roles.get("upsample").branch, roles.get("fusion").branch
        with_branch = PARSE_MODEL.replace(_ELSE, (
            "        elif m in {SE}:  # yolopatch: modules that keep the input width\n"
            "            c2 = ch[f]\n"
            "            args = [c2, *args]\n") + _ELSE)
        return [
            Example("backbone", cls(backbone, ["Net"]), PARSE_MODEL, PARSE_MODEL.replace(_ELSE, (
                "        elif m in {Net}:  # yolopatch: multi-output backbones fill one row per output stride\n"
                "            args = [ch[f], *args]\n"
                "            n = 1\n"
                "            c2 = None  # replaced by one entry per row in claim_backbone_rows()\n") + _ELSE)),
            Example("same-width", cls(same_width, ["SE"]), PARSE_MODEL, with_branch),
            Example("upsample: the same-width branch", cls(upsample, ["DySample"]), PARSE_MODEL,
                    with_branch.replace("{SE}", "{DySample}")),
            Example("fusion", cls(fusion, ["BiFPN"]), PARSE_MODEL, PARSE_MODEL.replace(_ELSE, (
                "        elif m in {BiFPN}:  # yolopatch: weighted fusion of several same-width inputs\n"
                "            args = [[ch[x] for x in f], *args]\n"
                "            c2 = ch[f[0]]\n") + _ELSE)),
            Example("more names join the existing branch", cls(same_width, ["SE", "CBAM"]), with_branch,
                    with_branch.replace("{SE}", "{SE, CBAM}")),
            ConflictExample("a name the width-scaled set already matches", cls(same_width, ["C3"]), PARSE_MODEL,
                            "C3 is already handled by `if m in {Conv, C3}:`"),
            ConflictExample("no final `else: c2 = ch[f]`", cls(fusion, ["BiFPN"]), PARSE_MODEL.replace(_ELSE, ""),
                            "else: c2 = ch[f]"),
        ]
