"""Greedy maximisation of a sum of concave per-client utilities.

The objective of Scheme I is the monotone submodular set function

.. math::
    F(S) = \\sum_k w_k \\log\\Big(1 + \\sum_{i \\in S} u_{ik}\\Big), \\qquad u_{ik} \\ge 0,

and plain greedy (add the candidate of largest marginal gain, ties to the lower
candidate index) reaches at least ``(1 - 1/e)`` of the optimum over sets of the same
size [nemhauser1978]. :func:`lazy_greedy` returns exactly the plain greedy's picks
with far fewer gain evaluations [minoux1978]: gains only shrink as the per-client
totals grow, so a gain computed earlier is an upper bound that is refreshed only when
it could still win.

Both functions evaluate gains with the same scalar function, :func:`marginal_gain`,
so their floating-point comparisons, and hence their tie-breaks, are identical.

References
----------
[nemhauser1978] G. Nemhauser, L. Wolsey, M. Fisher, An analysis of approximations for
maximizing submodular set functions, Mathematical Programming 14, 1978.
[minoux1978] M. Minoux, Accelerated greedy algorithms for maximizing submodular set
functions, Optimization Techniques, 1978.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# A gain recomputed after the totals grew may exceed its earlier value by a few
# rounding errors of log1p and of the K-term sum. Stored bounds are inflated by this
# relative margin, so they stay upper bounds and the picks stay exact.
BOUND_SLACK = 1e-12


@dataclass(frozen=True)
class GreedyResult:
    """Picks of a greedy run and what they achieved."""

    indices: Tensor
    """(count,) int64 candidate indices in pick order."""
    gains: tuple[float, ...]
    """Marginal gain of each pick, in pick order (non-increasing)."""
    objective: float
    """F(S) of the selected set."""
    evaluations: int
    """Number of marginal-gain evaluations, a measure of the work done."""


def marginal_gain(
    utility: Sequence[float], totals: Sequence[float], weights: Sequence[float]
) -> float:
    """Return ``sum_k w_k log(1 + u_k / (1 + c_k))``, the gain of adding one candidate.

    This equals ``sum_k w_k [log(1 + c_k + u_k) - log(1 + c_k)]`` and is evaluated
    with ``log1p`` in a fixed order, so it is accurate when ``u_k`` is small.
    """
    gain = 0.0
    for u, c, w in zip(utility, totals, weights, strict=True):
        gain += w * math.log1p(u / (1.0 + c))
    return gain


def objective_value(totals: Sequence[float], weights: Sequence[float]) -> float:
    """Return ``F(S) = sum_k w_k log(1 + c_k)`` for the per-client totals ``c_k``."""
    return float(sum(w * math.log1p(c) for c, w in zip(totals, weights, strict=True)))


def _prepare(
    utilities: Tensor | np.ndarray, count: int, weights: Sequence[float] | None
) -> tuple[list[list[float]], list[float]]:
    array = np.asarray(
        utilities.detach().cpu().double().numpy() if isinstance(utilities, Tensor) else utilities,
        dtype=np.float64,
    )
    if array.ndim != 2:
        raise ValueError(f"utilities must be an (N, K) array, got shape {array.shape}")
    total, clients = array.shape
    if not 0 <= count <= total:
        raise ValueError(f"cannot pick {count} of {total} candidates")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError("utilities must be finite and non-negative")
    weight_list = [1.0] * clients if weights is None else [float(w) for w in weights]
    if len(weight_list) != clients or any(not (w >= 0 and math.isfinite(w)) for w in weight_list):
        raise ValueError(f"weights must be {clients} finite non-negative numbers")
    return array.tolist(), weight_list


def plain_greedy(
    utilities: Tensor | np.ndarray, count: int, weights: Sequence[float] | None = None
) -> GreedyResult:
    """Pick ``count`` candidates by plain greedy, for testing :func:`lazy_greedy`.

    Every step evaluates the gain of every remaining candidate, O(count * N * K).

    Parameters
    ----------
    utilities : Tensor or ndarray, shape (N, K)
        Non-negative utility of candidate i for client k.
    count : int
        Number of picks n, 0 <= n <= N.
    weights : sequence of K floats, optional
        Client weights w_k; all 1 by default.
    """
    rows, weight_list = _prepare(utilities, count, weights)
    totals = [0.0] * len(weight_list)
    available = list(range(len(rows)))
    picks: list[int] = []
    gains: list[float] = []
    evaluations = 0
    for _ in range(count):
        best, best_gain = -1, -math.inf
        # Ascending order and a strict comparison give ties to the lower index.
        for i in available:
            gain = marginal_gain(rows[i], totals, weight_list)
            evaluations += 1
            if gain > best_gain:
                best, best_gain = i, gain
        available.remove(best)
        picks.append(best)
        gains.append(best_gain)
        totals = [c + u for c, u in zip(totals, rows[best], strict=True)]
    return GreedyResult(
        indices=torch.tensor(picks, dtype=torch.int64),
        gains=tuple(gains),
        objective=objective_value(totals, weight_list),
        evaluations=evaluations,
    )


def lazy_greedy(
    utilities: Tensor | np.ndarray, count: int, weights: Sequence[float] | None = None
) -> GreedyResult:
    """Pick ``count`` candidates with the same result as :func:`plain_greedy`, lazily.

    A max-heap holds, for every remaining candidate, an upper bound on its gain and
    the pick count at which it was computed. When the top entry is current, every
    entry whose bound reaches its gain is refreshed. The winner is the largest current
    gain among them, ties to the lower index. All other candidates have bounds below
    that gain, so they cannot win.

    Parameters
    ----------
    utilities : Tensor or ndarray, shape (N, K)
        Non-negative utility of candidate i for client k.
    count : int
        Number of picks n, 0 <= n <= N.
    weights : sequence of K floats, optional
        Client weights w_k; all 1 by default.
    """
    rows, weight_list = _prepare(utilities, count, weights)
    totals = [0.0] * len(weight_list)

    # Heap entries: (-upper bound, index, pick count when computed, exact gain then).
    heap = []
    for i, row in enumerate(rows):
        gain = marginal_gain(row, totals, weight_list)
        heap.append((-gain * (1.0 + BOUND_SLACK), i, 0, gain))
    heapq.heapify(heap)
    evaluations = len(rows)
    picks: list[int] = []
    gains: list[float] = []

    while len(picks) < count:
        step = len(picks)
        _, i, stamp, gain = heapq.heappop(heap)
        if stamp != step:
            gain = marginal_gain(rows[i], totals, weight_list)
            evaluations += 1
            heapq.heappush(heap, (-gain * (1.0 + BOUND_SLACK), i, step, gain))
            continue

        # Gather every rival whose bound reaches this gain, with a current gain.
        contenders = [(gain, i)]
        while heap and -heap[0][0] >= gain:
            _, j, rival_stamp, rival_gain = heapq.heappop(heap)
            if rival_stamp != step:
                rival_gain = marginal_gain(rows[j], totals, weight_list)
                evaluations += 1
            contenders.append((rival_gain, j))
        winner_gain, winner = max(contenders, key=lambda item: (item[0], -item[1]))
        for rival_gain, j in contenders:
            if j != winner:
                heapq.heappush(heap, (-rival_gain * (1.0 + BOUND_SLACK), j, step, rival_gain))

        picks.append(winner)
        gains.append(winner_gain)
        totals = [c + u for c, u in zip(totals, rows[winner], strict=True)]

    return GreedyResult(
        indices=torch.tensor(picks, dtype=torch.int64),
        gains=tuple(gains),
        objective=objective_value(totals, weight_list),
        evaluations=evaluations,
    )
