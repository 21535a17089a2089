"""Finding things inside `def parse_model`, and JoinModuleSet: membership in the target's own module sets.

The width-scaled set is the test of the branch doing `c1, c2 = ch[f], args[0]`; the repeat set is the test
of the `if` inside it doing `args.insert(2, n)`. Either is a list, tuple or set literal in the test, or
(ultralytics >= 8.3.65) a local such as `base_modules = frozenset({...})` assigned before the layer loop.
A module joining them is scaled and repeated exactly like the target's C3 / C2f.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from .anchors import code_of, find_function, is_layer_loop, matches_code, single_statement
from .base import ConflictExample, Edit, Example, Verdict, applied, conflict, missing, pending
from .samples import PARSE_MODEL, PARSE_MODEL_FROZENSETS

PARSE_MODEL_ANCHOR = "def parse_model()"
LOOP_ANCHOR = "the `for i, (f, n, m, args) in enumerate(backbone + head)` loop in parse_model()"
CHAIN_ANCHOR = "the if/elif chain ending in `else: c2 = ch[f]` in parse_model()"
SCALED_ANCHOR = "the branch doing `c1, c2 = ch[f], args[0]` in parse_model()"
REPEAT_ANCHOR = "the `if m in ...: args.insert(2, n)` repeat branch in parse_model()"


class Missing(Exception):
    """An anchor is not there; carries its description."""


@dataclass
class ParseModel:
    """parse_model located in a module: its statements, the layer loop, and the loop's if/elif chain."""
    module: cst.Module
    index: int                 # of the function in module.body
    statements: list           # the function body's statements (edited in place, then `rebuilt`)
    loop_at: int

    @classmethod
    def find(cls, module: cst.Module) -> "ParseModel":
        found = find_function(module, "parse_model")
        if found is None:
            raise Missing(PARSE_MODEL_ANCHOR)
        index, function = found
        statements = list(function.body.body)
        loop_at = next((i for i, stmt in enumerate(statements) if is_layer_loop(stmt)), None)
        if loop_at is None:
            raise Missing(LOOP_ANCHOR)
        return cls(module, index, statements, loop_at)

    @property
    def loop(self) -> cst.For:
        return self.statements[self.loop_at]

    @property
    def loop_body(self) -> list:
        return list(self.loop.body.body)

    def set_loop_body(self, body: list) -> None:
        self.statements[self.loop_at] = self.loop.with_changes(body=self.loop.body.with_changes(body=body))

    def chain_index(self) -> int:
        """The if/elif chain of the loop whose final `else` is `c2 = ch[f]`."""
        for i, stmt in enumerate(self.loop.body.body):
            node = stmt
            while isinstance(node, cst.If):
                node = node.orelse
            if isinstance(node, cst.Else) and len(node.body.body) == 1 and matches_code(node.body.body[0], "c2 = ch[f]"):
                return i
        raise Missing(CHAIN_ANCHOR)

    def chain(self) -> cst.If:
        return self.loop.body.body[self.chain_index()]

    def set_chain(self, chain: cst.If) -> None:
        body = self.loop_body
        body[self.chain_index()] = chain
        self.set_loop_body(body)

    def parse(self, code: str) -> cst.BaseStatement:
        return cst.parse_statement(code, config=self.module.config_for_parsing)

    def rebuilt(self) -> cst.Module:
        function = self.module.body[self.index]
        body = list(self.module.body)
        body[self.index] = function.with_changes(body=function.body.with_changes(body=self.statements))
        return self.module.with_changes(body=body)

    # -- the names a branch test covers -------------------------------------------------------------
    def local_collection(self, name: str) -> tuple[int, cst.BaseExpression] | None:
        """The literal a local such as `base_modules = frozenset({...})` holds: (statement index, literal)."""
        for i, stmt in enumerate(self.statements[: self.loop_at]):
            small = single_statement(stmt)
            if isinstance(small, cst.Assign) and len(small.targets) == 1 \
                    and isinstance(small.targets[0].target, cst.Name) and small.targets[0].target.value == name:
                value = small.value
                if isinstance(value, cst.Call) and code_of(value.func) in ("frozenset", "set", "tuple") \
                        and len(value.args) == 1:
                    value = value.args[0].value
                return (i, value) if isinstance(value, (cst.List, cst.Tuple, cst.Set)) else None
        return None

    def tested_names(self, test: cst.BaseExpression) -> set[str]:
        """Module names a branch test matches: `m in {A, B}`, `m in local`, `m is A`, joined by and/or."""
        if isinstance(test, cst.BooleanOperation):
            return self.tested_names(test.left) | self.tested_names(test.right)
        names: set[str] = set()
        if isinstance(test, cst.Comparison) and code_of(test.left) == "m":
            for target in test.comparisons:
                comparator = target.comparator
                if isinstance(comparator, cst.Name) and isinstance(target.operator, cst.In):
                    found = self.local_collection(comparator.value)
                    comparator = found[1] if found else comparator
                if isinstance(comparator, (cst.List, cst.Tuple, cst.Set)):
                    names |= {code_of(e.value) for e in comparator.elements}
                else:
                    names.add(code_of(comparator))
        return names

    def handled_before(self, names, stop: cst.If | None = None) -> tuple[str, str] | None:
        """(name, test) of the first of `names` an earlier branch of the chain already matches (up to
        `stop`, or the whole chain)."""
        node = self.chain()
        while isinstance(node, cst.If) and node is not stop:
            hit = [n for n in names if n in self.tested_names(node.test)]
            if hit:
                return hit[0], code_of(node.test)
            node = node.orelse
        return None


