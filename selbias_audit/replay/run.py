"""Measure the logged selection and apply the baselines to the same logged candidate pools.

The rounds are streamed: each round file is read once, every run (the logged selection,
the baselines and the random seeds) selects from its candidates and is measured, and the
round is released before the next is read. A run keeps only its own training pool, that
is D_0 plus what it kept so far (accumulate) or its last kept batch (replace).

The baselines are a per-round counterfactual. In round t each baseline keeps as many of
the logged candidates as the pipeline did. The candidates themselves were generated from
the pipeline's own pool, not from the baseline's, so a baseline's pool shows what another
selection stage would have kept from the same candidates, not what a whole pipeline using
it would have produced.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selbias_audit.audit import (
    PlannedRun,
    check_rounds_finite,
    fit_decay,
    round_metrics,
    selector_run,
    solve_summaries,
)
from selbias_audit.errors import RunError, SelbiasError
from selbias_audit.receipt.model import RoundMetrics, SelectorRun, SolveSummary
from selbias_audit.replay.files import LoggedRound
from selbias_audit.replay.setup import ReplayInputs
from selbias_audit.selectors.base import Selection, SelectionContext, Selector
from selbias_audit.selectors.registry import build_selector
from selbias_audit.setup import AuditSetup
from selbias_audit.spec import ReplaySpec

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class _RunState:
    """One run's pool and records while the rounds stream past."""

    planned: PlannedRun
    selector: Selector | None
    """None for the logged selection, whose indices come from the log."""
    seed: int
    pool: Tensor
    """(P, d) float64 features of the run's training pool after the last round."""
    pool_modes: np.ndarray
    """(P,) mode id of each pool sample, assigned once when the sample joined the pool."""
    state: dict[str, Any] = field(default_factory=dict)
    rounds: list[RoundMetrics] = field(default_factory=list)
    solves: list[SolveSummary] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class _Round:
    """One logged round in the audit's feature space, shared by every run."""

    index: int
    features: Tensor
    """(N, d) float64 transformed candidates on the CPU."""
    on_device: Tensor
    """The same candidates on the audit's device and OT dtype, handed to selectors."""
    modes: np.ndarray
    """(N,) mode id of each candidate."""
    kept: Tensor
    """(n,) int64 indices the pipeline kept."""


def _start(setup: AuditSetup, planned: PlannedRun, initial_modes: np.ndarray) -> _RunState:
    logged = isinstance(planned.spec, ReplaySpec)
    return _RunState(
        planned=planned,
        selector=None if logged else build_selector(planned.spec),
        seed=setup.seeds.seed("selection", planned.stream),
        pool=setup.initial,
        pool_modes=initial_modes,
    )


def _load_round(setup: AuditSetup, replay: ReplayInputs, logged: LoggedRound) -> _Round:
    features = torch.as_tensor(setup.transform.apply(logged.candidates), dtype=torch.float64)
    labels = None if logged.labels is None else torch.as_tensor(logged.labels)
    carried = labels if replay.logged_labels_used else None
    modes = setup.modes.assign(features, carried).cpu().numpy()
    return _Round(
        index=logged.round,
        features=features,
        on_device=features.to(device=setup.device, dtype=setup.dtype),
        modes=modes,
        kept=torch.as_tensor(logged.kept, dtype=torch.int64),
    )


def _check_selection(selection: Selection, count: int, total: int) -> Tensor:
    # Wrong counts, repeats or out-of-range values are a bug in the selector. Stop rather
    # than measure a selection that never happened.
    indices = selection.indices.detach().cpu().long()
    if indices.ndim != 1 or indices.numel() != count:
        raise ValueError(f"returned {indices.numel()} indices, not {count}")
    if int(indices.min()) < 0 or int(indices.max()) >= total:
        raise ValueError(f"returned an index out of range 0..{total - 1}")
    if torch.unique(indices).numel() != count:
        raise ValueError("returned repeated indices")
    return indices


