"""Power-law fit of a decaying series: known exponents, windows and invalid series."""

from __future__ import annotations

import numpy as np
import pytest

from selbias_audit.metrics.decay import (
    MIN_FIT_POINTS,
    DecayFit,
    fit_decay_exponent,
    summarize_psi,
)


def _power_law(psi: float, scale: float, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(rounds + 1)
    values = np.empty(rounds + 1)
    values[0] = 1.0
    values[1:] = scale * t[1:] ** -psi
    return t, values


def test_exact_power_law_recovered() -> None:
    t, values = _power_law(0.7, 3.0, 100)
    fit = fit_decay_exponent(t, values, (10, 100))
    assert fit.ok
    assert fit.psi == pytest.approx(0.7, abs=1e-12)
    assert fit.intercept == pytest.approx(np.log(3.0), abs=1e-10)
    assert fit.r_squared == pytest.approx(1.0, abs=1e-12)
    assert fit.stderr == pytest.approx(0.0, abs=1e-10)
    assert fit.points == 91
    assert fit.window == (10, 100)


def test_noisy_power_law_within_standard_error() -> None:
    rng = np.random.default_rng(11)
    t, values = _power_law(0.6, 1.0, 300)
    noisy = values * np.exp(rng.normal(0.0, 0.05, size=values.shape))
    fit = fit_decay_exponent(t, noisy, (20, 300))
    assert fit.ok
    assert fit.stderr is not None
    assert fit.stderr > 0.0
    # With four standard errors, a failure points to a biased estimator, not bad luck.
    assert abs(fit.psi - 0.6) < 4.0 * fit.stderr
    assert fit.r_squared > 0.9


def test_window_selects_regime() -> None:
    t = np.arange(1, 201, dtype=float)
    # Exponent 0.2 up to round 100, then 1.0, continuous at t = 100.
    values = np.where(t <= 100, t**-0.2, 100.0**0.8 * t**-1.0)
    early = fit_decay_exponent(t, values, (1, 100))
    late = fit_decay_exponent(t, values, (100, 200))
    assert early.psi == pytest.approx(0.2, abs=1e-10)
    assert late.psi == pytest.approx(1.0, abs=1e-10)


def test_default_window_skips_round_zero() -> None:
    t, values = _power_law(0.5, 2.0, 30)
    values[0] = 0.0  # log(0) would poison the fit if round 0 were used
    fit = fit_decay_exponent(t, values)
    assert fit.ok
    assert fit.window == (1, 30)
    assert fit.points == 30
    assert fit.psi == pytest.approx(0.5, abs=1e-12)


def test_window_end_beyond_series() -> None:
    t, values = _power_law(0.5, 1.0, 12)
    fit = fit_decay_exponent(t, values, (5, 300))
    assert fit.ok
    assert fit.points == 8


def test_minimum_points_boundary() -> None:
    t, values = _power_law(0.5, 1.0, 20)
    enough = fit_decay_exponent(t, values, (1, MIN_FIT_POINTS))
    too_few = fit_decay_exponent(t, values, (1, MIN_FIT_POINTS - 1))
    assert enough.ok
    assert enough.points == MIN_FIT_POINTS
    assert too_few.status == "too_few_points"
    assert too_few.points == MIN_FIT_POINTS - 1


@pytest.mark.parametrize(
    ("bad_value", "status"),
    [(0.0, "non_positive_values"), (-1.0, "non_positive_values"),
     (np.nan, "non_finite_values"), (np.inf, "non_finite_values")],
)
def test_invalid_values_give_status(bad_value: float, status: str) -> None:
    t, values = _power_law(0.5, 1.0, 20)
    values[7] = bad_value
    fit = fit_decay_exponent(t, values, (1, 20))
    assert fit.status == status
    assert not fit.ok
    assert fit.psi is None
    assert fit.r_squared is None
    assert fit.stderr is None
    assert fit.intercept is None


def test_invalid_value_outside_window_is_ignored() -> None:
    t, values = _power_law(0.5, 1.0, 20)
    values[3] = np.nan
    fit = fit_decay_exponent(t, values, (5, 20))
    assert fit.ok


def test_constant_series() -> None:
    t = np.arange(1, 11)
    fit = fit_decay_exponent(t, np.full(10, 0.25))
    assert fit.ok
    assert fit.psi == pytest.approx(0.0, abs=1e-12)
    assert fit.r_squared == 1.0


@pytest.mark.parametrize(
    ("rounds", "values", "window", "message"),
    [
        (np.arange(10), np.ones(10), (0, 9), "1 <= start"),
        (np.arange(10), np.ones(10), (6, 5), "1 <= start"),
        (np.arange(10), np.ones(9), None, "10 rounds but 9 values"),
        (np.ones((2, 5)), np.ones((2, 5)), None, "one-dimensional"),
        (np.array([1, 2, 2, 3, 4, 5]), np.ones(6), None, "distinct"),
        (np.array([1.0, np.nan, 3, 4, 5]), np.ones(5), None, "finite"),
    ],
)
def test_invalid_arguments_raise(
    rounds: np.ndarray, values: np.ndarray, window: tuple[int, int] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fit_decay_exponent(rounds, values, window)


def test_geometric_mean_curve_psi_is_mean_psi() -> None:
    # Least squares is linear in the log-values, so fitting the mean log-series gives
    # the mean of the per-run exponents.
    rng = np.random.default_rng(12)
    t = np.arange(1, 51)
    runs = [t ** -rng.uniform(0.3, 0.9) * np.exp(rng.normal(0, 0.1, t.size)) for _ in range(4)]
    per_run = [fit_decay_exponent(t, run).psi for run in runs]
    geometric = np.exp(np.mean(np.log(runs), axis=0))
    assert fit_decay_exponent(t, geometric).psi == pytest.approx(np.mean(per_run), abs=1e-12)


def test_summarize_psi_skips_failed_fits() -> None:
    fits = [
        DecayFit("ok", 0.5, 0.0, 1.0, 0.01, (1, 10), 10),
        DecayFit("ok", 0.7, 0.0, 1.0, 0.01, (1, 10), 10),
        DecayFit("non_positive_values", None, None, None, None, (1, 10), 10),
    ]
    summary = summarize_psi(fits)
    assert summary.n == 2
    assert summary.mean == pytest.approx(0.6)
    assert summary.std == pytest.approx(np.std([0.5, 0.7], ddof=1))
    mean, std, count = summary
    assert (mean, std, count) == (summary.mean, summary.std, 2)


def test_summarize_psi_small_counts() -> None:
    single = summarize_psi([DecayFit("ok", 0.4, 0.0, 1.0, 0.0, (1, 5), 5)])
    empty = summarize_psi([])
    assert single.mean == pytest.approx(0.4)
    assert single.std is None
    assert empty == (None, None, 0)
