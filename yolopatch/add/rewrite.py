"""RewriteTargetImports: a tutorial file's imports of the target package, rewritten for this checkout.

Tutorials import the target in many forms, written for wherever their author kept the file:
`from ultralytics.nn.modules.conv import Conv`, `from ..modules.conv import Conv`, `from .conv import Conv`,
`from models.common import Conv, C3`, `from yolov5.models.common import ...`. Each becomes an absolute
import of the module of this checkout that defines the names: the module with the same dotted path, else
one whose path ends the same way, else the first module defining each name (the target's module folder
first). A name the checkout does not define is a conflict. Every other line of the file is left as it is.
"""

from __future__ import annotations

import ast
import sys
from typing import Callable

import libcst as cst

from ..edits.anchors import code_of
from ..edits.base import ConflictExample, Edit, Example, Verdict, applied, conflict, pending
from ..edits.samples import dedent

# Top-level names tutorials import the targets by: the packages, and YOLOv5's upstream folders.
TARGET_ROOTS = ("ultralytics", "yolov5", "models", "utils")
PROVIDED = ("torch", "torchvision", "__future__")   # every target needs these already
# Import names whose distribution on PyPI is called differently.
DISTRIBUTIONS = {"cv2": "opencv-python", "PIL": "Pillow", "yaml": "PyYAML", "sklearn": "scikit-learn",
                 "skimage": "scikit-image", "mmcv": "mmcv", "mmengine": "mmengine", "einops": "einops"}


class Unresolved(Exception):
    """An import the checkout cannot satisfy; the message says which."""


class Layout:
    """The modules of a checkout, for resolving imports: every dotted module name, the names each binds
    (name -> "defines" or "imports"), and the order modules are searched in for a name whose module has no
    counterpart here (a module defining it is preferred to one importing it)."""

    def __init__(self, modules: list[str], bound: Callable[[str], dict[str, str] | None], search: list[str]):
        self.modules, self._bound, self.search = modules, bound, search
        self._cache: dict[str, dict[str, str]] = {}

    def bound(self, dotted: str) -> dict[str, str]:
        if dotted not in self._cache:
            self._cache[dotted] = self._bound(dotted) or {}
        return self._cache[dotted]

    @staticmethod
    def is_target(module: str, level: int) -> bool:
        return level > 0 or module.split(".")[0] in TARGET_ROOTS

    def candidates(self, module: str, level: int) -> list[str]:
        """This checkout's modules an import of `module` may mean: the same dotted path, then paths ending
        the same way (nearest first)."""
        tail = module
        if not level and module.split(".")[0] in ("ultralytics", "yolov5"):
            tail = module.partition(".")[2]
        exact = [module] if not level and module in self.modules else []
        if not tail:
            return exact
        ending = sorted((m for m in self.modules if m == tail or m.endswith("." + tail)), key=lambda m: (len(m), m))
        return exact + [m for m in ending if m not in exact]

    def resolve(self, module: str, level: int, names: list[str]) -> list[tuple[str, list[str]]]:
        """[(checkout module, names)] for `from <module> import <names>`; names == ["*"] for a star."""
        spelled = "." * level + module
        for candidate in self.candidates(module, level):
            if names == ["*"] or set(names) <= set(self.bound(candidate)):
                return [(candidate, names)]
        if names == ["*"]:
            raise Unresolved(f"imports * from {spelled}, which this checkout has no module for")
        grouped: dict[str, list[str]] = {}
        for name in names:
            home = next((m for m in self.search if self.bound(m).get(name) == "defines"), None) or \
                next((m for m in self.search if name in self.bound(m)), None)
            if home is None:
                raise Unresolved(f"imports {name} from {spelled}, which this checkout does not define")
            grouped.setdefault(home, []).append(name)
        return list(grouped.items())


def _aliases(node: cst.ImportFrom) -> list[tuple[str, str | None]]:
    return [(alias.evaluated_name, code_of(alias.asname.name) if alias.asname else None) for alias in node.names]


def _import_line(module: str, aliases: list[tuple[str, str | None]]) -> str:
    names = ", ".join(name if alias is None else f"{name} as {alias}" for name, alias in aliases)
    return f"from {module} import {names}"


