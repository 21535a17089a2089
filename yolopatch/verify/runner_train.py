"""Step 7: one optimisation step through the target's own loss on a synthetic batch."""

from __future__ import annotations

import torch

from runner_model import seeded_input, train_size

# (image index, class, cx, cy, w, h), normalised: two boxes per image of a batch of two
_BOXES = [(0, 0, 0.30, 0.35, 0.20, 0.30), (0, 1, 0.70, 0.60, 0.30, 0.25),
          (1, 2, 0.50, 0.50, 0.40, 0.40), (1, 0, 0.25, 0.70, 0.15, 0.20)]


class StepFailure(Exception):
    """A check found a fault; the message names it."""


def synthetic_batch(model) -> tuple:
    nc = int(getattr(model, "nc", 0) or (getattr(model, "yaml", {}) or {}).get("nc", 1) or 1)
    labels = torch.tensor([(i, c % nc, x, y, w, h) for i, c, x, y, w, h in _BOXES], dtype=torch.float32)
    return seeded_input(train_size(model), batch=2, seed=2), labels


def _gradient_problems(news: list) -> list:
    problems = []
    for new in news:
        dead, broken = [], []
        for name, p in new.layer.named_parameters():
            if not p.requires_grad:
                continue
            if p.grad is None or not bool(p.grad.any()):
                dead.append(name)
            elif not bool(torch.isfinite(p.grad).all()):
                broken.append(name)
        if dead:
            problems.append(f"{new.label}: no gradient reaches {len(dead)} parameter tensor(s): {', '.join(dead[:4])}"
                            f"{' ...' if len(dead) > 4 else ''}")
        if broken:
            problems.append(f"{new.label}: non-finite gradients in {', '.join(broken[:4])}")
    return problems


def train_step(adapter, model, news: list) -> str:
    model.train()
    imgs, labels = synthetic_batch(model)
    model.zero_grad(set_to_none=True)
    loss = adapter.loss(model, imgs, labels)
    value = float(loss.detach())
    if not torch.isfinite(loss.detach()):
        raise StepFailure(f"the loss is {value} (not finite) on a synthetic batch of 2 at "
                          f"{imgs.shape[2]}x{imgs.shape[3]}")
    loss.backward()
    problems = _gradient_problems(news)
    if problems:
        raise StepFailure("; ".join(problems))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    reached = sum(1 for n in news for p in n.layer.parameters() if p.requires_grad)
    if not news:
        return f"loss {value:.4g}; no new modules in this model"
    return f"loss {value:.4g}; gradients reach all {reached} parameter tensors of {len(news)} new module(s)"
