"""The gate's rules on hand-made runs, and tail erosion on a case with a known answer."""

from __future__ import annotations

import pytest

from selbias_audit.gate import evaluate_gate, random_band
from selbias_audit.receipt.model import DecayFit, MetricValue, RoundMetrics, SelectorRun, SolveSummary
from selbias_audit.spec import GateSpec


def _run(label: str, role: str, tails: list[float], frechet: float = 1.0,
         converged: bool = True) -> SelectorRun:
    rounds = [
        RoundMetrics(
            round=i + 1, tail_retention=t, trace_ratio=1.0,
            frechet_distance=MetricValue(status="ok", value=frechet),
            sinkhorn_divergence=MetricValue(status="not_computed"), pool_size=10,
            pool_mode_shares=[0.5, 0.5], selected_mode_shares=[0.5, 0.5],
        )
        for i, t in enumerate(tails)
    ]
    solves = [SolveSummary(round=1, purpose="potentials", client=0, backend="torch",
                           dtype="float32", blur=0.05, epsilon=0.0025, iterations=10,
                           converged=converged, marginal_error=1e-4)]
    return SelectorRun(label=label, method="x", role=role, scope="local", options={}, seed=1,
                       rounds=rounds, decay=DecayFit(status="too_few_rounds", window=[1, 3]),
                       solves=solves, seconds=0.0)


RANDOMS = [_run("r0", "random", [0.9, 0.9, 0.9]), _run("r1", "random", [1.0, 1.0, 1.0])]


def test_random_band_mean_and_sample_std() -> None:
    band = random_band(RANDOMS)
    assert band[0].mean == pytest.approx(0.95)
    # Sample standard deviation of {0.9, 1.0}: 0.1 / sqrt(2).
    assert band[0].std == pytest.approx(0.0707106781, rel=1e-8)
    assert (band[0].min, band[0].max) == (0.9, 1.0)


def test_auto_margin_passes_within_spread() -> None:
    verdict = evaluate_gate(GateSpec(), _run("a", "audited", [0.89, 0.9, 0.95]),
                            random_band(RANDOMS), [])
    assert verdict.passed
    assert verdict.checks[0].rounds_failed == []


def test_auto_margin_fails_below_spread() -> None:
    verdict = evaluate_gate(GateSpec(), _run("a", "audited", [0.95, 0.8, 0.7]),
                            random_band(RANDOMS), [])
    assert not verdict.passed
    assert verdict.checks[0].rounds_failed == [2, 3]
    assert verdict.summary.startswith("FAIL")


def test_explicit_margin_and_last_round() -> None:
    audited = _run("a", "audited", [0.5, 0.9, 0.9])
    assert not evaluate_gate(GateSpec(margin=0.0), audited, random_band(RANDOMS), []).passed
    last = evaluate_gate(GateSpec(rounds="last", margin=0.1), audited, random_band(RANDOMS), [])
    assert last.passed


def test_round_list_ignores_rounds_beyond_run() -> None:
    audited = _run("a", "audited", [0.5, 0.95, 0.95])
    verdict = evaluate_gate(GateSpec(rounds=[2, 3, 40]), audited, random_band(RANDOMS), [])
    assert verdict.passed


def test_max_frechet_rule() -> None:
    audited = _run("a", "audited", [1.0, 1.0, 1.0], frechet=7.0)
    verdict = evaluate_gate(GateSpec(max_frechet=5.0), audited, random_band(RANDOMS), [])
    assert not verdict.passed
    assert [c.name for c in verdict.checks if not c.passed] == ["max_frechet"]


def test_governance_rule() -> None:
    audited = _run("a", "audited", [1.0, 1.0, 1.0])
    spec = GateSpec(require_governance=True)
    verdict = evaluate_gate(spec, audited, random_band(RANDOMS), ["governance.license.data"])
    assert not verdict.passed
    assert "governance.license.data" in verdict.checks[-1].detail


def test_nonconvergence_rule() -> None:
    audited = _run("a", "audited", [1.0, 1.0, 1.0], converged=False)
    verdict = evaluate_gate(GateSpec(fail_on_nonconvergence=True), audited,
                            random_band(RANDOMS), [])
    assert not verdict.passed
    assert verdict.checks[-1].rounds_failed == [1]


def test_single_class_verifier_erodes_tail_random_keeps_it(write_run) -> None:
    # Under Replace, a verifier whose reference holds only class 0 keeps mostly zeros,
    # so the other nine classes (the tail) are nearly gone within three rounds, while
    # random selection keeps their target share.
    from selbias_audit.audit import plan_runs, run_selector
    from selbias_audit.setup import prepare
    from selbias_audit.spec import load_spec

    path = write_run(loop={"paradigm": "replace", "rounds": 3, "select": 200,
                           "candidates": 400, "initial_size": 400})
    spec, _ = load_spec(path)
    setup = prepare(spec, path)
    assert setup.tail.modes == list(range(1, 10))
    runs = {p.label: run_selector(setup, p) for p in plan_runs(setup)}
    audited = runs["center_match[client 0]"].rounds[-1].tail_retention
    randoms = [r.rounds[-1].tail_retention for k, r in runs.items() if k.startswith("random")]
    assert audited < 0.2
    # Sampling noise of 200 draws over ten classes costs random about 0.1.
    assert min(randoms) > 0.75