class RewriteTargetImports(Edit):
    id = "rewrite-target-imports"
    scope = "module-file"

    def __init__(self, layout: Layout):
        self.layout = layout

    def _plan(self, module: cst.Module) -> dict[int, list[str]]:
        """id of each ImportFrom to rewrite -> the lines replacing it (raises Unresolved)."""
        plans = {}
        for node in _import_froms(module):
            level = len(node.relative)
            dotted = code_of(node.module) if node.module else ""
            if not self.layout.is_target(dotted, level):
                continue
            star = isinstance(node.names, cst.ImportStar)
            aliases = [("*", None)] if star else _aliases(node)
            by_name = dict(aliases)
            resolved = self.layout.resolve(dotted, level, [name for name, _ in aliases])
            lines = [_import_line(home, [(n, by_name[n]) for n in names]) for home, names in resolved]
            if level or len(lines) != 1 or lines[0] != _import_line(dotted, aliases) or not _plain(node):
                plans[id(node)] = lines
        return plans

    def classify(self, module: cst.Module) -> Verdict:
        try:
            plans = self._plan(module)
        except Unresolved as exc:
            return conflict(str(exc))
        return pending() if plans else applied()

    def transform(self, module: cst.Module) -> cst.Module:
        return module.visit(_Replace(self._plan(module), module.config_for_parsing))

    @classmethod
    def for_patch(cls, patch, import_prefix: str) -> list:
        return []  # not a parser-file edit: `yolopatch add` runs it on the user's module file

    @classmethod
    def examples(cls) -> list:
        ultralytics = Layout(
            ["ultralytics", "ultralytics.nn", "ultralytics.nn.modules", "ultralytics.nn.modules.conv",
             "ultralytics.nn.modules.block", "ultralytics.utils", "ultralytics.utils.ops"],
            {"ultralytics.nn.modules.conv": {"Conv": "defines", "DWConv": "defines"},
             "ultralytics.nn.modules.block": {"C2f": "defines", "C3": "defines", "Conv": "imports"},
             "ultralytics.utils.ops": {"make_divisible": "defines"}}.get,
            ["ultralytics.nn.modules.conv", "ultralytics.nn.modules.block", "ultralytics.utils.ops"])
        edit = cls(ultralytics)
        return [
            Example("every tutorial form, onto ultralytics", edit, dedent('''
                import torch
                from torch import nn
                from ultralytics.nn.modules.conv import Conv  # already right
                from ..modules.conv import DWConv
                from .block import C2f as Base
                from models.common import Conv as V5Conv, C3
                from yolov5.utils.general import make_divisible
                import einops


                class M(nn.Module):
                    pass
            '''), dedent('''
                import torch
                from torch import nn
                from ultralytics.nn.modules.conv import Conv  # already right
                from ultralytics.nn.modules.conv import DWConv
                from ultralytics.nn.modules.block import C2f as Base
                from ultralytics.nn.modules.conv import Conv as V5Conv
                from ultralytics.nn.modules.block import C3
                from ultralytics.utils.ops import make_divisible
                import einops


                class M(nn.Module):
                    pass
            ''')),
            Example("inside a try block, with a comment", edit,
                    "try:\n    from .conv import Conv  # the target's\nexcept ImportError:\n    Conv = None\n",
                    "try:\n    from ultralytics.nn.modules.conv import Conv  # the target's\nexcept ImportError:\n"
                    "    Conv = None\n"),
            ConflictExample("a name the checkout does not define", edit, "from .conv import Conv, GhostConvX\n",
                            "imports GhostConvX from .conv, which this checkout does not define"),
        ]


def _plain(node: cst.ImportFrom) -> bool:
    """Written on one line without parentheses (else it is rewritten, to the same names)."""
    return node.lpar is None


def _import_froms(module: cst.Module) -> list:
    found = []

    class Collect(cst.CSTVisitor):
        def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
            found.append(node)

    module.visit(Collect())
    return found


class _Replace(cst.CSTTransformer):
    """Each planned import becomes its lines (a statement line may become several)."""

    def __init__(self, plans: dict, config):
        super().__init__()
        self.plans, self.config = plans, config

    def leave_SimpleStatementLine(self, original, updated):
        if not any(id(small) in self.plans for small in original.body):
            return updated
        codes = []
        for small in original.body:
            codes += self.plans.get(id(small)) or [code_of(small)]
        lines = [cst.parse_statement(code + "\n", config=self.config) for code in codes]
        lines[0] = lines[0].with_changes(leading_lines=original.leading_lines)
        lines[-1] = lines[-1].with_changes(trailing_whitespace=original.trailing_whitespace)
        return cst.FlattenSentinel(lines)


def requirements(source: bytes) -> list[str]:
    """Distributions a module file needs beyond the standard library, torch and the target."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            tops = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            tops = [node.module.split(".")[0]]
        else:
            continue
        for top in tops:
            if top not in sys.stdlib_module_names and top not in PROVIDED and top not in TARGET_ROOTS:
                found.add(DISTRIBUTIONS.get(top, top))
    return sorted(found)
