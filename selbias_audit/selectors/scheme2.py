"""Scheme II: a collaboratively estimated free-support Wasserstein barycenter as reference.

Round structure (server and silos):

1. server: support Z initialised at the candidates (or, with ``reuse``, at the
   previous round's support), uniform weights 1/N;
2. each step: silo k returns the barycentric projection ``T_k(Z)`` toward its
   reference (:func:`selbias_audit.silo.transport_support`), and the server sets
   ``Z <- sum_k w_k T_k(Z)``. For the published ``debiased`` map the server also adds
   ``Z - T_ZZ(Z)``, where ``T_ZZ`` is the barycentric projection of the support onto
   itself, because ``z - N grad_z S_eps(Z, Y_k) = T_k(z) + z - T_ZZ(z)``;
3. stop after ``max_iter`` steps or when the mean support displacement is at most
   ``tol``;
4. server: score the candidates against the support (calibrated gradient of the
   debiased potential) and keep the lowest scores, ties to the lower index.

Each silo keeps its potential on its reference between steps (and, with ``reuse``,
between rounds). A later step resumes the epsilon schedule from that potential at a
blur set by the support displacement, instead of annealing from the diameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from selbias_audit.selectors._conventions import COST_NAME, SinkhornSettings
from selbias_audit.selectors._finite import require_finite, require_finite_inputs
from selbias_audit.selectors._parallel import map_tasks
from selbias_audit.selectors.base import Selection, SelectionContext, SolveRecord, check_count
from selbias_audit.selectors.scheme1 import check_references, client_weights
from selbias_audit.selectors.sinkhorn import SymmetricPotential, solve_cross, solve_symmetric
from selbias_audit.silo import (
    SiloTransport,
    calibrated_gradient,
    reference_fingerprint,
    transport_support,
)
from selbias_audit.spec import Scheme2Spec

# A warm-started transport solve resumes the epsilon schedule at a blur of this factor
# times the median support displacement since its potential was computed, because
# scales coarser than the move are still resolved by the old potential. On workload A
# of benchmarks/README.md this kept 97.4% of the reference's picks (96.8% when every
# step re-annealed from the diameter) with a quarter of the sweeps in steps 2-10; the
# largest marginal error rose from 0.15 to 0.20.
WARM_BLUR_FACTOR = 2.0

FiniteCheck = Callable[[Tensor, str, "int | None"], None]


@dataclass
class BarycenterEstimate:
    """Support of a free-support barycenter and how it was reached."""

    support: Tensor
    """(N, d) support points, uniform weights."""
    solves: list[SolveRecord]
    displacements: list[float]
    """Mean support displacement of each step."""
    warm_starts: list[Tensor | None]
    """Each silo's potential on its reference after the last step."""
    warm_blur: float
    """Restart blur for a later solve from ``warm_starts``, set by the last step's moves."""


def estimate_barycenter(
    support: Tensor,
    references: Sequence[Tensor],
    settings: SinkhornSettings,
    *,
    weights: Sequence[float],
    debiased: bool,
    max_iter: int,
    tol: float,
    check: FiniteCheck,
    warm_starts: Sequence[Tensor | None] | None = None,
    warm_blur: float | None = None,
    initial_self: SymmetricPotential | None = None,
) -> BarycenterEstimate:
    """Run up to ``max_iter`` fixed-point steps ``Z <- sum_k w_k T_k(Z) [+ Z - T_ZZ(Z)]``.

    Parameters
    ----------
    support : Tensor, shape (N, d)
        Initial support.
    references : sequence of K Tensors, shape (M_k, d)
        Each is handed only to its own silo function.
    settings : SinkhornSettings
    weights : sequence of K floats summing to 1
    debiased : bool
        Add the self-correction ``Z - T_ZZ(Z)`` of the published map.
    max_iter, tol
        Step limit and the mean displacement at which to stop (0: never early).
    check : callable
        ``check(values, what, client)`` raises when values are not finite.
    warm_starts, warm_blur
        Silo potentials from an earlier estimate and the displacement since then.
    initial_self : SymmetricPotential, optional
        Self-term of ``support`` with its projection, when the caller has it already.
    """
    warm = list(warm_starts) if warm_starts is not None else [None] * len(references)
    support_potential = None if initial_self is None else initial_self.f
    solves: list[SolveRecord] = []
    displacements: list[float] = []
    blur = warm_blur if warm_blur is not None else math.inf

    def silo_step(client: int, *, support: Tensor, step: int, blur: float) -> SiloTransport:
        return transport_support(
            support,
            references[client],
            settings,
            client=client,
            step=step,
            warm_start=warm[client],
            warm_blur=blur,
        )

    for step in range(1, max_iter + 1):
        # Silos: each transports the shared support toward its own reference. They run
        # side by side, and the server adds the transported supports in client order.
        results = map_tasks(
            partial(silo_step, support=support, step=step, blur=blur),
            range(len(references)),
            support.device,
            entries=support.shape[0] * max(r.shape[0] for r in references),
        )
        combined = torch.zeros_like(support)
        for client, result in enumerate(results):
            check(result.transported, f"transported support at step {step}", client)
            combined += weights[client] * result.transported
            warm[client] = result.warm_start
            solves.extend(result.solves)
        if debiased:
            if step == 1 and initial_self is not None and initial_self.projection is not None:
                self_projection = initial_self.projection
            else:
                support_self = solve_symmetric(
                    support,
                    settings,
                    purpose=f"support self-term, step {step}",
                    init_f=support_potential,
                    project=True,
                )
                solves.append(support_self.record)
                support_potential, self_projection = support_self.f, support_self.projection
            assert self_projection is not None
            combined += support - self_projection
        check(combined, f"barycenter support after step {step}", None)
        moves = (combined - support).norm(dim=1)
        displacements.append(float(moves.mean()))
        blur = WARM_BLUR_FACTOR * float(moves.median())
        support = combined
        if tol > 0 and displacements[-1] <= tol:
            break
    return BarycenterEstimate(support, solves, displacements, warm, blur)


