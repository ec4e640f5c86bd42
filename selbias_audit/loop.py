"""The recursive round loop for the Replace, Accumulate and Accumulate-Subsample paradigms.

Round t draws N candidates from the generator fitted on the previous training set,
lets the selector keep n of them, updates the pool by the paradigm's rule and refits.
Candidates and subsamples come from streams seeded by the round alone, so every
selector of an audit sees the same first-round candidates (common random numbers);
only the selection stream differs between selectors and seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from selbias_audit.generators.gaussian import Generator
from selbias_audit.selectors.base import Selection, SelectionContext, Selector
from selbias_audit.spec import LoopSpec


@dataclass(frozen=True)
class RoundRecord:
    """One round of one selector run: its candidates, the selection and the pool after it."""

    round: int
    candidates: Tensor
    """(N, d) float64 candidate features on the CPU."""
    candidate_labels: Tensor | None
    selection: Selection
    pool: Tensor
    """(P, d) float64 features of the training pool after this round."""
    pool_labels: Tensor | None
    seconds: float
    """Wall time of the round (generation, selection and pool update)."""


@dataclass(frozen=True)
class LoopStreams:
    """Seeds of the loop's random streams, one per purpose and round."""

    candidates: Callable[[int], torch.Generator]
    subsample: Callable[[int], torch.Generator]
    selection: Callable[[int], torch.Generator]


def run_loop(
    *,
    spec: LoopSpec,
    selector: Selector,
    generator: Generator,
    initial: Tensor,
    initial_labels: Tensor | None,
    make_context: Callable[[int, torch.Generator], SelectionContext],
    streams: LoopStreams,
    device: torch.device,
    dtype: torch.dtype,
) -> Iterator[RoundRecord]:
    """Yield one :class:`RoundRecord` per round t = 1..T.

    ``initial`` is the real training set D_0, shape (n_0, d), float64.
    """
    train_size = spec.train_size if spec.train_size is not None else initial.shape[0]
    pool, pool_labels = initial, initial_labels
    train, train_labels = initial, initial_labels
    for t in range(1, spec.rounds + 1):
        start = time.perf_counter()
        generator.fit(train, train_labels)
        candidates, candidate_labels = generator.sample(
            spec.candidate_count, streams.candidates(t)
        )
        context = make_context(t, streams.selection(t))
        selection = selector.select(
            candidates.to(device=device, dtype=dtype), spec.select, context
        )
        picked = _checked_indices(selection, spec.select, spec.candidate_count, selector.name, t)
        kept = candidates[picked]
        kept_labels = None if candidate_labels is None else candidate_labels[picked]

        if spec.paradigm == "replace":
            pool, pool_labels = kept, kept_labels
            train, train_labels = kept, kept_labels
        else:
            pool = torch.cat([pool, kept])
            pool_labels = _cat_labels(pool_labels, kept_labels)
            train, train_labels = pool, pool_labels
            if spec.paradigm == "accumulate_subsample" and pool.shape[0] > train_size:
                order = torch.randperm(pool.shape[0], generator=streams.subsample(t))
                rows = torch.sort(order[:train_size]).values
                train = pool[rows]
                train_labels = None if pool_labels is None else pool_labels[rows]

        yield RoundRecord(
            round=t,
            candidates=candidates,
            candidate_labels=candidate_labels,
            selection=selection,
            pool=pool,
            pool_labels=pool_labels,
            seconds=time.perf_counter() - start,
        )


def _cat_labels(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None or b is None:
        return None
    return torch.cat([a, b])


def _checked_indices(selection: Selection, count: int, total: int, name: str, t: int) -> Tensor:
    # Wrong counts, repeats or out-of-range indices are a bug in the selector. Stop here,
    # because auditing them would describe a selection that never happened.
    indices = selection.indices.detach().cpu().long()
    if indices.ndim != 1 or indices.numel() != count:
        raise ValueError(f"selector {name}, round {t}: returned {indices.numel()} indices, not {count}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= total):
        raise ValueError(f"selector {name}, round {t}: index out of range 0..{total - 1}")
    if torch.unique(indices).numel() != count:
        raise ValueError(f"selector {name}, round {t}: returned repeated indices")
    return indices
