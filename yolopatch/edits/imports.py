"""ImportNames: `from package.module import A, B` after the parser file's leading block of imports.

Only the statements before the first def/class are read (the piece edits/pieces.py hands over as the
header), so the piecewise and the whole-file edit see the same thing.
"""

from __future__ import annotations

import libcst as cst

from .anchors import code_of
from .base import Edit, ConflictExample, Example, applied, conflict, pending
from .samples import dedent


def _leading(module: cst.Module) -> list:
    statements = []
    for stmt in module.body:
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            break
        statements.append(stmt)
    return statements


def _bindings(stmt: cst.CSTNode):
    """(module imported from, name bound) for each name a simple import line binds."""
    if not isinstance(stmt, cst.SimpleStatementLine):
        return
    for small in stmt.body:
        if isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
            source = "." * len(small.relative) + (code_of(small.module) if small.module else "")
            for alias in small.names:
                yield source, code_of(alias.asname.name) if alias.asname else alias.evaluated_name
        elif isinstance(small, cst.Import):
            for alias in small.names:
                bound = code_of(alias.asname.name) if alias.asname else alias.evaluated_name.split(".")[0]
                yield alias.evaluated_name, bound


def _is_import(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(
        isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body)


class ImportNames(Edit):
    id = "import-names"
    scope = "header"

    def __init__(self, dotted: str, names):
        self.dotted, self.names = dotted, tuple(names)

    def classify(self, module: cst.Module):
        leading = _leading(module)
        for stmt in leading:
            small = stmt.body[0] if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 else None
            if isinstance(small, cst.ImportFrom) and small.module is not None and not small.relative \
                    and not isinstance(small.names, cst.ImportStar) and code_of(small.module) == self.dotted \
                    and set(self.names) <= {alias.evaluated_name for alias in small.names}:
                return applied()
        for stmt in leading:
            for source, bound in _bindings(stmt):
                if bound in self.names and source != self.dotted:
                    return conflict(f"{bound} is already imported from {source}; a module of that name "
                                    "would replace it")
        return pending()

    def transform(self, module: cst.Module) -> cst.Module:
        insert_at = 0
        for index, stmt in enumerate(_leading(module)):
            if _is_import(stmt):
                insert_at = index + 1
        line = cst.parse_statement(f"from {self.dotted} import {', '.join(self.names)}\n",
                                   config=module.config_for_parsing)
        body = list(module.body)
        body.insert(insert_at, line)
        return module.with_changes(body=body)

    @classmethod
    def for_patch(cls, patch, import_prefix: str) -> list:
        from .parser_file import FUSE_MODULE, FUSE_NAMES, SUPPORT_MODULE, SUPPORT_NAMES

        edits = [cls(dotted, names) for dotted, names in patch.imports]
        if patch.needs_multi_output:
            edits.append(cls(f"{import_prefix}.{SUPPORT_MODULE}", SUPPORT_NAMES))
        if patch.imports:
            edits.append(cls(f"{import_prefix}.{FUSE_MODULE}", FUSE_NAMES))
        return edits

    @classmethod
    def examples(cls) -> list:
        edit = cls("pkg.modules.mod", ["A", "B"])
        return [
            Example("after the leading imports, before a try block", edit, dedent('''
                """doc"""
                import torch
                from x import (y,
                               z)

                try:
                    import thop
                except ImportError:
                    thop = None


                def f():
                    pass
            '''), dedent('''
                """doc"""
                import torch
                from x import (y,
                               z)
                from pkg.modules.mod import A, B

                try:
                    import thop
                except ImportError:
                    thop = None


                def f():
                    pass
            ''')),
            Example("a file of one import", edit, "import torch\n", "import torch\nfrom pkg.modules.mod import A, B\n"),
            ConflictExample("a name the file already imports from elsewhere", edit,
                            "from ultralytics.nn.modules import A, Conv\n\n\nclass M:\n    pass\n",
                            "A is already imported from ultralytics.nn.modules"),
        ]
