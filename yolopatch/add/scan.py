"""What a module file defines, read statically with `ast`: its classes (bases, constructor parameters,
what forward returns, which other classes of the file they use) and its imports."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from ..errors import RefusedError

_MODULE_BASES = {"nn.Module", "torch.nn.Module", "Module", "torch.nn.modules.module.Module"}


@dataclass(frozen=True)
class Param:
    name: str
    default: str | None    # the default's source text, None when required


@dataclass
class ClassInfo:
    name: str
    bases: list[str]
    params: list[Param] | None        # constructor parameters after self; None when unknown
    var_args: bool = False            # *args or **kwargs
    returns_several: bool = False     # forward returns a list / tuple of maps
    has_forward: bool = False
    uses: set[str] = field(default_factory=set)   # names of other classes of the file it references
    is_module: bool = False

    def signature(self) -> str:
        if self.params is None:
            return f"{self.name}(?)"
        parts = [p.name if p.default is None else f"{p.name}={p.default}" for p in self.params]
        return f"{self.name}({', '.join(parts + (['...'] if self.var_args else []))})"


@dataclass
class Scan:
    classes: dict[str, ClassInfo]
    imports: list[tuple[str, int]]    # (module, relative level) of every import statement


def scan(source: bytes, file: str) -> Scan:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise RefusedError(f"{file} does not parse as Python{where}: {getattr(exc, 'msg', exc)}; nothing was written") from None
    classes = {node.name: _class(node) for node in tree.body if isinstance(node, ast.ClassDef)}
    for info in classes.values():
        info.uses &= set(classes) - {info.name}
    _mark_modules(classes, tree)
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imports.append((node.module or "", node.level))
        elif isinstance(node, ast.Import):
            imports.extend((alias.name, 0) for alias in node.names)
    return Scan(classes, imports)


def _dotted(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - ast.unparse handles every expression node
        return ""


def _class(node: ast.ClassDef) -> ClassInfo:
    info = ClassInfo(node.name, [_dotted(b) for b in node.bases], None)
    info.uses = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | set(info.bases)
    for member in node.body:
        if isinstance(member, ast.FunctionDef) and member.name == "__init__":
            info.params, info.var_args = _params(member.args)
        if isinstance(member, ast.FunctionDef) and member.name == "forward":
            info.returns_several, info.has_forward = _returns_several(member), True
    return info


def _params(args: ast.arguments) -> tuple[list[Param], bool]:
    positional = [*args.posonlyargs, *args.args][1:]  # after self
    defaults = [None] * (len(positional) - len(args.defaults)) + [_dotted(d) for d in args.defaults]
    params = [Param(a.arg, d) for a, d in zip(positional, defaults)]
    params += [Param(a.arg, _dotted(d) if d is not None else None) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    return params, bool(args.vararg or args.kwarg)


def _returns_several(function: ast.FunctionDef) -> bool:
    """forward returns a list or tuple display of two or more values, or a name it builds as a list."""
    lists = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.List, ast.ListComp)):
            lists |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    for node in ast.walk(function):
        if isinstance(node, ast.Return) and node.value is not None:
            value = node.value
            if isinstance(value, ast.Call) and _dotted(value.func) in ("tuple", "list") and len(value.args) == 1:
                value = value.args[0]
            if isinstance(value, (ast.List, ast.Tuple)) and len(value.elts) >= 2:
                return True
            if isinstance(value, ast.ListComp) or (isinstance(value, ast.Name) and value.id in lists):
                return True
    return False


def _mark_modules(classes: dict[str, ClassInfo], tree: ast.Module) -> None:
    """nn.Module subclasses: a base spelled as torch's Module, a class of the file that is one, or a class
    imported from the target package or torch (Conv, C2f: the target's own modules)."""
    imported_modules = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in
                                                 ("ultralytics", "yolov5", "models", "torch", "timm")):
            imported_modules |= {alias.asname or alias.name for alias in node.names}
    changed = True
    while changed:
        changed = False
        for info in classes.values():
            if info.is_module:
                continue
            if any(b in _MODULE_BASES or b in imported_modules or (b in classes and classes[b].is_module)
                   for b in info.bases):
                info.is_module = changed = True
    for info in classes.values():  # a subclass without its own constructor or forward takes its base's
        base = next((classes[b] for b in info.bases if b in classes), None)
        own_forward = info.has_forward
        while base is not None and (info.params is None or not own_forward):
            if info.params is None:
                info.params, info.var_args = base.params, base.var_args
            if not own_forward and base.has_forward:
                info.returns_several, own_forward = base.returns_several, True
            base = next((classes[b] for b in base.bases if b in classes), None)
        if info.params is None and info.is_module and all(b in _MODULE_BASES for b in info.bases):
            info.params = []  # torch's own Module.__init__ takes no arguments
