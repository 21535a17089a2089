"""Which YAML row a build or a first forward failed at, and what it received.

parse_model's own frame tells the row being constructed when an exception escapes it (layers.ParseWatch);
during a forward, process-wide forward pre-hooks record every layer parse_model made (the modules with the
`i` and `f` attributes it attaches) with the shapes it was given, and forward hooks take it off again when
it returns: a layer left over when an exception escapes is the row that failed. Rows are named in the
YAML's own numbering (layers.yaml_row).
"""

from __future__ import annotations

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from .layers import yaml_row


def shapes_of(value) -> str:
    """The shapes a layer received: a tensor's shape, a list of them, None for a missing input."""
    if isinstance(value, torch.Tensor):
        return str(list(value.shape))
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(shapes_of(v) for v in value) + "]"
    return type(value).__name__


def _from_rows(row: int, f) -> str:
    written = f if isinstance(f, (list, tuple)) else [f]
    absolute = [row + x if isinstance(x, int) and x < 0 else x for x in written]
    if list(absolute) == list(written):
        return f"from {f}"
    return f"from {f} = row{'s' if len(absolute) > 1 else ''} {', '.join(str(r) for r in absolute)}"


def layer_name(layer) -> str:
    """The module a YAML row names (parse_model keeps it in `.type`; n > 1 repeats are an nn.Sequential)."""
    kind = getattr(layer, "type", "") or type(layer).__name__
    return str(kind).rsplit(".", 1)[-1]


class RowTrace:
    """Context manager around a build or a forward; explain(exc) names the failing row, or returns None."""

    def __init__(self, watch=None, layers=None):
        self.watch = watch              # a layers.ParseWatch active over the same build, or None
        self.layers = layers            # the model's layers, when the model exists already
        self.running: list = []         # (layer, shapes received) of layers entered and not yet returned
        self.handles: list = []

    def __enter__(self):
        self.handles = [register_module_forward_pre_hook(self._enter), register_module_forward_hook(self._leave)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return False

    def _enter(self, module, args):
        if hasattr(module, "f") and hasattr(module, "i") and hasattr(module, "type"):
            self.running.append((module, shapes_of(args[0] if len(args) == 1 else list(args))))

    def _leave(self, module, _args, _output):
        if self.running and self.running[-1][0] is module:
            self.running.pop()

    def explain(self, exc: BaseException, describe) -> str | None:
        """`row R (Module, from F = rows …) received SHAPES: <the exception>`, or, when parse_model raised
        while constructing a row, `row R (Module, from F) could not be built: …`; None if no row is known."""
        if self.running:
            layer, shapes = self.running[-1]
            layers = self.layers if self.layers is not None else getattr(self.watch, "layers", None)
            row = yaml_row(_Layers(layers if layers is not None else [layer]), layer)
            return f"row {row} ({layer_name(layer)}, {_from_rows(row, layer.f)}) received {shapes}: {describe(exc)}"
        failed = getattr(self.watch, "failed_row", None)
        if failed:
            row, module, f = failed
            return f"row {row} ({module}, {_from_rows(row, f)}) could not be built: {describe(exc)}"
        return None


class _Layers:
    """The shape layers.yaml_row expects (an object with a `model` list)."""

    def __init__(self, layers):
        self.model = list(layers)
