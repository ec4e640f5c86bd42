"""Run every selector of an audit through the same loop and measure each round."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selbias_audit.data.modes import tail_retention
from selbias_audit.data.partition import mode_shares
from selbias_audit.errors import NonFiniteError, RunError, SelbiasError
from selbias_audit.generators.gaussian import build_generator
from selbias_audit.loop import LoopStreams, RoundRecord, run_loop
from selbias_audit.metrics.decay import MIN_FIT_POINTS, fit_decay_exponent
from selbias_audit.metrics.distances import frechet_distance, sinkhorn_divergence
from selbias_audit.metrics.diversity import trace_ratio
from selbias_audit.metrics.manifold import knn_radii, manifold_scores, subsample, vendi_score
from selbias_audit.receipt.model import (
    SAMPLE_METRICS,
    DecayFit,
    MetricValue,
    RoundMetrics,
    SelectorRun,
    SolveSummary,
)
from selbias_audit.selectors.base import Selection, SelectionContext
from selbias_audit.selectors.registry import build_selector, selector_scope
from selbias_audit.setup import AuditSetup
from selbias_audit.spec import RandomSelectorSpec, selector_label

# Fewer rounds than this give no meaningful power-law fit of the trace decay.
MIN_ROUNDS_FOR_DECAY = MIN_FIT_POINTS

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PlannedRun:
    """One selector run to perform."""

    label: str
    spec: Any
    role: str
    stream: str
    """Name of the run's selection stream (its seed is derived from it)."""


def plan_runs(setup: AuditSetup) -> list[PlannedRun]:
    """Return the audited run, the baselines and the random seeds, in display order.

    In a replay the audited run is the logged selection, and its ``spec`` is the
    :class:`~selbias_audit.spec.ReplaySpec`.
    """
    selection = setup.spec.selection
    replay = setup.spec.replay
    if replay is not None:
        runs = [PlannedRun(replay.label, replay, "audited", "audited")]
    else:
        audited = setup.spec.audited_selector
        runs = [PlannedRun(selector_label(audited), audited, "audited", "audited")]
    seen = {runs[0].label}
    for spec in selection.compare:
        label = selector_label(spec)
        # The random baseline always runs with several seeds below; a second copy adds nothing.
        if spec.method == "random" or label in seen:
            continue
        seen.add(label)
        runs.append(PlannedRun(label, spec, "baseline", f"baseline:{label}"))
    for s in range(selection.random_seeds):
        runs.append(PlannedRun(f"random#{s}", RandomSelectorSpec(), "random", f"random:{s}"))
    return runs


def measure_round(
    setup: AuditSetup,
    round_index: int,
    pool: Tensor,
    pool_labels: Tensor | None,
    selected: Tensor,
    selected_labels: Tensor | None,
) -> RoundMetrics:
    """Return the metrics of one round from the pool after the round and the kept batch."""
    pool_modes = setup.modes.assign(pool, pool_labels).cpu().numpy()
    selected_modes = setup.modes.assign(selected, selected_labels).cpu().numpy()
    return round_metrics(setup, round_index, pool, pool_modes, selected_modes)


def round_metrics(
    setup: AuditSetup,
    round_index: int,
    pool: Tensor,
    pool_modes: np.ndarray,
    selected_modes: np.ndarray,
) -> RoundMetrics:
    """Return the metrics of one round from the pool features and the mode ids already assigned.

    ``pool_modes`` (P,) and ``selected_modes`` (n,) are the mode ids of the pool after the
    round and of the kept batch.
    """
    count = setup.mode_count
    pool_shares = mode_shares(pool_modes, count)
    if setup.spec.solver.divergence_metric:
        divergence = sinkhorn_divergence(
            pool.to(setup.device), setup.target.to(setup.device), blur=setup.spec.solver.metric_blur
        )
    else:
        divergence = MetricValue(status="not_computed", detail="solver.divergence_metric is off")
    return RoundMetrics(
        round=round_index,
        tail_retention=tail_retention(pool_shares, setup.target_shares, setup.tail.modes),
        trace_ratio=trace_ratio(pool, setup.target_trace),
        frechet_distance=frechet_distance(pool, setup.target_mean, setup.target_cov),
        sinkhorn_divergence=divergence,
        **sample_metrics(setup, pool),
        pool_size=int(pool.shape[0]),
        pool_mode_shares=[float(v) for v in pool_shares],
        selected_mode_shares=[float(v) for v in mode_shares(selected_modes, count)],
    )


def sample_metrics(setup: AuditSetup, pool: Tensor) -> dict[str, MetricValue]:
    """Return precision, recall, density, coverage and the Vendi ratio of the pool.

    Sets above the manifold size limit are subsampled from a recorded seed stream.
    """
    generator = setup.seeds.torch("metrics", "manifold subsample")
    target = subsample(setup.target, generator)
    sample = subsample(pool.detach().to("cpu", torch.float64), generator)
    try:
        # The target side is the same at every round and for every selector.
        if "target_manifold" not in setup.extras:
            setup.extras["target_manifold"] = (knn_radii(target), vendi_score(target))
        target_radii, target_vendi = setup.extras["target_manifold"]
        scores = manifold_scores(target, sample, target_radii=target_radii)
        vendi = vendi_score(sample) / target_vendi
    except ValueError as error:
        return {
            name: MetricValue(status="not_computed", detail=str(error)) for name in SAMPLE_METRICS
        }
    values = (scores.precision, scores.recall, scores.density, scores.coverage, vendi)
    return {
        name: MetricValue(status="ok", value=value)
        if math.isfinite(value)
        else MetricValue(status="non_finite", detail=f"{name} evaluated to {value}")
        for name, value in zip(SAMPLE_METRICS, values, strict=True)
    }


