"""Register new modules in `parse_model` by role.

- block: added to the width-scaled channel set (`c1, c2 = ch[f], args[0]`) and, when it takes a
  repeat count, to the set whose branch does `args.insert(2, n)`: the target's own logic then scales
  and repeats it exactly like its C3 / C2f.
- backbone: an `elif` before the final `else: c2 = ch[f]` that passes the input channels and keeps
  one instance; `claim_backbone_rows` after `ch.append(c2)` gives it one row per output stride, and a
  row counter renumbers the rows after it.
- fusion: an `elif` that passes the list of input widths and keeps the width.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from .anchors import AnchorMissing, code_of, find_function, is_layer_loop, matches_code, single_statement

BACKBONE_BRANCH = """\
if m in {{{names}}}:  # yolopatch: multi-output backbones fill one row per output stride
    args = [ch[f], *args]
    n = 1
    c2 = None  # replaced by one entry per row in claim_backbone_rows()
"""
FUSION_BRANCH = """\
if m in {{{names}}}:  # yolopatch: weighted fusion of several same-width inputs
    args = [[ch[x] for x in f], *args]
    c2 = ch[f[0]]
"""
ROW_COUNTER = "backbone_extra_rows = 0  # rows filled by multi-output backbones beyond their own\n"
ROW_SHIFT = "i += backbone_extra_rows  # later rows are numbered after every backbone output row\n"
ROW_CLAIM = "backbone_extra_rows += claim_backbone_rows(m_, ch)\n"


@dataclass(frozen=True)
class Registration:
    blocks: tuple[str, ...] = ()
    repeat_blocks: tuple[str, ...] = ()
    backbones: tuple[str, ...] = ()
    fusions: tuple[str, ...] = ()


def register(module: cst.Module, registration: Registration, file: str) -> cst.Module:
    found = find_function(module, "parse_model")
    if found is None:
        raise AnchorMissing(file, "def parse_model()")
    index, function = found
    statements = list(function.body.body)
    loop_at = next((i for i, stmt in enumerate(statements) if is_layer_loop(stmt)), None)
    if loop_at is None:
        raise AnchorMissing(file, "the `for i, (f, n, m, args) in enumerate(backbone + head)` loop in parse_model()")
    edit = _ParseModelEdit(module, file, statements, loop_at)
    if registration.blocks:
        edit.add_blocks(registration.blocks, registration.repeat_blocks)
    branches = []
    if registration.backbones:
        branches.append((BACKBONE_BRANCH, registration.backbones))
    if registration.fusions:
        branches.append((FUSION_BRANCH, registration.fusions))
    if branches:
        edit.add_branches(branches)
    if registration.backbones:
        edit.add_row_counter()
    function = function.with_changes(body=function.body.with_changes(body=edit.statements))
    body = list(module.body)
    body[index] = function
    return module.with_changes(body=body)


class _ParseModelEdit:
    def __init__(self, module: cst.Module, file: str, statements: list, loop_at: int):
        self.module, self.file, self.statements, self.loop_at = module, file, statements, loop_at

    # -- helpers -------------------------------------------------------------------------------------
    def _parse(self, code: str) -> cst.BaseStatement:
        return cst.parse_statement(code, config=self.module.config_for_parsing)

    @property
    def loop(self) -> cst.For:
        return self.statements[self.loop_at]

    def _set_loop_body(self, body: list) -> None:
        self.statements[self.loop_at] = self.loop.with_changes(body=self.loop.body.with_changes(body=body))

    def _chain_index(self) -> int:
        """The if/elif chain of the loop whose final `else` is `c2 = ch[f]`."""
        for i, stmt in enumerate(self.loop.body.body):
            node = stmt
            while isinstance(node, cst.If):
                node = node.orelse
            if isinstance(node, cst.Else) and len(node.body.body) == 1 and matches_code(node.body.body[0], "c2 = ch[f]"):
                return i
        raise AnchorMissing(self.file, "the if/elif chain ending in `else: c2 = ch[f]` in parse_model()")

    # -- blocks --------------------------------------------------------------------------------------
    def add_blocks(self, names: tuple[str, ...], repeat_names: tuple[str, ...]) -> None:
        body = list(self.loop.body.body)
        chain_at = self._chain_index()
        branch_path = []  # walk the chain to the width-scaled branch
        node = body[chain_at]
        while isinstance(node, cst.If):
            if any(matches_code(s, "c1, c2 = ch[f], args[0]") for s in node.body.body):
                break
            branch_path.append(node)
            node = node.orelse
        else:
            raise AnchorMissing(self.file, "the branch doing `c1, c2 = ch[f], args[0]` in parse_model()")
        branch = node.with_changes(test=self._extend_membership(node.test, names, "the width-scaled module set"))
        if repeat_names:
            branch = branch.with_changes(body=branch.body.with_changes(body=[
                self._extend_repeat_test(stmt, repeat_names) for stmt in branch.body.body
            ]))
            if branch.body.body == node.body.body:
                raise AnchorMissing(self.file, "the `if m in ...: args.insert(2, n)` repeat branch in parse_model()")
        for parent in reversed(branch_path):
            branch = parent.with_changes(orelse=branch)
        body[chain_at] = branch
        self._set_loop_body(body)

    def _extend_repeat_test(self, stmt, names):
        if isinstance(stmt, cst.If) and any(matches_code(s, "args.insert(2, n)") for s in stmt.body.body):
            return stmt.with_changes(test=self._extend_membership(stmt.test, names, "the repeat module set"))
        return stmt

    def _extend_membership(self, test: cst.BaseExpression, names, what: str) -> cst.BaseExpression:
        """`m in <collection>`: add names to the literal, or to the local the test names."""
        if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1
                and isinstance(test.comparisons[0].operator, cst.In)):
            raise AnchorMissing(self.file, f"`m in ...` testing {what}")
        target = test.comparisons[0]
        if isinstance(target.comparator, cst.Name):
            self._extend_named_collection(target.comparator.value, names, what)
            return test
        extended = extend_collection(target.comparator, names)
        if extended is None:
            raise AnchorMissing(self.file, f"a list, tuple or set literal for {what}")
        return test.with_changes(comparisons=[target.with_changes(comparator=extended)])

    def _extend_named_collection(self, local: str, names, what: str) -> None:
        for i, stmt in enumerate(self.statements[: self.loop_at]):
            small = single_statement(stmt)
            if isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name) \
                    and small.targets[0].target.value == local:
                value = small.value
                if isinstance(value, cst.Call) and code_of(value.func) in ("frozenset", "set", "tuple") and len(value.args) == 1:
                    inner = extend_collection(value.args[0].value, names)
                    new_value = value.with_changes(args=[value.args[0].with_changes(value=inner)]) if inner else None
                else:
                    new_value = extend_collection(value, names)
                if new_value is None:
                    break
                self.statements[i] = stmt.with_changes(body=[small.with_changes(value=new_value)])
                return
        raise AnchorMissing(self.file, f"the assignment of `{local}` ({what}) before the layer loop")

    # -- backbone and fusion branches ----------------------------------------------------------------
    def add_branches(self, branches) -> None:
        body = list(self.loop.body.body)
        chain_at = self._chain_index()
        chain = body[chain_at]
        for template, names in branches:
            chain = self._add_branch(chain, template, names)
        body[chain_at] = chain
        self._set_loop_body(body)

    def _add_branch(self, chain: cst.If, template: str, names) -> cst.If:
        new_branch = self._parse(template.format(names=", ".join(names)))
        wanted = [code_of(single_statement(s)) for s in new_branch.body.body]

        def rebuild(node):
            if isinstance(node, cst.If):
                if [code_of(single_statement(s)) if single_statement(s) else None for s in node.body.body] == wanted:
                    missing = [n for n in names if n not in _literal_names(node.test)]
                    return node.with_changes(test=self._extend_membership(node.test, missing, "a yolopatch branch")) \
                        if missing else node
                return node.with_changes(orelse=rebuild(node.orelse))
            return new_branch.with_changes(orelse=node)  # node is the final `else`

        return rebuild(chain)

    # -- row numbering after multi-output backbones -------------------------------------------------
    def add_row_counter(self) -> None:
        before = self.statements[self.loop_at - 1] if self.loop_at else None
        if before is None or not matches_code(before, ROW_COUNTER.split("#")[0]):
            self.statements.insert(self.loop_at, self._parse(ROW_COUNTER))
            self.loop_at += 1
        body = list(self.loop.body.body)
        if not matches_code(body[0], ROW_SHIFT.split("#")[0]):
            body.insert(0, self._parse(ROW_SHIFT))
        append_at = next((i for i, s in enumerate(body) if matches_code(s, "ch.append(c2)")), None)
        if append_at is None:
            raise AnchorMissing(self.file, "`ch.append(c2)` at the end of the layer loop in parse_model()")
        if append_at + 1 >= len(body) or not matches_code(body[append_at + 1], ROW_CLAIM):
            body.insert(append_at + 1, self._parse(ROW_CLAIM))
        self._set_loop_body(body)


def _literal_names(test: cst.BaseExpression) -> set[str]:
    comparator = test.comparisons[0].comparator
    return {code_of(e.value) for e in getattr(comparator, "elements", [])}


def extend_collection(node: cst.BaseExpression, names) -> cst.BaseExpression | None:
    """Append names to a list / tuple / set literal, keeping its layout (one per line, or inline)."""
    if not isinstance(node, (cst.List, cst.Tuple, cst.Set)) or not node.elements:
        return None
    elements = list(node.elements)
    present = {code_of(e.value) for e in elements}
    missing = [n for n in names if n not in present]
    if not missing:
        return node
    separator = elements[-2].comma if len(elements) > 1 else cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
    trailing = elements[-1].comma
    if isinstance(node, cst.Tuple) and len(elements) == 1:
        trailing = cst.MaybeSentinel.DEFAULT  # `(A,)` becomes `(A, B)`
    elements[-1] = elements[-1].with_changes(comma=separator)
    for name in missing[:-1]:
        elements.append(cst.Element(cst.Name(name), comma=separator))
    elements.append(cst.Element(cst.Name(missing[-1]), comma=trailing))
    return node.with_changes(elements=elements)
