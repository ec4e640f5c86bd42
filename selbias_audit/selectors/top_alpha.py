"""Top-alpha selection toward a biased target, the selector of the collapse theory.

Each candidate x gets the squared Mahalanobis distance to the biased target (u_b,
Sigma_b),

.. math::

    s(x) = (x - u_b)^\\top \\Sigma_b^{-1} (x - u_b),

and the n candidates with the lowest scores are kept. This is the same as keeping
the top alpha = n / N share by utility U(x) = -s(x). Equal scores go to the lower
candidate index, so a selection never depends on the sort algorithm.

The biased target is either one client's reference (its mean and covariance, a
local verifier) or the target of the Gaussian construction, which the caller passes
as ``context.extras["biased_target"]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from selbias_audit.errors import NonFiniteError
from selbias_audit.selectors.base import Selection, SelectionContext, check_count
from selbias_audit.spec import TopAlphaSpec, selector_label

REFERENCE_RIDGE = 1e-6
"""Ridge added to a reference covariance, relative to its mean variance Tr(S) / d. A
reference with fewer rows than dimensions has a singular covariance, and the ridge
keeps its Mahalanobis metric defined."""


def mahalanobis_squared(points: Tensor, mean: Tensor, cov_cholesky: Tensor) -> Tensor:
    """Return (x - mean)^T Sigma^{-1} (x - mean) for every row x of ``points``.

    Parameters
    ----------
    points : Tensor, shape (..., N, d)
    mean : Tensor, shape (..., d)
    cov_cholesky : Tensor, shape (..., d, d)
        Lower Cholesky factor L of Sigma = L L^T. Batch dimensions broadcast with
        ``points``.

    Returns
    -------
    Tensor, shape (..., N)
        ||L^{-1} (x - mean)||^2, computed by a triangular solve instead of an
        explicit inverse.
    """
    diff = (points - mean.unsqueeze(-2)).transpose(-1, -2)
    whitened = torch.linalg.solve_triangular(cov_cholesky, diff, upper=False)
    return (whitened**2).sum(dim=-2)


def lowest_score_indices(scores: Tensor, count: int) -> Tensor:
    """Return the indices of the ``count`` lowest scores along the last axis.

    The result is ordered by ascending score, and among equal scores the lower index
    comes first and is the one kept at the cutoff.

    Parameters
    ----------
    scores : Tensor, shape (..., N)
        Finite scores. NaN has no place in an order, so callers check first.
    count : int
        0 <= count <= N.

    Returns
    -------
    Tensor, shape (..., count), int64
    """
    total = scores.shape[-1]
    if not 0 <= count <= total:
        raise ValueError(f"cannot keep {count} of {total} scores")
    if count == 0:
        return torch.empty(*scores.shape[:-1], 0, dtype=torch.int64, device=scores.device)

    # A selection (O(N)) finds the cutoff, which is much cheaper than sorting all N
    # scores when n << N. Scores below the cutoff are all kept, and scores equal to it
    # fill the remaining places in index order.
    cutoff = torch.kthvalue(scores, count, dim=-1, keepdim=True).values
    below = scores < cutoff
    at_cutoff = scores == cutoff
    places_left = count - below.sum(dim=-1, keepdim=True)
    keep = below | (at_cutoff & (at_cutoff.cumsum(dim=-1) <= places_left))

    # Every row keeps exactly ``count`` entries, and nonzero lists them row by row in
    # ascending index order, so a reshape recovers the rows.
    kept_indices = torch.nonzero(keep)[:, -1].reshape(*scores.shape[:-1], count)
    order = torch.sort(scores.gather(-1, kept_indices), dim=-1, stable=True).indices
    return kept_indices.gather(-1, order)


class TopAlphaSelector:
    """Keep the n candidates closest to the biased target in Mahalanobis distance."""

    def __init__(self, spec: TopAlphaSpec) -> None:
        self.spec = spec
        self.name = selector_label(spec)

    def select(self, candidates: Tensor, count: int, context: SelectionContext) -> Selection:
        """Keep the ``count`` candidates with the lowest Mahalanobis score.

        Parameters
        ----------
        candidates : Tensor, shape (N, d)
            Never modified.
        count : int
            n, with 0 <= n <= N.
        context : SelectionContext
            Supplies ``references[spec.client]`` when the spec names a client, else
            ``extras["biased_target"]`` as a (mean (d,), cov (d, d)) pair of tensors.

        Returns
        -------
        Selection
            ``indices`` (n,) int64 in ascending score order, ``scores`` (N,) float64
            squared Mahalanobis distances, and diagnostics: the target source, the
            ridge used, the largest kept score, and ``ties_at_cutoff``, the number of
            rejected candidates whose score equals the largest kept score.

        Raises
        ------
        ValueError
            When ``count`` is out of range, the candidates are not a 2-d tensor, or no
            biased target is available.
        NonFiniteError
            When a candidate, the target or a score is NaN or infinite.
        """
        where = f"{self.name} (round {context.round})"
        if candidates.ndim != 2:
            raise ValueError(
                f"{where}: candidates must have shape (N, d), got {tuple(candidates.shape)}"
            )
        check_count(self.name, count, candidates.shape[0])
        if not torch.isfinite(candidates).all():
            raise NonFiniteError(f"{where}: candidates contain NaN or infinity")

        mean, cov, source, ridge = self._biased_target(candidates, context, where)
        # float64, so that candidates packed tightly around the target still get
        # distinct scores after a collapse.
        points = candidates.to(torch.float64)
        cholesky, info = torch.linalg.cholesky_ex(cov)
        if int(info) != 0:
            raise ValueError(
                f"{where}: the biased target covariance is not positive definite. Pass a "
                "covariance with a ridge"
            )
        scores = mahalanobis_squared(points, mean, cholesky)
        if not torch.isfinite(scores).all():
            raise NonFiniteError(f"{where}: a Mahalanobis score is NaN or infinite")

        indices = lowest_score_indices(scores, count)
        diagnostics: dict[str, Any] = {"biased_target": source, "ridge": ridge}
        if count > 0:
            cutoff = scores[indices[-1]]
            rejected = torch.ones_like(scores, dtype=torch.bool)
            rejected[indices] = False
            diagnostics["max_kept_score"] = float(cutoff)
            diagnostics["ties_at_cutoff"] = int((scores[rejected] == cutoff).sum())
        return Selection(indices=indices, scores=scores, diagnostics=diagnostics)

    def _biased_target(
        self, candidates: Tensor, context: SelectionContext, where: str
    ) -> tuple[Tensor, Tensor, str, float]:
        """Return (mean, cov, description, ridge) in float64 on the candidates' device."""
        dim = candidates.shape[1]
        device = candidates.device
        client = self.spec.client
        if client is not None:
            if not 0 <= client < len(context.references):
                raise ValueError(
                    f"{where}: client {client} has no reference. The run has "
                    f"{len(context.references)} client reference(s)"
                )
            reference = context.references[client].to(device=device, dtype=torch.float64)
            if reference.ndim != 2 or reference.shape[1] != dim or reference.shape[0] < 1:
                raise ValueError(
                    f"{where}: reference of client {client} must have shape (M, {dim}) with "
                    f"M >= 1, got {tuple(reference.shape)}"
                )
            if not torch.isfinite(reference).all():
                raise NonFiniteError(f"{where}: reference of client {client} is not finite")
            mean = reference.mean(dim=0)
            centred = reference - mean
            cov = centred.T @ centred / reference.shape[0]
            mean_variance = float(torch.trace(cov)) / dim
            # A one-row reference has zero covariance, and the unit ridge then makes the
            # score the squared Euclidean distance to that row.
            ridge = REFERENCE_RIDGE * mean_variance if mean_variance > 0.0 else 1.0
            cov = cov + ridge * torch.eye(dim, dtype=torch.float64, device=device)
            return mean, cov, f"client {client} reference", ridge

        target = context.extras.get("biased_target")
        if target is None:
            raise ValueError(
                f"{where}: no biased target. Set 'client' in the selector spec to use a "
                "client's reference, or use target.source 'gaussian', which supplies the "
                "biased target of the Gaussian construction"
            )
        if not isinstance(target, tuple | list) or len(target) != 2:
            raise ValueError(
                f"{where}: extras['biased_target'] must be a (mean, cov) pair, got "
                f"{type(target).__name__}"
            )
        mean, cov = (torch.as_tensor(t).to(device=device, dtype=torch.float64) for t in target)
        if mean.shape != (dim,) or cov.shape != (dim, dim):
            raise ValueError(
                f"{where}: biased target must be a mean of shape ({dim},) and a covariance "
                f"of shape ({dim}, {dim}), got {tuple(mean.shape)} and {tuple(cov.shape)}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
            raise NonFiniteError(f"{where}: the biased target contains NaN or infinity")
        return mean, 0.5 * (cov + cov.T), "gaussian construction", 0.0
