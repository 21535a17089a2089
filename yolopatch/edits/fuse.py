"""FoldNewBatchNorms: the model's fuse() also folds the conv + BatchNorm pairs of the modules the patch adds.

The targets' fuse() folds only their own Conv classes, in one loop over `self.model.modules()`
(ultralytics BaseModel.fuse 8.0-8.4, YOLOv5 BaseModel.fuse / Model.fuse). One statement goes right after
that loop, in every `def fuse` holding it:

    fold_batchnorms(self.model, (A, B))  # yolopatch: ...

`fold_batchnorms` is the runtime module yolopatch_fuse.py, which the plan writes beside the modules; it
folds only inside instances of the classes listed (the patch's modules), so stock models fuse exactly as
before. A file without any `def fuse` has nothing to patch; a `def fuse` without the loop is a layout the
edit does not know and is refused.
"""

from __future__ import annotations

import libcst as cst

from .anchors import code_of, single_statement
from .base import ConflictExample, Edit, Example, Verdict, applied, missing, pending
from .samples import dedent

FUNCTION = "fold_batchnorms"
COMMENT = "# yolopatch: fold the conv+BN pairs of the added modules"
STOCK_LOOP = "for m in self.model.modules():"
MISSING_FUSE_LOOP = f"the folding loop `{STOCK_LOOP}` in `def fuse`"
_COMPOUND = (cst.If, cst.Else, cst.For, cst.While, cst.With, cst.Try, cst.ExceptHandler, cst.Finally)


def _is_stock_loop(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.For) and code_of(stmt.target) == "m" and \
        "".join(code_of(stmt.iter).split()) == "self.model.modules()"


def _fold_call(stmt: cst.CSTNode) -> str | None:
    """The class tuple of a `fold_batchnorms(self.model, (...))` line, as written; None for any other line."""
    small = single_statement(stmt)
    call = small.value if isinstance(small, cst.Expr) else None
    if not (isinstance(call, cst.Call) and isinstance(call.func, cst.Name) and call.func.value == FUNCTION
            and len(call.args) == 2 and "".join(code_of(call.args[0].value).split()) == "self.model"):
        return None
    return "".join(code_of(call.args[1].value).split())


class _Walk:
    """Every statement block of every `def fuse` in a class: count the stock loops, and those followed
    by this edit's call (with the same classes); `edit` True inserts or updates the call."""

    def __init__(self, statement: str, config, edit: bool):
        self.statement, self.config, self.edit = statement, config, edit
        self.wanted = _fold_call(cst.parse_statement(statement, config=config))
        self.fuses = self.loops = self.folded = 0

    def module(self, module: cst.Module) -> cst.Module:
        body = [self._class(stmt) if isinstance(stmt, cst.ClassDef) else stmt for stmt in module.body]
        return module.with_changes(body=body)

    def _class(self, node: cst.ClassDef) -> cst.ClassDef:
        if not isinstance(node.body, cst.IndentedBlock):
            return node
        members = []
        for member in node.body.body:
            if isinstance(member, cst.FunctionDef) and member.name.value == "fuse" and \
                    isinstance(member.body, cst.IndentedBlock):
                self.fuses += 1
                member = member.with_changes(body=member.body.with_changes(body=self._block(member.body.body)))
            members.append(member)
        return node.with_changes(body=node.body.with_changes(body=members))

    def _block(self, statements) -> list:
        out = []
        statements = [self._compound(stmt) for stmt in statements]
        for index, stmt in enumerate(statements):
            out.append(stmt)
            if not _is_stock_loop(stmt):
                continue
            self.loops += 1
            following = statements[index + 1] if index + 1 < len(statements) else None
            present = _fold_call(following) if following is not None else None
            if present == self.wanted:
                self.folded += 1
            elif self.edit and present is None:
                out.append(cst.parse_statement(self.statement, config=self.config))
        if self.edit:   # a call listing other classes (the recipes applied changed): replace it
            out = [cst.parse_statement(self.statement, config=self.config)
                   if _fold_call(stmt) not in (None, self.wanted) else stmt for stmt in out]
        return out

    def _compound(self, node):
        if not isinstance(node, _COMPOUND):
            return node
        changes = {}
        body = getattr(node, "body", None)
        if isinstance(body, cst.IndentedBlock):
            changes["body"] = body.with_changes(body=self._block(body.body))
        for field in ("orelse", "finalbody"):
            child = getattr(node, field, None)
            if child is not None:
                changes[field] = self._compound(child)
        if isinstance(node, cst.Try):
            changes["handlers"] = [self._compound(h) for h in node.handlers]
        return node.with_changes(**changes)


