"""The random baseline and CenterMatch, the typical local verifier."""

from __future__ import annotations

import torch
from torch import Tensor

from selbias_audit.errors import NonFiniteError
from selbias_audit.selectors.base import Selection, SelectionContext, check_count
from selbias_audit.spec import CenterMatchSpec, RandomSelectorSpec


def check_finite(name: str, values: Tensor, what: str, context: SelectionContext) -> None:
    """Raise NonFiniteError naming the selector and round when ``values`` contains NaN or inf."""
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise NonFiniteError(
            f"selector {name}, round {context.round}: {bad} non-finite value(s) in {what}"
        )


def keep_lowest(scores: Tensor, count: int) -> Tensor:
    """Return the indices of the ``count`` lowest scores, ties to the lower index."""
    # A stable sort keeps equal scores in index order; topk gives no such promise.
    return torch.sort(scores, stable=True).indices[:count]


class RandomSelector:
    """Uniform selection of n of N without replacement, from the context's generator."""

    def __init__(self, spec: RandomSelectorSpec | None = None) -> None:
        self.name = "random"

    def select(self, candidates: Tensor, count: int, context: SelectionContext) -> Selection:
        """Return ``count`` distinct uniformly drawn indices."""
        check_count(self.name, count, candidates.shape[0])
        order = torch.randperm(candidates.shape[0], generator=context.generator)
        return Selection(indices=order[:count].to(candidates.device))


class CenterMatchSelector:
    """Keep the candidates closest (Euclidean) to the mean of one client's reference."""

    scope = "local"

    def __init__(self, spec: CenterMatchSpec) -> None:
        self.client = spec.client
        self.name = f"center_match[client {spec.client}]"

    def select(self, candidates: Tensor, count: int, context: SelectionContext) -> Selection:
        """Rank by distance to the reference mean; lower is better."""
        check_count(self.name, count, candidates.shape[0])
        check_finite(self.name, candidates, "candidate features", context)
        reference = context.references[self.client]
        check_finite(self.name, reference, f"client {self.client}'s reference", context)
        center = reference.to(torch.float64).mean(dim=0)
        scores = torch.linalg.vector_norm(candidates.to(torch.float64) - center, dim=1)
        return Selection(
            indices=keep_lowest(scores, count),
            scores=scores,
            diagnostics={"reference_size": int(reference.shape[0])},
        )