def lowest_scores(scores: Tensor, count: int) -> Tensor:
    """Return the indices of the ``count`` lowest scores, lowest first, ties to the lower index."""
    return torch.sort(scores, stable=True).indices[:count]


class Scheme2Selector:
    """Collaborative selection against a free-support Wasserstein barycenter."""

    name = "scheme2"

    def __init__(self, spec: Scheme2Spec) -> None:
        self.spec = spec

    def _initial_state(
        self, candidates: Tensor, references: tuple[Tensor, ...], context: SelectionContext
    ) -> tuple[Tensor, list[Tensor | None], float | None, str]:
        """Return the starting support, the silo warm starts, their restart blur and a note."""
        warm: list[Tensor | None] = [None] * len(references)
        if not self.spec.reuse or "support" not in context.state:
            return candidates, warm, None, "candidates"
        previous = context.state["support"]
        if previous.shape != candidates.shape:
            # NOTE: a support of another size cannot carry uniform weights 1/N over
            # these candidates, so the round starts afresh and the diagnostics record it.
            return (
                candidates,
                warm,
                None,
                f"candidates (previous support had shape {tuple(previous.shape)})",
            )
        saved = context.state.get("silo_warm_starts", {})
        for client, reference in enumerate(references):
            entry = saved.get(client)
            if entry is not None and entry[0] == reference_fingerprint(reference):
                warm[client] = entry[1]
        blur = context.state.get("warm_blur")
        return previous.to(device=candidates.device), warm, blur, "previous round's support"

    def select(self, candidates: Tensor, count: int, context: SelectionContext) -> Selection:
        """Keep the ``count`` candidates with the lowest scores against the barycenter."""
        references = context.references
        check_count(self.name, count, candidates.shape[0])
        check_references(self.name, candidates, references)
        require_finite_inputs(candidates, references, selector=self.name, round_index=context.round)
        settings = SinkhornSettings(
            blur=self.spec.blur, scaling=self.spec.scaling, dtype=context.dtype
        )
        sizes = client_weights(self.spec.weights, references)
        weights = [w / sum(sizes) for w in sizes]
        debiased = self.spec.projection == "debiased"

        def check(values: Tensor, what: str, client: int | None) -> None:
            require_finite(
                values, what, selector=self.name, round_index=context.round, client=client
            )

        support, warm, warm_blur, origin = self._initial_state(candidates, references, context)
        starts_at_candidates = support is candidates

        # Server: the candidates' self-term serves the final scores and, when the support
        # starts at the candidates, the first step's self-correction.
        self_term = solve_symmetric(
            candidates,
            settings,
            purpose="candidate self-term",
            project=debiased and starts_at_candidates,
        )
        check(self_term.f, "candidate self-term potential", None)
        estimate = estimate_barycenter(
            support.to(settings.dtype),
            references,
            settings,
            weights=weights,
            debiased=debiased,
            max_iter=self.spec.max_iter,
            tol=self.spec.tol,
            check=check,
            warm_starts=warm,
            warm_blur=warm_blur,
            initial_self=self_term if starts_at_candidates else None,
        )

        # Server: score the candidates against the support; lowest scores are kept.
        to_support = solve_cross(
            candidates, estimate.support, settings, purpose="scores against barycenter"
        )
        scores = calibrated_gradient(to_support.f - self_term.f)
        check(scores, "calibrated scores against the barycenter", None)
        solves = [self_term.record, *estimate.solves, to_support.record]

        if self.spec.reuse:
            context.state["support"] = estimate.support.detach()
            context.state["warm_blur"] = estimate.warm_blur
            context.state["silo_warm_starts"] = {
                client: (reference_fingerprint(reference), estimate.warm_starts[client])
                for client, reference in enumerate(references)
            }
        diagnostics: dict[str, Any] = {
            "steps": len(estimate.displacements),
            "final_displacement": estimate.displacements[-1],
            "initial_support": origin,
            "projection": self.spec.projection,
            "weights": self.spec.weights,
            "cost": COST_NAME,
            "blur": settings.blur,
            "scaling": settings.scaling,
            "solves_converged": sum(record.converged for record in solves),
            "max_marginal_error": max(record.marginal_error for record in solves),
        }
        return Selection(
            indices=lowest_scores(scores, count),
            scores=scores,
            solves=tuple(solves),
            diagnostics=diagnostics,
        )
