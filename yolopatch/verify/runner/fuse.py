"""Step `fuse`: the target's own `fuse()` (what its validators, predictors and exporters call) must fold
every conv + BatchNorm pair of the new modules and leave what the model computes unchanged.

A BatchNorm left in a new module after fuse() costs inference time in every fused run (ultralytics and
YOLOv5 fold only their own Conv classes; the patched fuse() also folds the structures recipe modules use:
see yolopatch/runtime/yolopatch_fuse.py). A fused model that computes something else means a
`forward_fuse` that does not do what `forward` does. The comparison is made row by row (every layer of
the model, not only the head's output): at initialisation a detection head's output hardly depends on its
inputs (its biases dominate), so only the features show such a fault reliably, and the first row that
differs names the layer.
"""

from __future__ import annotations

import inspect

import torch

from ..protocol import StepFailure
from .adapters import primary_tensor
from .amp import tensors_in
from .checkpoint import compare
from .layers import seeded_input, train_size, yaml_row

UNFUSED = "the unfused eval model"
TOLERANCE = 1e-4   # relative to 1 + the largest magnitude of the compared output, as the reload step compares


def batchnorms(module) -> list:
    """Names (relative to `module`) of the BatchNorm layers inside it."""
    return [name for name, m in module.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _fuse(model):
    parameters = inspect.signature(model.fuse).parameters
    fused = model.fuse(verbose=False) if "verbose" in parameters else model.fuse()
    return fused if isinstance(fused, torch.nn.Module) else model


def _run(model, x) -> tuple:
    """(the model's main output, every row's output tensors) for input x, in eval mode without gradients."""
    rows: dict = {}
    handles = [layer.register_forward_hook(
        lambda _m, _i, out, k=k: rows.__setitem__(k, [t.detach().clone() for t in tensors_in(out)]))
        for k, layer in enumerate(model.model)]
    try:
        with torch.no_grad():
            return primary_tensor(model(x)).clone(), rows
    finally:
        for handle in handles:
            handle.remove()


def _row_label(model, k: int) -> str:
    layer = model.model[k]
    return f"row {yaml_row(model, layer)} ({type(layer).__name__})"


def _first_difference(model, expected: dict, actual: dict) -> str | None:
    for k in sorted(expected)[:-1]:   # the head's output is compared below, as the model's output
        for j, (e, a) in enumerate(zip(expected[k], actual.get(k, []))):
            try:
                compare(a, e, f"{_row_label(model, k)} output {j}", TOLERANCE, reference=UNFUSED)
            except StepFailure as exc:
                return str(exc)
    return None


def fuse_step(model, news: list, kind: str) -> str:
    model.eval()
    x = seeded_input(train_size(model), seed=4)
    expected, expected_rows = _run(model, x)
    before = sum(len(batchnorms(new.layer)) for new in news)
    fused = _fuse(model)
    left = [(new, names) for new in news for names in [batchnorms(new.layer)] if names]
    # a shipped recipe keeps every pair foldable; a module file of the user's (yolopatch add) is folded as far
    # as its structure allows, and what stays is reported
    kept = [(new, names) for new, names in left if _users_own(new)]
    failing = [(new, names) for new, names in left if not _users_own(new)]
    problems = []
    if failing:
        problems.append(f"{_count(failing)} of {before} BatchNorm layer(s) of new modules left after fuse(): "
                        f"{_listed(failing)}")
    actual, actual_rows = _run(fused, x)
    differs = _first_difference(fused, expected_rows, actual_rows)
    try:
        agreement = compare(actual, expected, "the fused model's output", TOLERANCE, kind == "rtdetr", UNFUSED)
    except StepFailure as exc:
        differs = differs or str(exc)
    if differs:
        problems.append(f"fuse() changes what the model computes: {differs}")
    if problems:
        raise StepFailure("; ".join(problems))
    folded = f"fuse() folded all {before} BatchNorm layer(s) of new modules" if before else \
        "no BatchNorm layers in new modules"
    if kept:
        folded = (f"fuse() folded {before - _count(kept)} of {before} BatchNorm layer(s) of new modules; left in "
                  f"your added modules, whose structure fuse() cannot fold (a conv and its BatchNorm as siblings "
                  f"called from forward): {_listed(kept)}")
    return f"{folded}; every row's output equals the unfused eval model's ({agreement} at the head)"


def _users_own(new) -> bool:
    """A module of the checkout's own recipes (a file added with `yolopatch add`)."""
    return new.declared is not None and new.declared.local


def _count(left: list) -> int:
    return sum(len(names) for _, names in left)


def _listed(left: list) -> str:
    return "; ".join(f"{new.label}: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}" for new, names in left)
