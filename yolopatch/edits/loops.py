"""ForwardLoopStatement: every forward loop routes a multi-output backbone's outputs to its rows.

One statement after each save step `y.append(x if m.i in self.save else None)`; `route_backbone_levels`
(the support module) keeps a backbone's outputs for its placeholder rows and hands each row its own.
Only statement blocks are walked (classes, functions, and the compound statements inside them), never
expressions: the parser files are thousands of lines and a full-tree visit costs more than the parse.
"""

from __future__ import annotations

import libcst as cst

from .anchors import SAVE_OUTPUT, matches_code
from .base import ConflictExample, Edit, Example, Verdict, applied, missing, pending
from .samples import dedent

ROUTE = "x = route_backbone_levels(m, x, y, self.save)  # yolopatch: a backbone fills one row per output stride\n"
MISSING_LOOP = "a forward loop saving outputs with `y.append(x if m.i in self.save else None)`"
_COMPOUND = (cst.ClassDef, cst.FunctionDef, cst.If, cst.Else, cst.For, cst.While, cst.With, cst.Try,
             cst.ExceptHandler, cst.Finally)


class _Walk:
    """Visit every statement block; `edit` True inserts the statement where it is missing."""

    def __init__(self, config, edit: bool):
        self.config, self.edit = config, edit
        self.loops = self.routed = 0

    def block(self, statements):
        return [self.statement(stmt) for stmt in statements]

    def statement(self, node):
        if not isinstance(node, _COMPOUND):
            return node
        if not self.edit:
            self._visit(node)
            return node
        changes = {}
        body = getattr(node, "body", None)
        if isinstance(body, cst.IndentedBlock):
            statements = self.block(body.body)
            if isinstance(node, cst.For):
                statements = self._route_after_save(statements)
            changes["body"] = body.with_changes(body=statements)
        for field in ("orelse", "finalbody"):
            child = getattr(node, field, None)
            if child is not None:
                changes[field] = self.statement(child)
        if isinstance(node, cst.Try):
            changes["handlers"] = [self.statement(h) for h in node.handlers]
        return node.with_changes(**changes)

    def _visit(self, node):
        body = getattr(node, "body", None)
        if isinstance(body, cst.IndentedBlock):
            self.block(body.body)
            if isinstance(node, cst.For):
                self._route_after_save(body.body)
        for field in ("orelse", "finalbody"):
            child = getattr(node, field, None)
            if child is not None:
                self.statement(child)
        for handler in getattr(node, "handlers", ()) if isinstance(node, cst.Try) else ():
            self.statement(handler)

    def _route_after_save(self, statements):
        at = next((i for i, stmt in enumerate(statements) if matches_code(stmt, SAVE_OUTPUT)), None)
        if at is None:
            return statements
        self.loops += 1
        if at + 1 < len(statements) and matches_code(statements[at + 1], ROUTE.split("#")[0]):
            self.routed += 1
            return statements
        if not self.edit:
            return statements
        return [*statements[:at + 1], cst.parse_statement(ROUTE, config=self.config), *statements[at + 1:]]


class ForwardLoopStatement(Edit):
    id = "forward-loop-statement"
    scope = "loops"

    def classify(self, module: cst.Module) -> Verdict:
        walk = _Walk(module.config_for_parsing, edit=False)
        walk.block(module.body)
        if walk.loops == 0:
            return missing(MISSING_LOOP)
        return applied() if walk.routed == walk.loops else pending()

    def transform(self, module: cst.Module) -> cst.Module:
        walk = _Walk(module.config_for_parsing, edit=True)
        return module.with_changes(body=walk.block(module.body))

    @classmethod
    def for_patch(cls, patch, import_prefix: str) -> list:
        return [cls()] if patch.needs_multi_output else []

    @classmethod
    def examples(cls) -> list:
        return [
            Example("every loop, whatever surrounds the save step", cls(), dedent('''
                class M:
                    def _predict_once(self, x, profile=False):
                        y = []
                        for m in self.model:
                            x = m(x)  # run
                            y.append(x if m.i in self.save else None)  # save output
                            if profile:
                                print(m.i)
                        return x

                    def predict(self, x, batch=None):
                        y = []
                        for m in self.model[:-1]:
                            if isinstance(m, int):
                                x = m(x, 1)
                            else:
                                x = m(x)

                            y.append(x if m.i in self.save else None)
                        return x
            '''), dedent('''
                class M:
                    def _predict_once(self, x, profile=False):
                        y = []
                        for m in self.model:
                            x = m(x)  # run
                            y.append(x if m.i in self.save else None)  # save output
                            x = route_backbone_levels(m, x, y, self.save)  # yolopatch: a backbone fills one row per output stride
                            if profile:
                                print(m.i)
                        return x

                    def predict(self, x, batch=None):
                        y = []
                        for m in self.model[:-1]:
                            if isinstance(m, int):
                                x = m(x, 1)
                            else:
                                x = m(x)

                            y.append(x if m.i in self.save else None)
                            x = route_backbone_levels(m, x, y, self.save)  # yolopatch: a backbone fills one row per output stride
                        return x
            ''')),
            ConflictExample("no save step", cls(), "def f():\n    for m in x:\n        y.append(m)\n",
                            "y.append(x if m.i in self.save else None)"),
        ]
