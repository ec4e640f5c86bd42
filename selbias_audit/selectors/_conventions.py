"""Optimal-transport conventions shared by every selector: cost, blur and annealing.

This module is the one place that fixes how a ``blur`` becomes an entropic
regularisation and how the ground cost is scaled, so that scores, receipts and the
reference solvers (geomloss, POT) agree on what a number means.

Conventions
-----------
* Ground cost ``C(x, y) = ||x - y||^2 / 2``, the geomloss ``p = 2`` cost. POT's
  ``ot.dist`` returns ``||x - y||^2`` without the half, so a POT solve with
  ``reg = epsilon`` on ``ot.dist(x, y) / 2`` solves the same problem.
* ``epsilon = blur ** p`` with ``p = 2``; ``blur`` is in feature units, which are
  standard deviations once the caller has standardised the features.
* epsilon-scaling starts at ``diameter ** p`` and multiplies epsilon by
  ``scaling ** p`` per level until ``blur ** p``, where ``diameter`` is the diagonal
  of the bounding box of both point clouds. This is the schedule of geomloss 0.3
  ``SamplesLoss(scaling=...)``, so a level count here matches an iteration count there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

COST_EXPONENT = 2
"""p: the cost is ||x - y||^p / p."""

COST_NAME = "half squared Euclidean, ||x - y||^2 / 2"
"""Name of the ground cost in receipts."""

DEFAULT_BLUR = 0.05
DEFAULT_SCALING = 0.9

DEFAULT_TOL = 1e-3
"""L1 error of the plan's marginals (total mass 1) under which a solve counts as converged."""

DEFAULT_FINAL_ITER = 1
"""Iterations at the final epsilon after a cold-started schedule, one as in geomloss.
More of them lower the marginal error only slowly at small blur. On workload A of
benchmarks/README.md (standardised, 16-d) one client's error went from 0.086 after the
schedule to 0.055 after 50 more iterations."""

DEFAULT_WARM_ITER = 1
"""Iterations at the final epsilon of a warm-started solve (a barycenter step after the
first), which first resumes the schedule at a blur set by the caller."""

DEFAULT_START_ITER = 20
"""Iteration cap at the first annealing level of a cold start whose higher levels were
skipped because they exceed every cost (see ``solve_cross``)."""

DEFAULT_SYMMETRIC_ITER = 50
"""Iteration cap of the symmetric self-problem OT(alpha, alpha). In the tests and
benchmarks its averaged update shrank the error about tenfold every three iterations."""

DEFAULT_CACHE_BYTES = 2 * 1024**3
"""Largest cost matrix kept in memory; larger ones are rebuilt block by block each pass."""

BLOCK_ELEMENTS = 1 << 20
"""Entries of the cost matrix processed per block (4 MiB in float32)."""

DEFAULT_TRUNCATE_FROM = 8 * BLOCK_ELEMENTS
"""Minimum cost-matrix entries for truncated sweeps to pay off. On the 2-core machine
of benchmarks/README.md they made a 20000 x 2000 client solve 12 % faster and a
2000 x 500 one 40 % slower, because a dense pass over a million entries costs about as
much as the gathers and the kernel builds."""


def epsilon_from_blur(blur: float, p: int = COST_EXPONENT) -> float:
    """Return the entropic regularisation ``epsilon = blur ** p``."""
    if not blur > 0:
        raise ValueError(f"blur must be positive, got {blur}")
    return float(blur) ** p


def blur_from_epsilon(epsilon: float, p: int = COST_EXPONENT) -> float:
    """Return the blur ``epsilon ** (1 / p)`` of an entropic regularisation."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    return float(epsilon) ** (1.0 / p)


def half_squared_distances(x: Tensor, y: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Return the cost matrix ``C_ij = ||x_i - y_j||^2 / 2``.

    Parameters
    ----------
    x : Tensor, shape (N, d)
    y : Tensor, shape (M, d)
    out : Tensor, shape (N, M), optional
        Where to write the result, for example a slice of a larger cost matrix.

    Returns
    -------
    Tensor, shape (N, M)
        Non-negative costs in the dtype of ``x``. The expansion
        ``|x|^2 / 2 + |y|^2 / 2 - <x, y>`` can round below zero, hence the clamp.
    """
    half_squared_x = 0.5 * (x * x).sum(dim=1, keepdim=True)
    half_squared_y = 0.5 * (y * y).sum(dim=1)
    cost = torch.addmm(half_squared_y, x, y.T, alpha=-1.0, out=out)
    return cost.add_(half_squared_x).clamp_(min=0.0)


