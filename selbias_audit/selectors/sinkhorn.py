"""Log-domain Sinkhorn solvers with epsilon-scaling, written for debiased scores.

Two problems are solved, both for the cost and blur conventions of
:mod:`selbias_audit.selectors._conventions`:

* the cross problem OT_eps(alpha, beta) between two point clouds, by alternating
  (Gauss-Seidel) log-domain updates along the geomloss epsilon schedule;
* the symmetric self-problem OT_eps(alpha, alpha), by the averaged update
  ``f <- (f + softmin(f)) / 2`` started directly at the final epsilon. The symmetric
  problem is well conditioned, so it needs a handful of iterations and no annealing.

The debiased potential of a Sinkhorn divergence on the ``x`` side is then
``f_ab - f_aa``. Splitting it this way lets a caller solve the self-problem of a
shared point cloud once and reuse it against every reference.

Each update is one sweep of :func:`selbias_audit.selectors._kernels.softmax_pass`: a
fused softmax of ``h_j - C_ij / eps`` by blocks of rows gives the row log-sum-exp (the
f-update) and the column mass of the plan (the g-update and the marginal error). Once
the plan of a cross problem concentrates, sweeps run over its truncated kernel instead
(:mod:`selbias_audit.selectors._truncated`).

References
----------
[cuturi2013] M. Cuturi, Sinkhorn distances, NeurIPS 2013.
[feydy2019] J. Feydy et al., Interpolating between optimal transport and MMD using
Sinkhorn divergences, AISTATS 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from selbias_audit.selectors._conventions import (
    SinkhornSettings,
    bounding_box_diameter,
    epsilon_schedule,
)
from selbias_audit.selectors._kernels import CostBlocks, exact_column_lse, softmax_pass
from selbias_audit.selectors._truncated import KernelBuilder, TruncatedKernel, starved_mass
from selbias_audit.selectors.base import SolveRecord

BACKEND = "torch log-domain sinkhorn (blocked softmax)"
TRUNCATED_BACKEND = "torch log-domain sinkhorn (blocked softmax, truncated kernel)"

# A column whose plan mass is below STARVED_FACTOR * finfo.tiny may have lost part of
# that mass to underflow in the softmax. Its g-update is therefore redone in log domain.
STARVED_FACTOR = 1e6


@dataclass(frozen=True)
class CrossPotentials:
    """Dual potentials of OT_eps(alpha, beta) and the health of the solve.

    ``f`` is the soft c-transform of ``g``, so the plan
    ``pi_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)`` has exact row marginals ``a`` and
    the column marginal error recorded in ``record``.
    """

    f: Tensor
    """(N,) potential on the x points."""
    g: Tensor
    """(M,) potential on the y points; a warm start for a later solve on the same y."""
    epsilon: float
    record: SolveRecord
    projection: Tensor | None = None
    """(N, d) barycentric projection ``sum_j pi_ij y_j / a_i`` when requested."""
    truncated_sweeps: int = 0
    """Sweeps that ran over a truncated kernel instead of every entry."""


@dataclass(frozen=True)
class SymmetricPotential:
    """Potential of the self-problem OT_eps(alpha, alpha) and the health of the solve."""

    f: Tensor
    """(N,) symmetric potential f_aa."""
    epsilon: float
    record: SolveRecord
    projection: Tensor | None = None
    """(N, d) self barycentric projection ``sum_j pi_ij x_j / a_i`` when requested."""


def _uniform_log_weights(count: int, like: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.full((count,), -math.log(count), dtype=dtype, device=like.device)


def _log_weights(weights: Tensor | None, count: int, like: Tensor, dtype: torch.dtype) -> Tensor:
    if weights is None:
        return _uniform_log_weights(count, like, dtype)
    if weights.shape != (count,) or bool((weights <= 0).any()):
        raise ValueError(f"weights must be {count} positive numbers, got shape {weights.shape}")
    weights = weights.to(dtype)
    return (weights / weights.sum()).log()


def _record(
    purpose: str,
    settings: SinkhornSettings,
    epsilon: float,
    iterations: int,
    error: float,
    client: int | None,
    backend: str = BACKEND,
) -> SolveRecord:
    return SolveRecord(
        purpose=purpose,
        backend=backend,
        dtype=str(settings.dtype).removeprefix("torch."),
        blur=settings.blur,
        epsilon=epsilon,
        iterations=iterations,
        converged=bool(error <= settings.tol),
        marginal_error=float(error),
        client=client,
    )


def solve_cross(
    x: Tensor,
    y: Tensor,
    settings: SinkhornSettings,
    *,
    purpose: str,
    client: int | None = None,
    weights_x: Tensor | None = None,
    weights_y: Tensor | None = None,
    init_g: Tensor | None = None,
    init_blur: float | None = None,
    project: bool = False,
) -> CrossPotentials:
    """Solve OT_eps(alpha, beta) between ``sum_i a_i delta_{x_i}`` and ``sum_j b_j delta_{y_j}``.

    .. math::
        \\mathrm{OT}_\\varepsilon = \\max_{f, g} \\langle a, f\\rangle + \\langle b, g\\rangle
        - \\varepsilon \\langle a \\otimes b, e^{(f \\oplus g - C)/\\varepsilon} - 1\\rangle

    A cold start (``init_g`` None) follows the epsilon schedule with one alternating
    update per level, then ``settings.final_iter`` updates at the final epsilon. When
    the cost matrix is kept in memory, the levels above its largest entry are replaced
    by up to ``settings.start_iter`` updates at the first level below it. A warm start
    from ``init_g`` resumes the schedule at blur ``init_blur`` and ends with
    ``settings.warm_iter`` updates at the final epsilon. Updates at the final epsilon
    stop once the column marginal error is at most ``settings.tol``. With
    ``settings.truncate``, a sweep whose plan rows hold few entries above rounding also
    records those entries, and later sweeps visit only them for as long as the
    truncation bound of :mod:`selbias_audit.selectors._truncated` holds.

    Parameters
    ----------
    x : Tensor, shape (N, d)
    y : Tensor, shape (M, d)
    settings : SinkhornSettings
    purpose : str
        What the solve is for; copied into the SolveRecord.
    client : int or None
        Client whose reference takes part, None for a server-side solve.
    weights_x, weights_y : Tensor, shape (N,) and (M,), optional
        Positive weights, normalised to sum 1; uniform by default.
    init_g : Tensor, shape (M,), optional
        Potential on ``y`` from an earlier solve on nearby points.
    init_blur : float, optional
        Blur at which to resume the schedule from ``init_g``; the final blur if None.
    project : bool
        Also return the barycentric projection of ``x`` toward ``y``.

    Returns
    -------
    CrossPotentials
    """
    dtype, epsilon = settings.dtype, settings.epsilon
    costs = CostBlocks(x, y, dtype, settings.cache_bytes)
    log_a = _log_weights(weights_x, x.shape[0], x, dtype)
    log_b = _log_weights(weights_y, y.shape[0], x, dtype)
    a, b = log_a.exp(), log_b.exp()
    schedule = epsilon_schedule(bounding_box_diameter(x, y), settings.blur, settings.scaling)
    hold = False
    if init_g is None:
        g = torch.zeros(y.shape[0], dtype=dtype, device=x.device)
        # At eps >= max C every kernel entry exp(-C/eps) is within a factor e of the
        # others, so the kernel's Hilbert projective diameter is at most 2 and each
        # update contracts the error by tanh(1/2)^2 < 0.22 (Birkhoff-Hopf). The levels
        # from diameter^2 down to max C are therefore replaced by converging at the
        # first level below max C.
        below_max_cost = [level for level in schedule[:-1] if level <= costs.max_cost]
        hold = len(below_max_cost) < len(schedule) - 1
        schedule = below_max_cost + schedule[-1:]
        levels = schedule + [epsilon] * (settings.final_iter - 1)
    else:
        g = init_g.to(dtype)
        # Resume the schedule at the first level whose blur is at most init_blur.
        start = (init_blur or settings.blur) ** 2
        schedule = [level for level in schedule[:-1] if level <= start] + schedule[-1:]
        levels = schedule + [epsilon] * (settings.warm_iter - 1)
    first_final = len(schedule) - 1
    tiny = STARVED_FACTOR * torch.finfo(dtype).tiny
    truncated_starved = max(tiny, starved_mass(dtype))
    truncate = settings.truncate and x.shape[0] * y.shape[0] >= settings.truncate_from

    position, start_iterations, iterations, truncated_sweeps = 0, 0, 0, 0
    anchors = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    kernel: TruncatedKernel | None = None
    while True:
        level = levels[position]
        phi = g + level * log_b
        # f-update: f = softmin_eps(g); its plan's column mass drives the g-update.
        if kernel is not None and kernel.covers(phi, level):
            lse, mass, kernel = kernel.sweep(phi, level, a)
            starved_below = truncated_starved
            truncated_sweeps += 1
        else:
            builder = None
            if truncate:
                builder = KernelBuilder(x.shape[0], y.shape[0], dtype, phi, level)
            lse, mass, _ = softmax_pass(
                costs, phi / level, level, row_weights=a, anchors=anchors, builder=builder
            )
            kernel = None if builder is None else builder.finish(anchors)
            starved_below = tiny
        assert mass is not None
        f = -level * lse
        error = float((mass - b).abs().sum())
        iterations += 1
        if position == len(levels) - 1 or (position >= first_final and error <= settings.tol):
            break
        # g-update: g <- g - eps log(mass / b), i.e. g = softmin_eps(f) in scaling form.
        g = g - level * (mass.clamp(min=tiny).log() - log_b)
        starved = torch.nonzero(mass < starved_below).flatten()
        if starved.numel() > 0:
            g[starved] = -level * exact_column_lse(costs, starved, log_a + f / level, level)
        if (
            hold
            and position == 0
            and start_iterations < settings.start_iter
            and error > settings.tol
        ):
            start_iterations += 1
        else:
            position += 1

    projection = None
    if project:
        values = y.to(dtype)
        phi = g + epsilon * log_b
        if kernel is not None and kernel.covers(phi, epsilon):
            projection = kernel.apply(phi, epsilon, values)
        else:
            _, _, projection = softmax_pass(costs, phi / epsilon, epsilon, values=values)
    backend = TRUNCATED_BACKEND if truncate else BACKEND
    record = _record(purpose, settings, epsilon, iterations, error, client, backend)
    return CrossPotentials(
        f=f,
        g=g,
        epsilon=epsilon,
        record=record,
        projection=projection,
        truncated_sweeps=truncated_sweeps,
    )


def solve_symmetric(
    x: Tensor,
    settings: SinkhornSettings,
    *,
    purpose: str,
    client: int | None = None,
    weights: Tensor | None = None,
    init_f: Tensor | None = None,
    project: bool = False,
) -> SymmetricPotential:
    """Solve the self-problem OT_eps(alpha, alpha) at the final epsilon.

    Iterates ``f <- (f + softmin_eps(f)) / 2`` until the row marginal error of the plan
    ``pi_ij = a_i a_j exp((f_i + f_j - C_ij) / eps)`` is at most ``settings.tol`` or
    ``settings.symmetric_iter`` passes are done.

    Parameters
    ----------
    x : Tensor, shape (N, d)
    settings : SinkhornSettings
    purpose : str
    client : int or None
    weights : Tensor, shape (N,), optional
    init_f : Tensor, shape (N,), optional
        Warm start, for example the potential of a nearby support.
    project : bool
        Also return the self barycentric projection ``T_aa(x)``.

    Returns
    -------
    SymmetricPotential
    """
    dtype, epsilon = settings.dtype, settings.epsilon
    # A warm start from a nearby support usually converges at its first pass, so the
    # cost matrix is streamed: building and storing it would cost more than the pass.
    cache_bytes = 0 if init_f is not None else settings.cache_bytes
    costs = CostBlocks(x, x, dtype, cache_bytes)
    log_a = _log_weights(weights, x.shape[0], x, dtype)
    a = log_a.exp()
    values = x.to(dtype) if project else None
    passes = 0
    # C_ii = 0, so each point's own column is a natural anchor for its row.
    anchors = torch.arange(x.shape[0], device=x.device)
    projection = None
    if init_f is None:
        f = -epsilon * softmax_pass(costs, log_a, epsilon, anchors=anchors)[0]
        passes = 1
    else:
        f = init_f.to(dtype)
    while True:
        # A warm pass also applies its plan to x: if it converges, that plan is the
        # final one and no separate projection pass is needed.
        lse, _, projected = softmax_pass(
            costs,
            log_a + f / epsilon,
            epsilon,
            anchors=anchors,
            values=values if init_f is not None else None,
        )
        softmin = -epsilon * lse
        passes += 1
        # Row sums of the plan are a_i exp((f_i - softmin_i) / eps); clamp keeps exp finite.
        ratio = ((f - softmin) / epsilon).clamp(max=50.0).exp()
        error = float((a * (ratio - 1.0).abs()).sum())
        if error <= settings.tol or passes >= settings.symmetric_iter:
            projection = projected
            break
        f = 0.5 * (f + softmin)

    if project and projection is None:
        _, _, projection = softmax_pass(costs, log_a + f / epsilon, epsilon, values=values)
    record = _record(purpose, settings, epsilon, passes, error, client)
    return SymmetricPotential(f=f, epsilon=epsilon, record=record, projection=projection)


def barycentric_projection(
    x: Tensor, y: Tensor, g: Tensor, settings: SinkhornSettings, *, weights_y: Tensor | None = None
) -> Tensor:
    """Return ``T(x_i) = sum_j softmax_j(log b_j + (g_j - C_ij) / eps) y_j``, shape (N, d).

    This is the entropic approximation of the optimal transport map carried by the
    potential ``g`` on ``y`` (the plan of the soft c-transform of ``g``).
    """
    dtype = settings.dtype
    costs = CostBlocks(x, y, dtype, settings.cache_bytes)
    log_b = _log_weights(weights_y, y.shape[0], x, dtype)
    h = log_b + g.to(dtype) / settings.epsilon
    return softmax_pass(costs, h, settings.epsilon, values=y.to(dtype))[2]


def debiased_potentials(
    x: Tensor, y: Tensor, settings: SinkhornSettings
) -> tuple[Tensor, Tensor, list[SolveRecord]]:
    """Return the debiased potentials ``(f_ab - f_aa, g_ab - g_bb)`` of S_eps(alpha, beta).

    These are the vectors geomloss ``SamplesLoss("sinkhorn", potentials=True,
    debias=True)`` returns, for uniform weights.
    """
    cross = solve_cross(x, y, settings, purpose="cross potentials")
    self_x = solve_symmetric(x, settings, purpose="self potential of x")
    self_y = solve_symmetric(y, settings, purpose="self potential of y")
    records = [cross.record, self_x.record, self_y.record]
    return cross.f - self_x.f, cross.g - self_y.f, records


def sinkhorn_divergence(
    x: Tensor, y: Tensor, settings: SinkhornSettings
) -> tuple[float, list[SolveRecord]]:
    """Return S_eps(alpha, beta) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2
    for uniform weights, from the dual values ``<a, f_ab - f_aa> + <b, g_ab - g_bb>``."""
    potential_x, potential_y, records = debiased_potentials(x, y, settings)
    value = potential_x.mean() + potential_y.mean()
    return float(value), records
