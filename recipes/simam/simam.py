"""SimAM: a simple, parameter-free attention module (Yang, Zhang, Li and Xie, ICML 2021).

Each activation t is weighted by the inverse of its minimal energy
    e_t = 4 (sigma^2 + lambda) / ((t - mu)^2 + 2 sigma^2 + 2 lambda),
    1 / e_t = (t - mu)^2 / (4 (sigma^2 + lambda)) + 1/2,
with mu and sigma^2 = sum (x - mu)^2 / (H * W - 1) taken over the positions of its channel, and the
output is x * sigmoid(1 / e_t). lambda = 1e-4 as in the authors' code (ZjjConan/SimAM).
"""

import torch
from torch import nn


class SimAM(nn.Module):
    """Same-width attention without parameters: SimAM(c1, e_lambda=1e-4); c1 is accepted and unused."""

    def __init__(self, c1: int = 0, e_lambda: float = 1e-4):
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        n = max(h * w - 1, 1)  # a 1x1 map has no spread; the authors' n = 0 would give 0/0
        d = (x - x.mean((2, 3), keepdim=True)).pow(2)
        inverse_energy = d / (4 * (d.sum((2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(inverse_energy)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"
