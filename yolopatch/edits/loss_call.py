"""Put an IoU variant in place of the one IoU call of a target's box loss; nothing else in the file changes
but one import.

A site is a method of a loss class holding one call `bbox_iou(..., <flag>=True)`:

  ultralytics  BboxLoss.forward       iou = bbox_iou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, CIoU=True)
  yolov5       ComputeLoss.__call__   iou = bbox_iou(pbox, tbox[i], CIoU=True).squeeze()          (6.2 and later)
                                      iou = bbox_iou(pbox.T, tbox[i], x1y1x2y2=False, CIoU=True)  (6.0, 6.1)
  RT-DETR      DETRLoss._get_loss_bbox  loss[name_giou] = 1.0 - bbox_iou(pred_bboxes, gt_bboxes, xywh=True, GIoU=True)

Only that call node is replaced, by `yolopatch_iou.<variant>(box1, box2, xywh=..., <options>)`, so the
loss keeps its own `1 - iou` and weighting; the old API's transposed first box (`pbox.T`, which made the
call return shape (n,)) becomes `pbox` and the result is squeezed back to (n,). The IoU module is
imported from the package that provides `bbox_iou`, right after that import, and lives there.

YOLOv5 also uses that `iou` as its objectness target (`iou.detach().clamp(0)`): with the call edited and
nothing else, the target becomes the variant's value, 1 - L, clamped at 0 — the role CIoU (= 1 - L_CIoU)
plays in the stock loss. For Wise-IoU that is 1 - r R_WIoU (1 - IoU), not the plain IoU the authors' YOLOv7
code feeds it; the recipe says so.

MPDIoU also gets `image_size=`, the input image in the units of the boxes: grid units in BboxLoss (imgsz /
stride where forward receives them, 8.4; from the anchor points before), the level's grid width and
height in YOLOv5 (`pi.shape[3], pi.shape[2]` of the loop over levels), and 1 x 1 in RT-DETR, whose boxes
are normalised to the image.

The loss files are large (ultralytics' utils/loss.py is 74 KB) and libcst parses slowly, so `edit_loss_file`
parses only the class and the `bbox_iou` import, located with `ast`, and splices them back; a file of
another shape is parsed whole (`edit_loss_file_whole`), with the same result.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass

import libcst as cst

from .. import pyast
from ..errors import RefusedError
from .anchors import code_of
from .parser_file import _first_newline, _splice  # the one splice of every piecewise edit
from .pieces import Piece, _line_starts

MODULE = "yolopatch_iou"
PENDING, APPLIED, CONFLICT = "pending", "applied", "conflict"


class LossEditConflict(RefusedError):
    """The site is not as the edit expects (edited by hand, or a layout it does not know); nothing written."""

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}; nothing was written")


@dataclass(frozen=True)
class Classification:
    status: str  # PENDING | APPLIED | CONFLICT
    reason: str = ""


@dataclass(frozen=True)
class IouCall:
    """What replaces the stock call: `yolopatch_iou.<function>(box1, box2, xywh=..., <options>)`."""
    function: str  # a public function of yolopatch_iou.py, e.g. "siou"
    options: tuple[tuple[str, object], ...] = ()  # keyword arguments written as literals, in this order
    image_size: bool = False  # pass `image_size=` (MPDIoU, or a base that is MPDIoU)

    def __post_init__(self):
        self.option_code()  # every value can be written as a literal

    def option_code(self) -> list[tuple[str, str]]:
        return [(name, _literal(value)) for name, value in self.options]


def _literal(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and value.replace("-", "").replace("_", "").isalnum():
        return f'"{value}"'
    raise ValueError(f"option value {value!r} cannot be written into the call")


@dataclass(frozen=True)
class Site:
    """Where a target's box loss calls bbox_iou."""
    key: str
    cls: str
    method: str
    flag: str  # the bbox_iou keyword the stock call sets to True
    image_size: str  # how MPDIoU's image size is found here: "grid" | "levels" | "normalised"

    @property
    def label(self) -> str:
        return f"{self.cls}.{self.method}"


