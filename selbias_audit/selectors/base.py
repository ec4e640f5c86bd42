"""The selector protocol: keep ``count`` of the candidates, and say how.

Every selector, local or collaborative, sees the same inputs: the shared candidate
features and a :class:`SelectionContext` with the client references. A selector never
mutates its inputs, never falls back silently to another method, and raises
:class:`~selbias_audit.errors.NonFiniteError` rather than ranking a NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class SolveRecord:
    """Health of one optimal-transport solve, copied into the receipt."""

    purpose: str
    """What the solve was for, for example ``potentials`` or ``barycenter step 3``."""
    backend: str
    """Solver implementation, for example ``torch-logsumexp``."""
    dtype: str
    """Floating type of the solve."""
    blur: float
    """Entropic blur sigma in feature units."""
    epsilon: float
    """Entropic regularisation epsilon = blur ** p."""
    iterations: int
    """Sinkhorn iterations (annealing steps included)."""
    converged: bool
    """Whether the marginal error fell below the solver tolerance."""
    marginal_error: float
    """L1 error of the plan's marginals after the last iteration."""
    client: int | None = None
    """Client whose reference was involved, or None for a server-side solve."""


@dataclass(frozen=True)
class Selection:
    """Indices kept by a selector plus what it measured on the way."""

    indices: Tensor
    """(count,) int64 indices into the candidates, in pick order, without repeats."""
    scores: Tensor | None = None
    """(N,) per-candidate score when the selector ranks candidates (lower is better)."""
    solves: tuple[SolveRecord, ...] = ()
    """One record per OT solve."""
    diagnostics: dict[str, Any] = field(default_factory=dict)
    """Scalar facts worth recording (objective value, iterations, tie counts)."""


@dataclass
class SelectionContext:
    """What a selector may look at besides the candidates.

    ``references`` holds one (M_k, d) tensor per client on ``device``. A local
    verifier reads one entry; the collaborative schemes hand each entry only to the
    silo function of its own client. ``state`` is private to one selector instance and
    survives across rounds (for example a barycenter support reused as a warm start).
    """

    round: int
    references: tuple[Tensor, ...]
    generator: torch.Generator
    device: torch.device
    dtype: torch.dtype = torch.float32
    reference_labels: tuple[Tensor, ...] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    """Read-only facts of the run a special selector may need (for example the biased
    target of the Gaussian construction under ``biased_target``)."""


class Selector(Protocol):
    """Keep ``count`` of ``candidates``."""

    name: str

    def select(self, candidates: Tensor, count: int, context: SelectionContext) -> Selection:
        """Return the kept indices.

        Parameters
        ----------
        candidates : Tensor, shape (N, d)
            Candidate features on ``context.device``. Never modified.
        count : int
            n, with 0 <= n <= N.
        context : SelectionContext
            References, random generator, device and per-selector state.
        """
        ...


def check_count(name: str, count: int, total: int) -> None:
    """Raise ValueError unless 0 <= count <= total."""
    if not 0 <= count <= total:
        raise ValueError(f"{name}: cannot keep {count} of {total} candidates")


def client_reference(name: str, client: int, context: SelectionContext) -> Tensor:
    """Return client ``client``'s reference, or raise ValueError naming the selector."""
    count = len(context.references)
    if not 0 <= client < count:
        raise ValueError(
            f"{name}: client {client} does not exist; there are {count} client references "
            f"(0 to {count - 1})"
        )
    return context.references[client]