def extend_collection(node: cst.BaseExpression, names) -> cst.BaseExpression | None:
    """Append names to a list / tuple / set literal, keeping its layout (one per line, or inline)."""
    if not isinstance(node, (cst.List, cst.Tuple, cst.Set)) or not node.elements:
        return None
    elements = list(node.elements)
    present = {code_of(e.value) for e in elements}
    missing_names = [n for n in names if n not in present]
    if not missing_names:
        return node
    last_comma = elements[-1].comma
    if len(elements) > 1:
        separator = elements[-2].comma
    elif isinstance(last_comma, cst.Comma) and isinstance(_opening_space(node), cst.ParenthesizedWhitespace):
        separator = last_comma.with_changes(whitespace_after=_opening_space(node))  # one element per line
    else:
        separator = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
    trailing = elements[-1].comma
    if isinstance(node, cst.Tuple) and len(elements) == 1:
        trailing = cst.MaybeSentinel.DEFAULT  # `(A,)` becomes `(A, B)`
    elements[-1] = elements[-1].with_changes(comma=separator)
    for name in missing_names[:-1]:
        elements.append(cst.Element(cst.Name(name), comma=separator))
    elements.append(cst.Element(cst.Name(missing_names[-1]), comma=trailing))
    return node.with_changes(elements=elements)


def _opening_space(node: cst.BaseExpression):
    """The whitespace after a literal's opening bracket (a newline and indent when one element is per line)."""
    if isinstance(node, cst.Set):
        return node.lbrace.whitespace_after
    if isinstance(node, cst.List):
        return node.lbracket.whitespace_after
    return node.lpar[0].whitespace_after if node.lpar else None


def membership(test: cst.BaseExpression) -> cst.ComparisonTarget | None:
    """The `in <collection>` part of a test `m in <collection>`."""
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1 and isinstance(test.comparisons[0].operator, cst.In):
        return test.comparisons[0]
    return None


SETS = {  # kind: what it is, in words
    "scaled": "the width-scaled module set",
    "repeat": "the repeat module set",
}


