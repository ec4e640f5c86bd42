"""Finite checks that turn a NaN or an infinity into an error naming where it appeared."""

from __future__ import annotations

import torch
from torch import Tensor

from selbias_audit.errors import NonFiniteError


def describe_source(selector: str, round_index: int, client: int | None) -> str:
    """Return ``"<selector>, round <r>, client <k>"`` (or ``server`` when client is None)."""
    owner = "server (no client reference)" if client is None else f"client {client}"
    return f"{selector}, round {round_index}, {owner}"


def require_finite(
    values: Tensor, what: str, *, selector: str, round_index: int, client: int | None
) -> None:
    """Raise NonFiniteError unless every entry of ``values`` is finite.

    The message names the selector, the round, the client and the quantity, and counts
    the bad entries, so that a user can tell an input problem from a solver problem.
    """
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return
    bad = int(finite.numel() - int(finite.sum()))
    raise NonFiniteError(
        f"{describe_source(selector, round_index, client)}: {what} has {bad} NaN or "
        f"infinite value(s) out of {values.numel()}",
        hint="check the candidate and reference features for NaN or infinity; for a "
        "solver result, rerun with solver.dtype: float64",
    )


def require_finite_inputs(
    candidates: Tensor,
    references: tuple[Tensor, ...] | list[Tensor],
    *,
    selector: str,
    round_index: int,
) -> None:
    """Raise NonFiniteError when the candidates or any client reference is not finite."""
    require_finite(
        candidates, "candidate features", selector=selector, round_index=round_index, client=None
    )
    for client, reference in enumerate(references):
        require_finite(
            reference,
            "reference features",
            selector=selector,
            round_index=round_index,
            client=client,
        )
