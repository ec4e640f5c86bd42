"""Straightforward geomloss computation of Scheme I and Scheme II, for agreement checks.

This follows the published selectors step by step: one dense ``SamplesLoss`` call per
client (self-terms included), the transport map ``z - N grad_z S_eps`` by autograd,
and a plain greedy that evaluates every remaining candidate at every pick. It is slow
on purpose; :mod:`bench_schemes` times it next to selbias-audit's selectors.
"""

from __future__ import annotations

import torch
from geomloss import SamplesLoss
from torch import Tensor


def _loss(blur: float, scaling: float, potentials: bool) -> SamplesLoss:
    return SamplesLoss(
        "sinkhorn",
        p=2,
        blur=blur,
        scaling=scaling,
        debias=True,
        potentials=potentials,
        backend="tensorized",
    )


def _calibrated(potential: Tensor) -> Tensor:
    count = potential.shape[0]
    return (potential - potential.mean()) * (count / (count - 1))


def scheme1_reference(
    candidates: Tensor,
    references: list[Tensor],
    count: int,
    blur: float = 0.05,
    scaling: float = 0.9,
) -> Tensor:
    """Return the (count,) indices of Scheme I in pick order."""
    loss = _loss(blur, scaling, potentials=True)
    columns = []
    for reference in references:
        potential, _ = loss(candidates, reference)
        scores = _calibrated(potential.view(-1).to(torch.float64))
        span = scores.max() - scores.min()
        span = span if span > 0 else torch.ones_like(span)
        columns.append((1.0 - (scores - scores.min()) / span).clamp(min=0.0))
    utilities = torch.stack(columns, dim=1)
    totals = torch.zeros(utilities.shape[1], dtype=torch.float64)
    available = torch.ones(utilities.shape[0], dtype=torch.bool)
    picks = []
    for _ in range(count):
        gains = torch.log1p(utilities / (1.0 + totals)).sum(dim=1)
        gains[~available] = -torch.inf
        best = int(torch.argmax(gains))  # first index among equal maxima
        picks.append(best)
        available[best] = False
        totals += utilities[best]
    return torch.tensor(picks, dtype=torch.int64)


def scheme2_reference(
    candidates: Tensor,
    references: list[Tensor],
    count: int,
    blur: float = 0.05,
    scaling: float = 0.9,
    steps: int = 10,
) -> tuple[Tensor, Tensor]:
    """Return the kept indices (lowest scores first) and the final support of Scheme II."""
    value_loss = _loss(blur, scaling, potentials=False)
    support = candidates.clone()
    size = support.shape[0]
    for _ in range(steps):
        transported = []
        for reference in references:
            moving = support.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(value_loss(moving, reference), [moving])
            transported.append(support - size * gradient)
        support = torch.stack(transported).mean(dim=0).detach()
    potential, _ = _loss(blur, scaling, potentials=True)(candidates, support)
    scores = _calibrated(potential.view(-1).to(torch.float64))
    order = torch.sort(scores, stable=True).indices
    return order[:count], support
