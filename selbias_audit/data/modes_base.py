"""The mode-assignment protocol shared by labels, k-means cells and Mahalanobis shells."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class ModeAssigner(Protocol):
    """Put samples into a fixed, finite set of modes."""

    kind: str
    """Short name recorded in the receipt, for example ``labels`` or ``clusters``."""
    names: list[str]
    """Display name of each mode, indexed by mode id."""
    description: str
    """One sentence for the receipt saying how modes are defined."""

    def assign(self, features: Tensor, labels: Tensor | None) -> Tensor:
        """Return the (n,) int64 mode id of each row of ``features`` (shape (n, d)).

        ``labels`` are the labels carried by the samples when known.
        """
        ...
