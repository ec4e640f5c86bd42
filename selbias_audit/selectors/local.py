"""Local Sinkhorn verifier: keep what looks like ONE client's reference.

This is the biased selector the collaborative schemes are measured against: the
candidates are scored by the calibrated gradient of the debiased Sinkhorn divergence
to a single client's reference, and the lowest scores are kept.
"""

from __future__ import annotations

from torch import Tensor

from selbias_audit.selectors._conventions import COST_NAME, SinkhornSettings
from selbias_audit.selectors._finite import require_finite, require_finite_inputs
from selbias_audit.selectors.base import (
    Selection,
    SelectionContext,
    check_count,
    client_reference,
)
from selbias_audit.selectors.scheme1 import check_references
from selbias_audit.selectors.scheme2 import lowest_scores
from selbias_audit.selectors.sinkhorn import solve_symmetric
from selbias_audit.silo import scheme1_scores
from selbias_audit.spec import LocalSinkhornSpec


class LocalSinkhornSelector:
    """Keep the candidates with the lowest debiased Sinkhorn scores against one client."""

    name = "local_sinkhorn"

    def __init__(self, spec: LocalSinkhornSpec) -> None:
        self.spec = spec

    def select(self, candidates: Tensor, count: int, context: SelectionContext) -> Selection:
        """Keep the ``count`` lowest-scoring candidates, lowest first, ties to the lower index."""
        client = self.spec.client
        reference = client_reference(self.name, client, context)
        check_count(self.name, count, candidates.shape[0])
        check_references(self.name, candidates, (reference,))
        require_finite_inputs(candidates, (), selector=self.name, round_index=context.round)
        require_finite(
            reference,
            "reference features",
            selector=self.name,
            round_index=context.round,
            client=client,
        )
        settings = SinkhornSettings(
            blur=self.spec.blur, scaling=self.spec.scaling, dtype=context.dtype
        )

        self_term = solve_symmetric(candidates, settings, purpose="candidate self-term")
        result = scheme1_scores(
            candidates, reference, settings, candidate_self_potential=self_term.f, client=client
        )
        require_finite(
            result.scores,
            "calibrated scores",
            selector=self.name,
            round_index=context.round,
            client=client,
        )
        solves = (self_term.record, *result.solves)
        return Selection(
            indices=lowest_scores(result.scores, count),
            scores=result.scores,
            solves=solves,
            diagnostics={
                "client": client,
                "cost": COST_NAME,
                "blur": settings.blur,
                "scaling": settings.scaling,
                "max_marginal_error": max(record.marginal_error for record in solves),
            },
        )
