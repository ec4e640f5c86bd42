"""Sample-level fidelity and diversity: k-nearest-neighbour manifolds and the Vendi score.

Precision, recall, density and coverage are computed as the ``prdc`` package (version
0.2) computes them: each point of a set gets a ball whose radius is the distance to its
k-th nearest other point of the same set. A point counts as inside a ball when its
distance is at most the radius, where ``prdc`` uses a strict ``<``, so that duplicated
points do not score zero.

* precision: share of pool points inside some target ball (fidelity);
* recall: share of target points inside some pool ball (diversity);
* density: target balls around each pool point, averaged and divided by k (1 when the
  pool follows the target);
* coverage: share of target points whose own ball contains a pool point. A lost tail
  mode leaves its target points uncovered, so coverage falls with it.

The Vendi score is the exponential of the Shannon entropy of the eigenvalues of
``K / n``. With the cosine kernel ``K = X X^T`` on row-normalised features, those
eigenvalues are the ones of the d x d matrix ``X^T X / n``, so the score costs O(n d^2).
``vendi_score.vendi.score_dual`` (version 0.0.3) computes the same. The audit reports
the pool's score over the target's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

DEFAULT_NEIGHBOURS = 5
"""k of the k-nearest-neighbour radii."""

MAX_POINTS = 5000
"""Largest set measured in full. Larger sets are subsampled without replacement, because
the pool's own radii need all its pairwise distances."""

# Squared distances come from the expansion |x|^2 + |y|^2 - 2 <x, y> in float64, whose
# rounding is about 1e-16 of the squared norms. A point counts as on a ball's boundary
# within this relative tolerance, so a duplicate of a ball's k-th neighbour stays inside.
BOUNDARY_TOLERANCE = 1e-9

ROWS_PER_CHUNK = 1024


@dataclass(frozen=True)
class ManifoldScores:
    """Precision, recall, density and coverage of a sample against a reference set."""

    precision: float
    recall: float
    density: float
    coverage: float


def _squared_distances(x: Tensor, y: Tensor) -> Tensor:
    squared = torch.addmm((y * y).sum(dim=1), x, y.T, alpha=-2.0)
    return squared.add_((x * x).sum(dim=1, keepdim=True)).clamp_(min=0.0)


def _tolerance(x: Tensor, y: Tensor) -> float:
    scale = float(torch.cat([(x * x).sum(dim=1), (y * y).sum(dim=1)]).max())
    return BOUNDARY_TOLERANCE * max(scale, 1.0)


def knn_radii(points: Tensor, k: int = DEFAULT_NEIGHBOURS) -> Tensor:
    """Return the squared distance from each point to its k-th nearest other point.

    Parameters
    ----------
    points : Tensor, shape (n, d), with n > k

    Returns
    -------
    Tensor, shape (n,), float64
    """
    if points.shape[0] <= k:
        raise ValueError(
            f"k-nearest-neighbour radii need more than k = {k} points, got {points.shape[0]}"
        )
    x = points.double()
    radii = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], ROWS_PER_CHUNK):
        block = _squared_distances(x[start : start + ROWS_PER_CHUNK], x)
        rows = torch.arange(block.shape[0], device=x.device)
        # The point itself is not its own neighbour; its duplicates are.
        block[rows, rows + start] = torch.inf
        nearest = block.topk(k, dim=1, largest=False).values
        radii[start : start + block.shape[0]] = nearest[:, -1]
    return radii


def manifold_scores(
    target: Tensor,
    sample: Tensor,
    k: int = DEFAULT_NEIGHBOURS,
    *,
    target_radii: Tensor | None = None,
) -> ManifoldScores:
    """Return precision, recall, density and coverage of ``sample`` against ``target``.

    Parameters
    ----------
    target : Tensor, shape (n, d)
        Real points; their balls define the target manifold.
    sample : Tensor, shape (m, d)
        Points to score, for example the training pool after a round.
    k : int
        Neighbour rank of the ball radii.
    target_radii : Tensor, shape (n,), optional
        ``knn_radii(target, k)``, when the caller scores many samples against one target.
    """
    real, fake = target.double(), sample.double().to(target.device)
    real_radii = knn_radii(real, k) if target_radii is None else target_radii
    fake_radii = knn_radii(fake, k)
    slack = _tolerance(real, fake)
    inside_target = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)
    balls_around_fake = torch.zeros(fake.shape[0], dtype=torch.float64, device=real.device)
    covered = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    inside_sample = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    for start in range(0, real.shape[0], ROWS_PER_CHUNK):
        rows = slice(start, start + ROWS_PER_CHUNK)
        squared = _squared_distances(real[rows], fake)
        # in_real_ball[i, j]: sample point j lies in the ball of target point i.
        in_real_ball = squared <= real_radii[rows, None] + slack
        inside_target |= in_real_ball.any(dim=0)
        balls_around_fake += in_real_ball.sum(dim=0)
        covered[rows] = in_real_ball.any(dim=1)
        inside_sample[rows] = (squared <= fake_radii[None, :] + slack).any(dim=1)
    return ManifoldScores(
        precision=float(inside_target.double().mean()),
        recall=float(inside_sample.double().mean()),
        density=float(balls_around_fake.mean() / k),
        coverage=float(covered.double().mean()),
    )


def vendi_score(points: Tensor) -> float:
    """Return the Vendi score of ``points`` under the cosine kernel, between 1 and d.

    Rows of zero norm are left at zero; the kernel's diagonal is then 0 for them, and
    they add nothing to the eigenvalues.
    """
    x = points.double()
    norms = x.norm(dim=1, keepdim=True)
    x = torch.where(norms > 0, x / norms.clamp(min=torch.finfo(torch.float64).tiny), x)
    eigenvalues = torch.linalg.eigvalsh(x.T @ x / x.shape[0]).clamp(min=0.0)
    positive = eigenvalues[eigenvalues > 0]
    return float(torch.exp(-(positive * positive.log()).sum()))


def subsample(points: Tensor, generator: torch.Generator, limit: int = MAX_POINTS) -> Tensor:
    """Return ``points`` itself, or ``limit`` of its rows drawn without replacement."""
    if points.shape[0] <= limit:
        return points
    order = torch.randperm(points.shape[0], generator=generator)[:limit]
    return points[order.to(points.device)]