def bounding_box_diameter(x: Tensor, y: Tensor) -> float:
    """Return the diagonal of the bounding box of both point clouds, an upper bound
    on every distance ``||x_i - y_j||``."""
    lower = torch.minimum(x.min(dim=0).values, y.min(dim=0).values)
    upper = torch.maximum(x.max(dim=0).values, y.max(dim=0).values)
    return float((upper - lower).norm().item())


def epsilon_schedule(
    diameter: float, blur: float, scaling: float, p: int = COST_EXPONENT
) -> list[float]:
    """Return the annealing temperatures from ``diameter ** p`` down to ``blur ** p``.

    The list starts at ``diameter ** p``, continues with ``exp(e)`` for ``e`` from
    ``p log(diameter)`` down to (not including) ``p log(blur)`` in steps of
    ``p log(scaling)``, and ends at ``blur ** p``. Point clouds narrower than the blur
    get the two-level list ``[blur ** p, blur ** p]``.
    """
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must be in (0, 1), got {scaling}")
    final = epsilon_from_blur(blur, p)
    if not diameter > blur:
        return [final, final]
    start, stop, step = p * math.log(diameter), p * math.log(blur), p * math.log(scaling)
    # Same count and values as numpy.arange(start, stop, step), which geomloss uses.
    count = math.ceil((stop - start) / step)
    return [diameter**p] + [math.exp(start + i * step) for i in range(count)] + [final]


@dataclass(frozen=True)
class SinkhornSettings:
    """Numerical settings of one family of Sinkhorn solves.

    ``blur`` and ``scaling`` come from the run description; the rest are solver
    limits recorded with every solve.
    """

    blur: float = DEFAULT_BLUR
    """Entropic blur sigma in feature units; epsilon = blur ** 2."""
    scaling: float = DEFAULT_SCALING
    """Ratio of successive blurs in the annealing schedule."""
    tol: float = DEFAULT_TOL
    """Marginal L1 error at which iterations at the final epsilon stop."""
    final_iter: int = DEFAULT_FINAL_ITER
    """Iterations at the final epsilon after a cold-started schedule."""
    warm_iter: int = DEFAULT_WARM_ITER
    """Iterations at the final epsilon of a warm-started solve."""
    start_iter: int = DEFAULT_START_ITER
    """Iteration cap at the first level of a cold start that skipped levels."""
    symmetric_iter: int = DEFAULT_SYMMETRIC_ITER
    """Iteration cap of the symmetric self-problem."""
    dtype: torch.dtype = torch.float64
    """Floating type of the solve."""
    cache_bytes: int = DEFAULT_CACHE_BYTES
    """Largest cost matrix kept in memory between iterations."""
    truncate: bool = True
    """Let a cross solve sweep only the entries of a concentrated plan that rise above
    rounding (see :mod:`selbias_audit.selectors._truncated`). The potentials agree with
    full sweeps to rounding."""
    truncate_from: int = DEFAULT_TRUNCATE_FROM
    """Minimum cost-matrix entries for a cross solve to use truncation."""

    @property
    def epsilon(self) -> float:
        """Return the final entropic regularisation blur ** p."""
        return epsilon_from_blur(self.blur)

    def __post_init__(self) -> None:
        epsilon_from_blur(self.blur)
        if not 0 < self.scaling < 1:
            raise ValueError(f"scaling must be in (0, 1), got {self.scaling}")
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Sinkhorn dtype must be float32 or float64, got {self.dtype}")
        if self.truncate_from < 0:
            raise ValueError(f"truncate_from must be at least 0, got {self.truncate_from}")
        for name in ("final_iter", "warm_iter", "start_iter", "symmetric_iter"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