def fit_decay(rounds: list[RoundMetrics]) -> DecayFit:
    """Fit Tr(Sigma_t) ~ t^-psi over all rounds of a run, when there are enough."""
    window = [1, len(rounds)]
    if len(rounds) < MIN_ROUNDS_FOR_DECAY:
        return DecayFit(status="too_few_rounds", window=window)
    values = np.array([r.trace_ratio for r in rounds])
    if not np.all(values > 0):
        return DecayFit(status="non_positive", window=window)
    fit = fit_decay_exponent(np.arange(1, len(rounds) + 1), values, window=(1, len(rounds)))
    if not fit.ok or fit.psi is None:
        return DecayFit(status="non_positive", window=window)
    return DecayFit(
        status="ok", psi=float(fit.psi), stderr=float(fit.stderr or 0.0),
        r_squared=float(fit.r_squared or 0.0), window=window,
    )


def solve_summaries(round_index: int, selection: Selection) -> list[SolveSummary]:
    """Copy a selection's solve records into the receipt's form."""
    # SolveSummary is SolveRecord plus the round, field for field.
    return [SolveSummary(round=round_index, **asdict(s)) for s in selection.solves]


def run_selector(
    setup: AuditSetup,
    planned: PlannedRun,
    progress: ProgressCallback | None = None,
    on_record: Callable[[RoundRecord], None] | None = None,
) -> SelectorRun:
    """Run one selector through all rounds of the loop and measure every round.

    ``on_record`` receives each round's record (candidates, selection, pool) after the
    round is measured, for example to write a replay log of the run.
    """
    spec = setup.spec
    loop_spec = spec.rerun_loop
    seeds = setup.seeds
    selector = build_selector(planned.spec)
    generator = build_generator(spec.generator, max(setup.mode_count, 1))
    references = tuple(r.to(device=setup.device, dtype=setup.dtype) for r in setup.references)
    selection_seed = seeds.seed("selection", planned.stream)
    state: dict[str, Any] = {}

    def make_context(t: int, rng: torch.Generator) -> SelectionContext:
        return SelectionContext(
            round=t, references=references, generator=rng, device=setup.device,
            dtype=setup.dtype, reference_labels=setup.reference_labels, state=state,
            extras=setup.extras,
        )

    streams = LoopStreams(
        candidates=lambda t: seeds.torch("candidates", t),
        subsample=lambda t: seeds.torch("subsample", t),
        selection=lambda t: torch.Generator().manual_seed(selection_seed + t),
    )
    rounds: list[RoundMetrics] = []
    solves: list[SolveSummary] = []
    start = time.perf_counter()
    loop = run_loop(
        spec=loop_spec, selector=selector, generator=generator, initial=setup.initial,
        initial_labels=setup.initial_labels, make_context=make_context, streams=streams,
        device=setup.device, dtype=setup.dtype,
    )
    t = 0
    try:
        for record in loop:
            t = record.round
            picked = record.selection.indices.cpu().long()
            kept_labels = None if record.candidate_labels is None else record.candidate_labels[picked]
            rounds.append(
                measure_round(setup, t, record.pool, record.pool_labels,
                              record.candidates[picked], kept_labels)
            )
            solves += solve_summaries(t, record.selection)
            if on_record is not None:
                on_record(record)
            if progress is not None:
                progress(planned.label, t, loop_spec.rounds)
    except SelbiasError:
        raise
    except (ValueError, RuntimeError, torch.linalg.LinAlgError) as exc:
        raise RunError(
            f"selector {planned.label} failed in round {t + 1}: {exc}",
            hint="rerun with -vv for the traceback",
        ) from exc
    return selector_run(
        planned, selection_seed, rounds, solves, time.perf_counter() - start
    )


def selector_run(
    planned: PlannedRun,
    seed: int,
    rounds: list[RoundMetrics],
    solves: list[SolveSummary],
    seconds: float,
) -> SelectorRun:
    """Return the receipt's record of a finished run of a selector built from its spec."""
    check_rounds_finite(planned.label, rounds)
    return SelectorRun(
        label=planned.label,
        method=planned.spec.method,
        role=planned.role,  # type: ignore[arg-type]
        scope=selector_scope(planned.spec),
        options=planned.spec.model_dump(mode="json", exclude={"label"}),
        seed=seed,
        rounds=rounds,
        decay=fit_decay(rounds),
        solves=solves,
        seconds=seconds,
    )


def check_rounds_finite(label: str, rounds: list[RoundMetrics]) -> None:
    """Raise NonFiniteError when a run's tail retention or trace ratio is not finite."""
    for r in rounds:
        if not np.isfinite([r.tail_retention, r.trace_ratio]).all():
            raise NonFiniteError(f"selector {label}, round {r.round}: non-finite metric")