SITES = {
    "ultralytics": Site("ultralytics", "BboxLoss", "forward", "CIoU", "grid"),
    "yolov5": Site("yolov5", "ComputeLoss", "__call__", "CIoU", "levels"),
    "rtdetr": Site("rtdetr", "DETRLoss", "_get_loss_bbox", "GIoU", "normalised"),
}


# ---- one site in a libcst tree ---------------------------------------------------------------------------

class _Calls(cst.CSTVisitor):
    """bbox_iou calls and calls of our variants in a method, each with the `for` loops around it."""

    def __init__(self):
        self.loops: list[cst.For] = []
        self.stock: list[tuple[cst.Call, tuple[cst.For, ...]]] = []
        self.ours: list[cst.Call] = []

    def visit_For(self, node: cst.For) -> None:
        self.loops.append(node)

    def leave_For(self, node: cst.For) -> None:
        self.loops.pop()

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Name) and func.value == "bbox_iou":
            self.stock.append((node, tuple(self.loops)))
        elif (isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == MODULE
              and not func.attr.value.startswith("image_size")):
            self.ours.append(node)


def _keyword(call: cst.Call, name: str) -> cst.Arg | None:
    return next((a for a in call.args if a.keyword is not None and a.keyword.value == name), None)


def _positional(call: cst.Call) -> list[cst.Arg]:
    return [a for a in call.args if a.keyword is None and not a.star]


def _is_true(arg: cst.Arg | None) -> bool:
    return arg is not None and isinstance(arg.value, cst.Name) and arg.value.value == "True"


def _find_method(module: cst.Module, site: Site) -> cst.FunctionDef | None:
    for stmt in module.body:
        if isinstance(stmt, cst.ClassDef) and stmt.name.value == site.cls:
            for member in stmt.body.body:
                if isinstance(member, cst.FunctionDef) and member.name.value == site.method:
                    return member
    return None


def _parameters(method: cst.FunctionDef) -> set[str]:
    params = method.params
    return {p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)}


@dataclass
class _Plan:
    """The edit worked out for one method: the node to replace and its replacement (code)."""
    target: cst.Call | None  # the stock call; None when our call is already there
    replacement: str = ""


def _image_size_code(site: Site, method: cst.FunctionDef, box1: cst.BaseExpression,
                     loops: tuple[cst.For, ...]) -> str:
    """The image size in the units of the boxes at this site, or raise ValueError with the reason."""
    if site.image_size == "normalised":
        return "(1.0, 1.0)"
    if site.image_size == "levels":
        for loop in reversed(loops):  # `for i, pi in enumerate(p)`: pi is (batch, anchors, ny, nx, outputs)
            target, it = loop.target, loop.iter
            if (isinstance(target, cst.Tuple) and len(target.elements) == 2
                    and isinstance(target.elements[1].value, cst.Name) and isinstance(it, cst.Call)
                    and isinstance(it.func, cst.Name) and it.func.value == "enumerate"):
                level = target.elements[1].value.value
                return f"({level}.shape[3], {level}.shape[2])"
        raise ValueError("the call is not inside a `for i, pi in enumerate(p)` loop over the levels, "
                         "which MPDIoU's image size is read from")
    if not (isinstance(box1, cst.Subscript) and len(box1.slice) == 1
            and isinstance(box1.slice[0].slice, cst.Index)):
        raise ValueError("the predicted boxes are not selected as `pred_bboxes[fg_mask]`, "
                         "which MPDIoU's image size follows")
    boxes, mask = code_of(box1.value), code_of(box1.slice[0].slice.value)
    params = _parameters(method)
    if {"imgsz", "stride"} <= params:
        return f"{MODULE}.image_size_in_grid(imgsz, stride, {mask}, {boxes}.shape[0])"
    if "anchor_points" in params:
        return f"{MODULE}.image_size_from_anchors(anchor_points, {mask}, {boxes}.shape[0])"
    raise ValueError(f"{site.label} receives neither imgsz and stride nor anchor_points, "
                     "which MPDIoU's image size is computed from")