def _pick(
    setup: AuditSetup, run: _RunState, current: _Round, references: tuple[Tensor, ...]
) -> Tensor:
    """Return the indices this run keeps from the round's candidates."""
    if run.selector is None:
        return current.kept
    count = int(current.kept.numel())
    context = SelectionContext(
        round=current.index,
        references=references,
        generator=torch.Generator().manual_seed(run.seed + current.index),
        device=setup.device,
        dtype=setup.dtype,
        reference_labels=setup.reference_labels,
        state=run.state,
        extras=setup.extras,
    )
    selection = run.selector.select(current.on_device, count, context)
    picked = _check_selection(selection, count, current.features.shape[0])
    run.solves += solve_summaries(current.index, selection)
    return picked


def _advance(
    setup: AuditSetup, replay: ReplayInputs, run: _RunState, current: _Round, picked: Tensor
) -> None:
    """Update the run's pool by the paradigm's rule and measure the round."""
    kept = current.features[picked]
    kept_modes = current.modes[picked.numpy()]
    if replay.paradigm == "replace":
        run.pool, run.pool_modes = kept, kept_modes
    else:
        # Accumulate-Subsample trains on a subsample, but its pool is all data so far.
        run.pool = torch.cat([run.pool, kept])
        run.pool_modes = np.concatenate([run.pool_modes, kept_modes])
    run.rounds.append(round_metrics(setup, current.index, run.pool, run.pool_modes, kept_modes))


def _logged_run(inputs: ReplayInputs, run: _RunState) -> SelectorRun:
    """Return the receipt's record of the logged selection."""
    replay, log = inputs.spec, inputs.log
    check_rounds_finite(run.planned.label, run.rounds)
    orders = Counter(r.score_order for r in log.rounds if r.score_order is not None)
    options: dict[str, Any] = {
        "log": str(log.folder),
        "paradigm": inputs.paradigm,
        "verifier_client": replay.verifier_client,
        "scoring_metric": replay.scoring_metric,
        "rounds_with_scores": sum(orders.values()),
        "rounds_kept_lowest_scores": orders.get("lowest", 0),
        "rounds_kept_highest_scores": orders.get("highest", 0),
    }
    return SelectorRun(
        label=run.planned.label,
        method="logged",
        role="audited",
        scope=replay.verifier_scope,
        options=options,
        seed=run.seed,
        rounds=run.rounds,
        decay=fit_decay(run.rounds),
        solves=[],
        seconds=run.seconds,
    )


def run_replay(
    setup: AuditSetup, planned: list[PlannedRun], progress: ProgressCallback | None = None
) -> list[SelectorRun]:
    """Stream the logged rounds once and measure every planned run on each of them.

    ``planned[0]`` is the logged selection. Returns one record per planned run, in order.
    """
    inputs = setup.replay
    if inputs is None:
        raise ValueError("run_replay needs the setup of a replay")
    total = inputs.log.manifest.rounds
    initial_modes = np.empty(0, dtype=np.int64)
    if setup.initial.shape[0] > 0:
        carried = setup.initial_labels if inputs.logged_labels_used else None
        initial_modes = setup.modes.assign(setup.initial, carried).cpu().numpy()
    references = tuple(r.to(device=setup.device, dtype=setup.dtype) for r in setup.references)
    runs = [_start(setup, p, initial_modes) for p in planned]

    for logged in inputs.log.iter_rounds():
        current = _load_round(setup, inputs, logged)
        # Release this round's arrays before the next file is read.
        del logged
        for run in runs:
            start = time.perf_counter()
            try:
                picked = _pick(setup, run, current, references)
                _advance(setup, inputs, run, current, picked)
            except SelbiasError:
                raise
            except (ValueError, RuntimeError, torch.linalg.LinAlgError) as exc:
                raise RunError(
                    f"selector {run.planned.label} failed in logged round {current.index}: {exc}",
                    hint="rerun with -vv for the traceback",
                ) from exc
            run.seconds += time.perf_counter() - start
            if progress is not None:
                progress(run.planned.label, current.index, total)
        del current

    records = [_logged_run(inputs, runs[0])]
    records += [selector_run(r.planned, r.seed, r.rounds, r.solves, r.seconds) for r in runs[1:]]
    return records
