"""Step 6: parameters and GFLOPs at 640x640, counted with torch's own FlopCounterMode (not thop, which
reports 0 on any error)."""

from __future__ import annotations

from copy import deepcopy

import torch
from torch.utils.flop_counter import FlopCounterMode

FLOPS_SIZE = 640


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_copy(model):
    """A copy of the model whose parameters and buffers live on the meta device: no weight bytes copied."""
    memo = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return deepcopy(model, memo)


def _count(model, x) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def gflops(model, size: int = FLOPS_SIZE) -> float:
    """Shape-only counting on the meta device in train mode (heads skip the box decoding, which holds no
    matrix products but reads tensor values); a real eval forward when the meta pass is not possible."""
    try:
        flops = _count(_meta_copy(model).train(), torch.empty(1, 3, size, size, device="meta"))
    except Exception:  # some module reads tensor values: count on a real forward instead
        was_training = model.training
        model.eval()
        try:
            flops = _count(model, torch.zeros(1, 3, size, size))
        finally:
            model.train(was_training)
    return flops / 1e9