def _render(call: IouCall, box1: str, box2: str, xywh: str, image_size: str | None) -> str:
    keywords = [("xywh", xywh), *call.option_code()]
    if call.image_size:
        keywords.append(("image_size", image_size))
    args = ", ".join([box1, box2, *(f"{name}={value}" for name, value in keywords)])
    return f"{MODULE}.{call.function}({args})"


def _plan_stock(site: Site, method: cst.FunctionDef, stock: cst.Call, loops, call: IouCall) -> _Plan:
    """The replacement for the stock call, or raise ValueError with the reason it cannot be replaced."""
    positional = _positional(stock)
    if len(positional) != 2:
        raise ValueError(f"the bbox_iou call in {site.label} does not pass exactly two boxes")
    box1, box2 = positional[0].value, positional[1].value
    corners = _keyword(stock, "x1y1x2y2")
    transposed = isinstance(box1, cst.Attribute) and box1.attr.value == "T"
    if corners is not None or transposed:  # YOLOv5 6.0/6.1: box1 is (4, n), the result (n,)
        if not transposed:
            raise ValueError(f"the bbox_iou call in {site.label} uses x1y1x2y2 without transposing its first box")
        if corners is not None and not (isinstance(corners.value, cst.Name) and corners.value.value in ("True", "False")):
            raise ValueError(f"x1y1x2y2 in {site.label} is not True or False")
        box1 = box1.value
        xywh = "True" if corners is not None and corners.value.value == "False" else "False"
    else:
        found = _keyword(stock, "xywh")
        xywh = code_of(found.value) if found is not None else "True"  # bbox_iou's default
    image_size = _image_size_code(site, method, positional[0].value, loops) if call.image_size else None
    code = _render(call, code_of(box1), code_of(box2), xywh, image_size)
    return _Plan(stock, f"{code}.squeeze(-1)" if transposed else code)


def _plan(module: cst.Module, site: Site, call: IouCall) -> _Plan:
    """What to do in this module, or raise ValueError with the reason the site is in conflict."""
    method = _find_method(module, site)
    if method is None:
        raise ValueError(f"cannot find {site.label}")
    calls = _Calls()
    method.visit(calls)
    flagged = [(c, loops) for c, loops in calls.stock if _is_true(_keyword(c, site.flag))]
    if len(flagged) > 1 or len(calls.ours) > 1 or (flagged and calls.ours):
        raise ValueError(f"{site.label} holds {len(flagged) + len(calls.ours)} IoU calls, the edit expects one")
    if flagged:
        return _plan_stock(site, method, *flagged[0], call)
    if calls.ours:
        ours = calls.ours[0]
        function = ours.func.attr.value
        if function != call.function:
            raise ValueError(f"{site.label} already calls {MODULE}.{function} (another IoU recipe's edit, "
                             f"or a hand edit)")
        positional = _positional(ours)
        xywh = _keyword(ours, "xywh")
        image = _keyword(ours, "image_size")
        if len(positional) != 2 or xywh is None or (call.image_size and image is None):
            raise ValueError(f"the {MODULE}.{function} call in {site.label} was edited by hand")
        expected = _render(call, code_of(positional[0].value), code_of(positional[1].value), code_of(xywh.value),
                           code_of(image.value) if image is not None else None)
        if _normal(code_of(ours)) != _normal(expected):
            raise ValueError(f"{site.label} calls {MODULE}.{function} with other options than this recipe's "
                             f"({code_of(ours)})")
        return _Plan(None)
    others = sorted({_flags(c) for c, _ in calls.stock})
    if others:
        raise ValueError(f"{site.label} calls bbox_iou with {', '.join(others)}, not {site.flag}=True "
                         f"(the loss was edited by hand)")
    raise ValueError(f"cannot find the `bbox_iou(..., {site.flag}=True)` call in {site.label}")