class JoinModuleSet(Edit):
    """Add module names to the width-scaled set (kind "scaled") or the repeat set (kind "repeat")."""

    id = "join-module-set"
    scope = "parse_model"

    def __init__(self, kind: str, names):
        assert kind in SETS
        self.kind, self.names = kind, tuple(names)

    def _find(self, view: ParseModel) -> tuple[cst.If, cst.If]:
        """(the scaled branch, the `if` whose test is this edit's set)."""
        node = view.chain()
        while isinstance(node, cst.If):
            if any(matches_code(s, "c1, c2 = ch[f], args[0]") for s in node.body.body):
                break
            node = node.orelse
        else:
            raise Missing(SCALED_ANCHOR)
        if self.kind == "scaled":
            return node, node
        for stmt in node.body.body:
            if isinstance(stmt, cst.If) and any(matches_code(s, "args.insert(2, n)") for s in stmt.body.body):
                return node, stmt
        raise Missing(REPEAT_ANCHOR)

    def _collection(self, view: ParseModel, test_if: cst.If):
        """(the literal holding the set, index of the local assigning it or None)."""
        what = SETS[self.kind]
        target = membership(test_if.test)
        if target is None:
            raise Missing(f"`m in ...` testing {what}")
        if isinstance(target.comparator, cst.Name):
            found = view.local_collection(target.comparator.value)
            if found is None:
                raise Missing(f"the assignment of `{target.comparator.value}` ({what}) before the layer loop")
            return found[1], found[0]
        if not isinstance(target.comparator, (cst.List, cst.Tuple, cst.Set)) or not target.comparator.elements:
            raise Missing(f"a list, tuple or set literal for {what}")
        return target.comparator, None

    def classify(self, module: cst.Module) -> Verdict:
        try:
            view = ParseModel.find(module)
            scaled, test_if = self._find(view)
            literal, _ = self._collection(view, test_if)
        except Missing as exc:
            return missing(str(exc))
        present = {code_of(e.value) for e in literal.elements}
        if set(self.names) <= present:
            return applied()
        earlier = view.handled_before([n for n in self.names if n not in present], stop=scaled)
        if earlier:
            return conflict(f"{earlier[0]} is already handled by `if {earlier[1]}:` in parse_model()")
        return pending()

    def transform(self, module: cst.Module) -> cst.Module:
        view = ParseModel.find(module)
        scaled, test_if = self._find(view)
        literal, local_at = self._collection(view, test_if)
        extended = extend_collection(literal, self.names)
        if local_at is not None:
            stmt = view.statements[local_at]
            small = single_statement(stmt)
            value = small.value
            if isinstance(value, cst.Call):
                value = value.with_changes(args=[value.args[0].with_changes(value=extended)])
            else:
                value = extended
            view.statements[local_at] = stmt.with_changes(body=[small.with_changes(value=value)])
            return view.rebuilt()
        target = membership(test_if.test)
        new_if = test_if.with_changes(test=test_if.test.with_changes(comparisons=[target.with_changes(comparator=extended)]))
        new_scaled = new_if if self.kind == "scaled" else scaled.with_changes(body=scaled.body.with_changes(
            body=[new_if if s is test_if else s for s in scaled.body.body]))
        view.set_chain(_replace_in_chain(view.chain(), scaled, new_scaled))
        return view.rebuilt()

    @classmethod
    def for_patch(cls, patch, import_prefix: str) -> list:
        edits = []
        if patch.scaled:
            edits.append(cls("scaled", patch.scaled))
        if patch.repeats:
            edits.append(cls("repeat", patch.repeats))
        return edits

    @classmethod
    def examples(cls) -> list:
        scaled, repeat = cls("scaled", ["GSConv", "VoV"]), cls("repeat", ["VoV"])
        frozen = PARSE_MODEL_FROZENSETS
        return [
            Example("a set literal", scaled, PARSE_MODEL,
                    PARSE_MODEL.replace("if m in {Conv, C3}:", "if m in {Conv, C3, GSConv, VoV}:")),
            Example("the repeat set inside the scaled branch", repeat, PARSE_MODEL,
                    PARSE_MODEL.replace("if m in {C3}:", "if m in {C3, VoV}:")),
            Example("a one-element tuple", scaled, PARSE_MODEL.replace("{Conv, C3}", "(Conv,)"),
                    PARSE_MODEL.replace("{Conv, C3}", "(Conv, GSConv, VoV)")),
            Example("a list", repeat, PARSE_MODEL.replace("{C3}", "[C3]"),
                    PARSE_MODEL.replace("{C3}", "[C3, VoV]")),
            Example("a frozenset local, one name per line", scaled, frozen, frozen.replace(
                "            C3,\n        }\n    )\n    repeat",
                "            C3,\n            GSConv,\n            VoV,\n        }\n    )\n    repeat")),
            Example("the repeat frozenset local", repeat, frozen, frozen.replace(
                "            C3,\n        }\n    )\n    for", "            C3,\n            VoV,\n        }\n    )\n    for")),
            ConflictExample("a name an earlier branch matches", scaled,
                            PARSE_MODEL.replace("if m in {Conv, C3}:", "if m is GSConv:\n            c2 = 1\n"
                                                "        elif m in {Conv, C3}:"),
                            "GSConv is already handled by `if m is GSConv:`"),
            ConflictExample("a set local that is not assigned before the loop", scaled,
                            PARSE_MODEL.replace("if m in {Conv, C3}:", "if m in base_modules:"),
                            "the assignment of `base_modules`"),
            ConflictExample("no scaled branch", scaled,
                            PARSE_MODEL.replace("c1, c2 = ch[f], args[0]", "c1, c2 = ch[f], 1"),
                            SCALED_ANCHOR),
        ]


def _replace_in_chain(chain: cst.If, old: cst.If, new: cst.If) -> cst.If:
    if chain is old:
        return new
    return chain.with_changes(orelse=_replace_in_chain(chain.orelse, old, new))
