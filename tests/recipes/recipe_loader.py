"""Load a shipped recipe module file straight from recipes/ (the way a target imports its copy)."""

import importlib.util
import sys
import types
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHARED = RECIPES / "_shared"


def load_recipe_module(recipe: str, filename: str):
    """Import recipes/<recipe>/<filename> the way a target imports its copy: as a module of a package that also
    holds the shared files (recipes/_shared/, e.g. yolopatch_weights.py) yolopatch copies beside it."""
    path = RECIPES / recipe / filename
    package = f"_recipe_{recipe}"
    if package not in sys.modules:
        holder = types.ModuleType(package)
        holder.__path__ = [str(RECIPES / recipe), str(SHARED)]
        sys.modules[package] = holder
    name = f"{package}.{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def emulate_initialize_weights(model):
    """What the targets' initialize_weights does to a custom module: BatchNorm eps/momentum, and (older
    releases) in-place activations."""
    from torch import nn

    inplace_types = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.LeakyReLU, nn.SiLU)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
        elif isinstance(m, inplace_types):
            m.inplace = True
    return model