def _flags(call: cst.Call) -> str:
    return ", ".join(f"{a.keyword.value}={code_of(a.value)}" for a in call.args
                     if a.keyword is not None and a.keyword.value not in ("xywh", "x1y1x2y2", "eps")) or "no flag"


def _normal(code: str) -> str:
    return "".join(code.split()).replace("'", '"')


class _Replace(cst.CSTTransformer):
    def __init__(self, target: cst.Call, replacement: cst.BaseExpression):
        self.target, self.replacement = target, replacement

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        return self.replacement if original is self.target else updated


# ---- the import -------------------------------------------------------------------------------------------

def _import_line(node: cst.ImportFrom) -> str | None:
    """`from <package> import yolopatch_iou` for the package of a `from <package>.<module> import bbox_iou`."""
    dots = "." * len(node.relative)
    if node.module is None:
        return None
    dotted = code_of(node.module)
    package = dotted.rpartition(".")[0]
    if not package and not dots:
        return None  # `from metrics import bbox_iou`: a top-level module, no package to put ours in
    return f"from {dots}{package} import {MODULE}"


def _importing(stmt: cst.CSTNode, name: str) -> cst.ImportFrom | None:
    """The `from ... import` of a top-level line (which may hold several statements) that imports `name`."""
    if isinstance(stmt, cst.SimpleStatementLine):
        for node in stmt.body:
            if (isinstance(node, cst.ImportFrom) and not isinstance(node.names, cst.ImportStar)
                    and any(a.evaluated_name == name for a in node.names)):
                return node
    return None


def _add_import(module: cst.Module) -> cst.Module:
    """Our import right after the top-level import of bbox_iou (fixed point); ValueError when there is none."""
    if any(_importing(stmt, MODULE) for stmt in module.body):
        return module
    for index, stmt in enumerate(module.body):
        node = _importing(stmt, "bbox_iou")
        if node is not None:
            line = _import_line(node)
            if line is None:
                break
            body = list(module.body)
            body.insert(index + 1, cst.parse_statement(line + "\n", config=module.config_for_parsing))
            return module.with_changes(body=body)
    raise ValueError("cannot find the top-level `from <package>.metrics import bbox_iou` the IoU module is "
                     "imported beside")


def _classification(inspect) -> Classification:
    """From `inspect() -> (plan, imported)`, which raises ValueError on a conflict."""
    try:
        plan, imported = inspect()
    except ValueError as exc:
        return Classification(CONFLICT, str(exc))
    if plan.target is None and imported:
        return Classification(APPLIED)
    return Classification(PENDING, "the stock call is in place" if plan.target is not None
                          else f"{MODULE} is not imported")


# ---- the edit as an object --------------------------------------------------------------------------------

class LossCallEdit:
    """The edit of one site for one variant: classify, then apply (a no-op when applied)."""

    def __init__(self, site: Site, call: IouCall):
        self.site, self.call = site, call

    def classify(self, module: cst.Module) -> Classification:
        return _classification(lambda: (_plan(module, self.site, self.call), _add_import(module) is module))

    def apply(self, module: cst.Module, file: str) -> cst.Module:
        try:
            module = self.edit_call(module)
            return _add_import(module)
        except ValueError as exc:
            raise LossEditConflict(file, str(exc)) from None

    def edit_call(self, module: cst.Module) -> cst.Module:
        plan = _plan(module, self.site, self.call)
        if plan.target is None:
            return module
        replacement = cst.parse_expression(plan.replacement, config=module.config_for_parsing)
        return module.visit(_Replace(plan.target, replacement))


# ---- whole files ------------------------------------------------------------------------------------------

def _parse(source: bytes, file: str) -> cst.Module:
    try:
        return cst.parse_module(source)
    except (cst.ParserSyntaxError, UnicodeDecodeError):
        raise RefusedError(f"{file} does not parse as Python; nothing was written") from None


