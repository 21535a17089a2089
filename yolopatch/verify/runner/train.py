"""Step 7: one optimisation step through the target's own loss for the model's task, on a synthetic batch
with that task's targets (boxes, masks, keypoints, rotated boxes or class labels)."""

from __future__ import annotations

import math

import torch

from ..protocol import StepFailure
from .layers import seeded_input, train_size
from .tasks import targets

def synthetic_batch(task: str, model) -> tuple:
    """Two seeded images and the task's labels for them (tasks.targets)."""
    size = train_size(model)
    return seeded_input(size, batch=2, seed=2), targets(task, model, size)


def _backward(adapter, model, task: str, imgs, labels: dict) -> float:
    model.zero_grad(set_to_none=True)
    loss = adapter.loss(model, task, imgs, labels)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise StepFailure(f"the loss is {value} (not finite) on a synthetic batch of 2 at "
                          f"{imgs.shape[2]}x{imgs.shape[3]}")
    loss.backward()
    return value


def _non_finite(news: list) -> list:
    problems = []
    for new in news:
        bad = [n for n, p in new.layer.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        if bad:
            problems.append(f"{new.label}: non-finite gradients in {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")
    return problems


def _starved(news: list) -> list:
    """Parameters of new modules that got no gradient or an all-zero one."""
    problems = []
    for new in news:
        dead = [n for n, p in new.layer.named_parameters()
                if p.requires_grad and (p.grad is None or not bool(p.grad.any()))]
        if dead:
            problems.append(f"{new.label}: no gradient reaches {len(dead)} parameter tensor(s): {', '.join(dead[:4])}"
                            f"{' ...' if len(dead) > 4 else ''}")
    return problems


# Stochastic depth drops whole residual branches at random (ours, timm's DropPath, torchvision's
# StochasticDepth): on a batch of two a dropped branch gets no gradient, which is not a fault.
_STOCHASTIC_DEPTH = ("DropPath", "StochasticDepth")


def hold_stochastic_depth(model) -> None:
    for module in model.modules():
        if type(module).__name__ in _STOCHASTIC_DEPTH:
            module.eval()


def optimizer_for(model):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)


def train_step(adapter, model, task: str, news: list, optimizer) -> str:
    """One SGD step through the task's own loss; raises StepFailure naming what went wrong. The optimizer's
    state is saved with the checkpoint, as the trainers save it."""
    model.train()
    hold_stochastic_depth(model)
    imgs, labels = synthetic_batch(task, model)
    value = _backward(adapter, model, task, imgs, labels)
    problems = _non_finite(news)
    if problems:
        raise StepFailure("; ".join(problems))
    starved = _starved(news)
    optimizer.step()
    steps = 1
    if starved:
        # A zero-initialised gate (e.g. the last BatchNorm of a residual branch, timm's zero_init_last)
        # blocks the gradient of the layers before it at initialisation only: after one step it must flow.
        value, steps = _backward(adapter, model, task, imgs, labels), 2
        problems = _non_finite(news) or _starved(news)
        optimizer.step()
        if problems:
            raise StepFailure("; ".join(problems) + " (after two optimisation steps)")
    optimizer.zero_grad(set_to_none=True)
    if not news:
        return f"loss {value:.4g}; no new modules in this model"
    reached = sum(1 for n in news for p in n.layer.parameters() if p.requires_grad)
    after = " after the second step (zero-initialised gates at the first)" if steps == 2 else ""
    return f"loss {value:.4g}; gradients reach all {reached} parameter tensors of {len(news)} new module(s){after}"
