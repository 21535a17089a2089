"""Facts about one built model: which layers are new modules, what channels parse_model declared for
every row, and the input sizes the checks use."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

# Hand-patched checkouts (no .yolopatch/ state) give no list of new module files; then a layer counts as
# new when its class lives outside the target's stock module files.
_STOCK_MODULE_FILES = {
    "ultralytics": {"block", "conv", "head", "transformer", "activation", "utils", "tasks", "modules"},
    "yolov5": {"common", "experimental", "yolo"},
}


PLACEHOLDER = "BackboneLevel"   # the support module's parameter-free layer for a backbone's later rows


@dataclass
class NewModule:
    position: int          # index in model.model
    row: int               # the YAML row, in the YAML's own numbering (yaml_row)
    layer: torch.nn.Module
    declared: object = None  # the recipe's declaration (protocol.ModuleDeclaration), None if unknown

    @property
    def name(self) -> str:
        return type(_unwrapped(self.layer)).__name__

    @property
    def label(self) -> str:
        return f"{self.name} (row {self.row})"


def is_multi_output(layer) -> bool:
    return hasattr(layer, "feature_strides") and hasattr(layer, "feature_channels")


def is_placeholder(layer) -> bool:
    return type(layer).__name__ == PLACEHOLDER


def backbone_levels(layer) -> int:
    """Rows a multi-output backbone fills: row k holds stride 2**(k + 1), up to its largest stride."""
    return int(max(int(s) for s in layer.feature_strides)).bit_length() - 1


def yaml_row(model, layer) -> int:
    """A layer's row in the YAML's own numbering. Either layout of a multi-output backbone is understood:
    one layer whose `.i` is the row of its last level (nothing after it), or the aligned layout where it
    is row `.i` and BackboneLevel placeholders fill the rows after it (then `.i` is the row of every layer)."""
    index = int(getattr(layer, "i", 0))
    if is_multi_output(layer) and not any(is_placeholder(m) for m in model.model):
        return index - (backbone_levels(layer) - 1)
    return index


def alignment_problem(model, yaml_rows: list) -> str | None:
    """Whether YAML row i is `model.model[i]` with `.i == i` (what `freeze=N` and the layer table rely on):
    one layer per row, a multi-output backbone's later rows filled by placeholders. The older layout (one
    layer for the whole backbone, as a checkout patched by hand may build it) is not held against the model:
    yaml_row numbers its rows."""
    layers = list(model.model)
    if any(is_multi_output(m) for m in layers) and not any(is_placeholder(m) for m in layers):
        return None
    expected = len(yaml_rows) + sum(backbone_levels(m) - 1 for m in layers if is_multi_output(m))
    indices = [int(getattr(m, "i", position)) for position, m in enumerate(layers)]
    wrong = [(position, index) for position, index in enumerate(indices) if index != position]
    if len(layers) == expected and not wrong:
        return None
    said = [f"{len(layers)} layers for {expected} YAML rows"] if len(layers) != expected else []
    said += [f"layer {position} says row {index}" for position, index in wrong[:3]]
    return "the layer table does not match the YAML rows (freeze=N would freeze other layers): " + ", ".join(said)


def _unwrapped(layer):
    """The module a YAML row names: parse_model wraps n > 1 repeats of it in an nn.Sequential."""
    if isinstance(layer, torch.nn.Sequential) and len(layer) and not str(getattr(layer, "type", "")).startswith(
            ("torch.nn", "nn.")):
        return layer[0]
    return layer


def new_modules(model, spec) -> list:
    declared = spec.modules
    files = set(spec.new_module_files)
    stock = _STOCK_MODULE_FILES[spec.family]
    found = []
    for position, layer in enumerate(model.model):
        cls = type(_unwrapped(layer))
        module = cls.__module__ or ""
        if is_placeholder(layer):
            continue
        if files or declared:
            new = cls.__name__ in declared or module in files
        else:
            new = not module.startswith(("torch.", "torchvision.")) and module.rsplit(".", 1)[-1] not in stock
        if new:
            found.append(NewModule(position, yaml_row(model, layer), layer, declared.get(cls.__name__)))
    return found


def loaded_weights(news: list) -> str:
    """What the new modules loaded through their `weights` argument (their `loaded_weights` attribute)."""
    found = [f"{n.label} {getattr(_unwrapped(n.layer), 'loaded_weights')}" for n in news
             if getattr(_unwrapped(n.layer), "loaded_weights", None)]
    return "; ".join(found)


class ParseWatch:
    """Wrap the parser module's parse_model for one build and keep, from its own frame when it returns:
    its final `ch` list (the output channels it recorded for every row, i.e. what each layer declared to
    the next ones; None where a row recorded something else), the layers it made, and, when an exception
    escaped it, the row it was constructing (`failed_row`: YAML row, module name, `from`)."""

    def __init__(self, parser_module):
        self.module = parser_module
        self.channels: list = []
        self.layers = None
        self.failed_row = None

    def __enter__(self):
        original = self.module.parse_model
        code = original.__code__

        def profile(frame, event, arg):
            if event != "return" or frame.f_code is not code:
                return
            local = frame.f_locals
            # one entry per row, kept in place: a row recording a list (YOLOv9's CBLinear) is None, not dropped
            self.channels = [int(c) if isinstance(c, int) else None for c in local.get("ch", [])]
            if isinstance(arg, tuple) and arg:      # returned (layers, save)
                self.layers = arg[0]
            elif "i" in local:                      # an exception left parse_model while it built row i
                module = local.get("m")
                name = getattr(module, "__name__", None) or str(module)
                self.failed_row = (local["i"], name, local.get("f"))

        def wrapper(*args, **kwargs):
            previous = sys.getprofile()
            sys.setprofile(profile)
            try:
                return original(*args, **kwargs)
            finally:
                sys.setprofile(previous)

        self.original = original
        self.module.parse_model = wrapper
        return self

    def __exit__(self, *exc):
        self.module.parse_model = self.original
        return False


def max_stride(model) -> int:
    stride = getattr(model, "stride", None)
    try:
        value = int(max(float(s) for s in stride))
    except (TypeError, ValueError):
        value = 32
    return max(32, value)


def check_sizes(model) -> list:
    """Two input sizes for the shape checks, a square and a non-square one, multiples of the max stride."""
    s = max_stride(model)
    return [(4 * s, 4 * s), (3 * s, 5 * s)]


def train_size(model) -> tuple:
    s = max_stride(model)
    return (3 * s, 5 * s)


def seeded_input(size: tuple, batch: int = 1, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size[0], size[1], generator=generator)