def edit_loss_file_whole(source: bytes, edit: LossCallEdit, file: str) -> bytes:
    return edit.apply(_parse(source, file), file).bytes




@dataclass(frozen=True)
class _LossPieces:
    imports: Piece  # the top-level statement importing bbox_iou
    cls: Piece      # the loss class
    imported: bool  # our import is already at the top level


def _locate(source: bytes, site: Site) -> _LossPieces | None:
    try:
        if tokenize.detect_encoding(io.BytesIO(source).readline)[0] != "utf-8":
            return None
        tree = pyast.parse(source)
    except (SyntaxError, ValueError):
        return None
    starts = _line_starts(source)
    whole_lines = lambda node: Piece(starts[node.lineno - 1], starts[node.end_lineno], False)  # noqa: E731
    importer = cls = None
    imported = False
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == MODULE for a in node.names):
            imported = True
        if isinstance(node, ast.ImportFrom) and importer is None and any(a.name == "bbox_iou" for a in node.names):
            importer = node
        if isinstance(node, ast.ClassDef) and node.name == site.cls and cls is None:
            cls = node
    if importer is None or cls is None or cls.decorator_list or importer.lineno == cls.lineno:
        return None
    if _shares_a_line(tree, importer):  # `import x; from .metrics import bbox_iou` and the like
        return None
    return _LossPieces(whole_lines(importer), whole_lines(cls), imported)


def _shares_a_line(tree: ast.Module, node: ast.stmt) -> bool:
    return sum(1 for other in tree.body if other.lineno <= node.end_lineno and other.end_lineno >= node.lineno) > 1


def edit_loss_file(source: bytes, edit: LossCallEdit, file: str) -> bytes:
    """The edited bytes: only the class and the import line are parsed, unless the file's shape needs a
    whole-file parse."""
    pieces = _locate(source, edit.site)
    if pieces is None:
        return edit_loss_file_whole(source, edit, file)
    config = cst.PartialParserConfig(default_newline=_first_newline(source))
    try:
        cls = cst.parse_module(source[pieces.cls.start:pieces.cls.end], config=config)
        edited = [(pieces.cls, edit.edit_call(cls).bytes)]
        if not pieces.imported:
            header = cst.parse_module(source[pieces.imports.start:pieces.imports.end], config=config)
            edited.append((pieces.imports, _add_import(header).bytes))
    except cst.ParserSyntaxError:
        return edit_loss_file_whole(source, edit, file)
    except ValueError as exc:
        raise LossEditConflict(file, str(exc)) from None
    return _splice(source, edited)


def classify_loss_file(source: bytes, edit: LossCallEdit, file: str) -> Classification:
    """Pending, applied or conflict, parsing only the class and the import line where the file allows."""
    pieces = _locate(source, edit.site)
    if pieces is None:
        return edit.classify(_parse(source, file))
    config = cst.PartialParserConfig(default_newline=_first_newline(source))

    def inspect():
        cls = cst.parse_module(source[pieces.cls.start:pieces.cls.end], config=config)
        header = cst.parse_module(source[pieces.imports.start:pieces.imports.end], config=config)
        _add_import(header)  # ours can be imported beside bbox_iou
        return _plan(cls, edit.site, edit.call), pieces.imported

    try:
        return _classification(inspect)
    except cst.ParserSyntaxError:
        return edit.classify(_parse(source, file))


def import_destination(source: bytes, loss_file: str) -> str | None:
    """Where the IoU module goes, relative to the checkout root: the package folder `bbox_iou` is imported
    from (`.metrics` beside the loss file, `ultralytics.utils.metrics`, `utils.metrics`, ...)."""
    tree = pyast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == "bbox_iou" for a in node.names) and node.module:
            package = node.module.rpartition(".")[0].split(".") if "." in node.module else []
            if node.level:
                folder = loss_file.split("/")[:-node.level]
                return "/".join([*folder, *package, f"{MODULE}.py"])
            if package:
                return "/".join([*package, f"{MODULE}.py"])
    return None
