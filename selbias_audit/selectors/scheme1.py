"""Scheme I: per-silo Sinkhorn scores combined by submodular greedy selection.

Round structure (server and silos):

1. server: the self-term potential f_aa of OT_eps(candidates, candidates), once per
   round, sent to every silo with the candidates;
2. silo k: the calibrated gradient of the debiased potential against its reference
   (:func:`selbias_audit.silo.scheme1_scores`);
3. server: per-client min-max normalisation (a zero range counts as 1), utility
   ``u_ik = max(0, 1 - s_ik)``, and lazy greedy on ``sum_k w_k log(1 + sum_S u_ik)``,
   ties to the lower candidate index.

Min-max normalisation is invariant to the positive affine map of the calibration, so
the calibration changes the recorded scores but never the picks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from selbias_audit.selectors._conventions import COST_NAME, SinkhornSettings
from selbias_audit.selectors._finite import require_finite, require_finite_inputs
from selbias_audit.selectors._parallel import map_tasks
from selbias_audit.selectors.base import Selection, SelectionContext, SolveRecord, check_count
from selbias_audit.selectors.greedy import lazy_greedy
from selbias_audit.selectors.sinkhorn import solve_symmetric
from selbias_audit.silo import scheme1_scores
from selbias_audit.spec import Scheme1Spec


def client_weights(kind: Literal["uniform", "size"], references: Sequence[Tensor]) -> list[float]:
    """Return one weight per client: all 1 (``uniform``) or ``K M_k / sum_l M_l`` (``size``).

    Both choices average to 1 over clients, so ``size`` with equal reference sizes
    gives exactly the uniform weights.
    """
    if kind == "uniform":
        return [1.0] * len(references)
    sizes = [int(reference.shape[0]) for reference in references]
    total = sum(sizes)
    return [len(sizes) * size / total for size in sizes]


def check_references(name: str, candidates: Tensor, references: Sequence[Tensor]) -> None:
    """Raise ValueError unless there is a non-empty reference with the candidates' dimension."""
    if candidates.ndim != 2:
        raise ValueError(
            f"{name}: candidates must be an (N, d) tensor, got shape {tuple(candidates.shape)}"
        )
    if len(references) == 0:
        raise ValueError(f"{name}: needs at least one client reference, got none")
    for client, reference in enumerate(references):
        if reference.ndim != 2 or reference.shape[0] == 0:
            raise ValueError(
                f"{name}: client {client} reference must be a non-empty (M, d) tensor, "
                f"got shape {tuple(reference.shape)}"
            )
        if reference.shape[1] != candidates.shape[1]:
            raise ValueError(
                f"{name}: client {client} reference has {reference.shape[1]} features but "
                f"the candidates have {candidates.shape[1]}"
            )


def minmax_utilities(scores: Sequence[Tensor]) -> Tensor:
    """Return the (N, K) float64 utilities ``max(0, 1 - (s - min s) / range)`` per client.

    A client whose scores are all equal has range 0, which is replaced by 1, so all its
    utilities are 1.
    """
    columns = []
    for client_scores in scores:
        values = client_scores.to(torch.float64)
        low = values.min()
        span = values.max() - low
        span = torch.where(span > 0, span, torch.ones_like(span))
        columns.append((1.0 - (values - low) / span).clamp(min=0.0))
    return torch.stack(columns, dim=1)


class Scheme1Selector:
    """Collaborative selection by per-silo debiased Sinkhorn scores and lazy greedy."""

    name = "scheme1"

    def __init__(self, spec: Scheme1Spec) -> None:
        self.spec = spec

    def select(self, candidates: Tensor, count: int, context: SelectionContext) -> Selection:
        """Keep ``count`` candidates, in greedy pick order.

        ``Selection.scores`` is the mean over clients of the normalised scores
        ``(s_ik - min) / range`` (lower is better); the picks come from the greedy,
        not from sorting these.
        """
        references = context.references
        check_count(self.name, count, candidates.shape[0])
        check_references(self.name, candidates, references)
        require_finite_inputs(candidates, references, selector=self.name, round_index=context.round)
        settings = SinkhornSettings(
            blur=self.spec.blur, scaling=self.spec.scaling, dtype=context.dtype
        )
        solves: list[SolveRecord] = []

        # Server: the self-term depends on the shared candidates only; solved once.
        self_term = solve_symmetric(candidates, settings, purpose="candidate self-term")
        solves.append(self_term.record)
        require_finite(
            self_term.f,
            "candidate self-term potential",
            selector=self.name,
            round_index=context.round,
            client=None,
        )

        # Silos: each scores the candidates against its own reference only. They run
        # side by side, and the server reads their scores in client order.
        results = map_tasks(
            lambda client: scheme1_scores(
                candidates,
                references[client],
                settings,
                candidate_self_potential=self_term.f,
                client=client,
                proxy_t=self.spec.proxy_t,
            ),
            range(len(references)),
            candidates.device,
            entries=candidates.shape[0] * max(r.shape[0] for r in references),
        )
        silo_scores = []
        for client, result in enumerate(results):
            require_finite(
                result.scores,
                "calibrated scores",
                selector=self.name,
                round_index=context.round,
                client=client,
            )
            silo_scores.append(result.scores)
            solves.extend(result.solves)

        # Server: normalise per client, then greedy on the concave surrogate.
        utilities = minmax_utilities(silo_scores)
        weights = client_weights(self.spec.weights, references)
        greedy = lazy_greedy(utilities, count, weights)
        normalised = 1.0 - utilities.mean(dim=1)

        selected_utility = utilities[greedy.indices].sum(dim=0)
        diagnostics: dict[str, object] = {
            "objective": greedy.objective,
            "gain_evaluations": greedy.evaluations,
            "last_gain": greedy.gains[-1] if greedy.gains else 0.0,
            "weights": self.spec.weights,
            "proxy_t": self.spec.proxy_t,
            "cost": COST_NAME,
            "blur": settings.blur,
            "scaling": settings.scaling,
            "solves_converged": sum(record.converged for record in solves),
            "max_marginal_error": max(record.marginal_error for record in solves),
        }
        for client in range(len(references)):
            diagnostics[f"utility_total_client_{client}"] = float(selected_utility[client])
        return Selection(
            indices=greedy.indices.to(candidates.device),
            scores=normalised.to(candidates.device),
            solves=tuple(solves),
            diagnostics=diagnostics,
        )