class FoldNewBatchNorms(Edit):
    id = "fold-new-batchnorms"
    scope = "fuse"

    def __init__(self, names):
        self.names = tuple(names)

    @property
    def statement(self) -> str:
        classes = ", ".join(self.names) + ("," if len(self.names) == 1 else "")
        return f"{FUNCTION}(self.model, ({classes}))  {COMMENT}\n"

    def _walk(self, module: cst.Module, edit: bool) -> _Walk:
        walk = _Walk(self.statement, module.config_for_parsing, edit)
        walk.result = walk.module(module)
        return walk

    def classify(self, module: cst.Module) -> Verdict:
        walk = self._walk(module, edit=False)
        if walk.fuses == 0:
            return applied()   # nothing in this file fuses a model: nothing to extend
        if walk.loops == 0:
            return missing(MISSING_FUSE_LOOP)
        return applied() if walk.folded == walk.loops else pending()

    def transform(self, module: cst.Module) -> cst.Module:
        return self._walk(module, edit=True).result

    @classmethod
    def for_patch(cls, patch, import_prefix: str) -> list:
        names = tuple(name for _, names in patch.imports for name in names)
        return [cls(names)] if names else []

    @classmethod
    def examples(cls) -> list:
        edit = cls(["NewBackbone", "NewBlock"])
        return [
            Example("after the stock loop, inside `if not self.is_fused()` (ultralytics)", edit, dedent('''
                class BaseModel(nn.Module):
                    def fuse(self, verbose=True):
                        if not self.is_fused():
                            for m in self.model.modules():
                                if isinstance(m, Conv) and hasattr(m, "bn"):
                                    m.conv = fuse_conv_and_bn(m.conv, m.bn)
                                    delattr(m, "bn")
                                    m.forward = m.forward_fuse
                            self.info(verbose=verbose)
                        return self
            '''), dedent('''
                class BaseModel(nn.Module):
                    def fuse(self, verbose=True):
                        if not self.is_fused():
                            for m in self.model.modules():
                                if isinstance(m, Conv) and hasattr(m, "bn"):
                                    m.conv = fuse_conv_and_bn(m.conv, m.bn)
                                    delattr(m, "bn")
                                    m.forward = m.forward_fuse
                            fold_batchnorms(self.model, (NewBackbone, NewBlock))  # yolopatch: fold the conv+BN pairs of the added modules
                            self.info(verbose=verbose)
                        return self
            ''')),
            Example("after the loop at the top of the method (YOLOv5)", cls(["NewBackbone"]), dedent('''
                class Model(nn.Module):
                    def forward(self, x):
                        return self._forward_once(x)

                    def fuse(self):  # fuse model Conv2d() + BatchNorm2d() layers
                        LOGGER.info('Fusing layers... ')
                        for m in self.model.modules():
                            if isinstance(m, (Conv, DWConv)) and hasattr(m, 'bn'):
                                m.conv = fuse_conv_and_bn(m.conv, m.bn)  # update conv
                                delattr(m, 'bn')  # remove batchnorm
                                m.forward = m.forward_fuse  # update forward
                        self.info()
                        return self
            '''), dedent('''
                class Model(nn.Module):
                    def forward(self, x):
                        return self._forward_once(x)

                    def fuse(self):  # fuse model Conv2d() + BatchNorm2d() layers
                        LOGGER.info('Fusing layers... ')
                        for m in self.model.modules():
                            if isinstance(m, (Conv, DWConv)) and hasattr(m, 'bn'):
                                m.conv = fuse_conv_and_bn(m.conv, m.bn)  # update conv
                                delattr(m, 'bn')  # remove batchnorm
                                m.forward = m.forward_fuse  # update forward
                        fold_batchnorms(self.model, (NewBackbone,))  # yolopatch: fold the conv+BN pairs of the added modules
                        self.info()
                        return self
            ''')),
            Example("another set of recipes: the classes listed are replaced", edit, dedent('''
                class M:
                    def fuse(self):
                        for m in self.model.modules():
                            pass
                        fold_batchnorms(self.model, (OldBackbone,))  # yolopatch: fold the conv+BN pairs of the added modules
                        return self
            '''), dedent('''
                class M:
                    def fuse(self):
                        for m in self.model.modules():
                            pass
                        fold_batchnorms(self.model, (NewBackbone, NewBlock))  # yolopatch: fold the conv+BN pairs of the added modules
                        return self
            ''')),
            ConflictExample("a fuse() that folds some other way", edit, dedent('''
                class M:
                    def fuse(self):
                        for layer in self.layers:
                            layer.fuse()
                        return self
            '''), MISSING_FUSE_LOOP),
        ]
