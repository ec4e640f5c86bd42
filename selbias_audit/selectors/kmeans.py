"""K-means baseline: cluster the candidates into k = n cells, keep one per cell.

k-means++ seeding [arthur2007] draws from ``context.generator``; Lloyd iterations run
until the assignment stops changing or ``max_iter``. Each cell contributes the member
closest to its centre. A cell that ends empty contributes the unused candidate closest
to its centre, so exactly n distinct candidates are kept.

References
----------
[arthur2007] D. Arthur, S. Vassilvitskii, k-means++: the advantages of careful
seeding, SODA 2007.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selbias_audit.selectors._finite import require_finite
from selbias_audit.selectors.base import Selection, SelectionContext, check_count
from selbias_audit.spec import KMeansSpec

# Distances are computed for this many candidates at a time, bounding memory to
# about ROW_BLOCK * k floats.
ROW_BLOCK = 4096


def _squared_distances(points: Tensor, centres: Tensor) -> Tensor:
    squared = (points * points).sum(dim=1, keepdim=True) + (centres * centres).sum(dim=1)
    return torch.addmm(squared, points, centres.T, alpha=-2.0).clamp_(min=0.0)


def _nearest(points: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Return the index of and squared distance to the nearest centre of each point."""
    labels, distances = [], []
    for start in range(0, points.shape[0], ROW_BLOCK):
        block = _squared_distances(points[start : start + ROW_BLOCK], centres)
        value, index = block.min(dim=1)
        labels.append(index)
        distances.append(value)
    return torch.cat(labels), torch.cat(distances)


def kmeans_plus_plus(points: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Return the (k,) indices of k-means++ seeds, drawn with ``generator``."""
    total = points.shape[0]
    chosen = [int(torch.randint(total, (1,), generator=generator))]
    closest = _squared_distances(points, points[chosen[0] : chosen[0] + 1])[:, 0].cpu()
    for _ in range(1, k):
        weights = closest.clone()
        weights[chosen] = 0.0
        if not bool(weights.sum() > 0):
            # Fewer distinct points than seeds: draw uniformly among the unused ones.
            weights = torch.ones(total, dtype=closest.dtype)
            weights[chosen] = 0.0
        pick = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(pick)
        new = _squared_distances(points, points[pick : pick + 1])[:, 0].cpu()
        closest = torch.minimum(closest, new)
    return torch.tensor(chosen, dtype=torch.int64, device=points.device)


class KMeansSelector:
    """Keep one representative of each of n k-means cells of the candidates."""

    name = "kmeans"

    def __init__(self, spec: KMeansSpec) -> None:
        self.spec = spec

    def select(self, candidates: Tensor, count: int, context: SelectionContext) -> Selection:
        """Keep ``count`` candidates, one per cell, in cell order."""
        check_count(self.name, count, candidates.shape[0])
        require_finite(
            candidates,
            "candidate features",
            selector=self.name,
            round_index=context.round,
            client=None,
        )
        if count == 0:
            return Selection(indices=torch.empty(0, dtype=torch.int64, device=candidates.device))
        points = candidates.to(torch.float64)
        seeds = kmeans_plus_plus(points, count, context.generator)
        centres = points[seeds].clone()
        labels, _ = _nearest(points, centres)
        iterations = 0
        for iteration in range(1, self.spec.max_iter + 1):
            iterations = iteration
            sums = torch.zeros_like(centres).index_add_(0, labels, points)
            sizes = torch.bincount(labels, minlength=count).to(points.dtype)
            occupied = sizes > 0
            # An empty cell keeps its old centre; the final pick below still fills it.
            centres[occupied] = sums[occupied] / sizes[occupied, None]
            new_labels, _ = _nearest(points, centres)
            if torch.equal(new_labels, labels):
                break
            labels = new_labels
        _, distances = _nearest(points, centres)
        inertia = float(distances.sum())

        # The member closest to its centre represents each cell, ties to the lower index.
        own = ((points - centres[labels]) ** 2).sum(dim=1)
        total = points.shape[0]
        best = torch.full((count,), torch.inf, dtype=own.dtype, device=own.device)
        best = best.scatter_reduce(0, labels, own, reduce="amin")
        closest = own == best[labels]
        index = torch.arange(total, device=points.device)
        first_in_cell = torch.full((count,), total, dtype=torch.int64, device=points.device)
        first_in_cell = first_in_cell.scatter_reduce(
            0, labels[closest], index[closest], reduce="amin"
        )
        first_in_cell[first_in_cell == total] = -1
        empty = torch.nonzero(first_in_cell < 0).flatten().tolist()
        if empty:
            used = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
            used[first_in_cell[first_in_cell >= 0]] = True
            for cell in empty:
                gaps = ((points - centres[cell]) ** 2).sum(dim=1)
                gaps[used] = torch.inf
                pick = int(torch.argmin(gaps))
                first_in_cell[cell] = pick
                used[pick] = True
        return Selection(
            indices=first_in_cell,
            diagnostics={
                "clusters": count,
                "iterations": iterations,
                "inertia": inertia,
                "empty_clusters": len(empty),
            },
        )
