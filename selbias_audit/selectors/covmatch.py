"""Covariance matching: greedily match one client's covariance after PCA.

The reference of the chosen client fixes a PCA basis (up to ``pca`` components) and a
target covariance Sigma_ref (denominator M - 1). The first pick is uniform at random
from ``context.generator``; every further pick adds the candidate x that minimises
``||Cov(S + {x}) - Sigma_ref||_F`` (denominator |S|), ties to the lower index.

The selected set's mean and scatter matrix are updated with centred (Welford) sums,
so no large raw second moments are subtracted. For a set of n points with mean mu and
scatter M2, adding x with ``d = x - mu`` gives ``Cov = M2 / n + d d^T / (n + 1)``, so
with ``A = M2 / n - Sigma_ref`` the objective is
``||A||^2 + 2 d^T A d / (n + 1) + |d|^4 / (n + 1)^2``, evaluated for all candidates
in O(N p^2) per pick without forming an N x p x p array.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selbias_audit.selectors._finite import require_finite
from selbias_audit.selectors.base import (
    Selection,
    SelectionContext,
    check_count,
    client_reference,
)
from selbias_audit.selectors.scheme1 import check_references
from selbias_audit.spec import CovMatchSpec


def fit_pca(reference: Tensor, components: int) -> tuple[Tensor, Tensor, Tensor]:
    """Return the mean (d,), the basis (d, p) and the variances (p,) of a PCA of ``reference``.

    ``p = min(components, d, M)``; variances use the denominator M - 1.
    """
    mean = reference.mean(dim=0)
    centred = reference - mean
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    kept = min(components, vh.shape[0])
    variances = singular[:kept] ** 2 / (reference.shape[0] - 1)
    return mean, vh[:kept].T, variances


class CovMatchSelector:
    """Keep candidates whose covariance matches one client's, greedily."""

    name = "covmatch"

    def __init__(self, spec: CovMatchSpec) -> None:
        self.spec = spec

    def select(self, candidates: Tensor, count: int, context: SelectionContext) -> Selection:
        """Keep ``count`` candidates in pick order."""
        client = self.spec.client
        reference = client_reference(self.name, client, context)
        check_count(self.name, count, candidates.shape[0])
        check_references(self.name, candidates, (reference,))
        if reference.shape[0] < 2:
            raise ValueError(
                f"{self.name}: client {client} reference has {reference.shape[0]} row(s); "
                "a covariance needs at least 2"
            )
        for values, what, owner in (
            (candidates, "candidate features", None),
            (reference, "reference features", client),
        ):
            require_finite(
                values, what, selector=self.name, round_index=context.round, client=owner
            )
        if count == 0:
            return Selection(indices=torch.empty(0, dtype=torch.int64, device=candidates.device))

        # New float64 tensors: the caller's candidates and reference are never written.
        mean, basis, variances = fit_pca(reference.to(torch.float64), self.spec.pca)
        points = (candidates.to(torch.float64) - mean) @ basis
        target = torch.diag(variances)

        first = int(torch.randint(points.shape[0], (1,), generator=context.generator))
        picks = [first]
        available = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
        available[first] = False
        set_mean = points[first].clone()
        scatter = torch.zeros_like(target)
        distance = float(torch.linalg.matrix_norm(target))
        for size in range(1, count):
            offset = scatter / size - target
            shifts = points - set_mean
            quadratic = ((shifts @ offset) * shifts).sum(dim=1)
            squared_norms = (shifts * shifts).sum(dim=1)
            weight = 1.0 / (size + 1)
            objective = 2.0 * weight * quadratic + weight**2 * squared_norms**2
            objective[~available] = torch.inf
            best = int(torch.argmin(objective))  # first index among equal minima
            picks.append(best)
            available[best] = False
            shift = points[best] - set_mean
            set_mean = set_mean + shift / (size + 1)
            scatter = scatter + torch.outer(shift, points[best] - set_mean)
            covariance = scatter / size
            distance = float(torch.linalg.matrix_norm(covariance - target))
        return Selection(
            indices=torch.tensor(picks, dtype=torch.int64, device=candidates.device),
            diagnostics={
                "client": client,
                "pca_components": int(basis.shape[1]),
                "first_pick": first,
                "frobenius_distance": distance,
            },
        )
