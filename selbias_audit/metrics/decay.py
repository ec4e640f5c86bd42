"""Power-law decay exponent of a per-round series, such as the covariance trace ratio.

Top-alpha selection toward a fixed target shrinks the trace of the fitted covariance like
Tr(Sigma_t) = O(t^-psi), even when every round's data is accumulated. This module
estimates psi by ordinary least squares on the log-log scale,

.. math::

    \\log v_t = a - \\psi \\log t + e_t, \\qquad t \\in [t_0, t_1],

and reports the fit's R^2 and the standard error of psi. Values must be positive to
take a logarithm. A series with a zero, negative or non-finite value in the window
gets an explicit status instead of a number.

A fit needs at least :data:`MIN_FIT_POINTS` rounds inside the window (t >= 1). Fewer
points give status ``too_few_points``. An audit shorter than that has no decay
exponent to report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

MIN_FIT_POINTS = 5
"""Minimum number of rounds in the window for a fit. Five points leave three degrees of
freedom for the residual variance behind the standard error."""

DecayStatus = Literal["ok", "too_few_points", "non_positive_values", "non_finite_values"]


@dataclass(frozen=True)
class DecayFit:
    """Least-squares fit of log(value) = intercept - psi log(round) over a window.

    The numeric fields are None unless ``status`` is ``"ok"``.
    """

    status: DecayStatus
    """``ok``, or why no fit was made: ``too_few_points`` (fewer than MIN_FIT_POINTS
    rounds in the window), ``non_positive_values`` (a value <= 0 in the window) or
    ``non_finite_values`` (NaN or infinity in the window)."""
    psi: float | None
    """Decay exponent. A positive value means the series shrinks."""
    intercept: float | None
    """a, the fitted log-value at round 1."""
    r_squared: float | None
    """Coefficient of determination on the log scale. It is 1.0 for a constant series,
    which a flat line fits exactly (the convention of scikit-learn's ``r2_score``)."""
    stderr: float | None
    """Standard error of psi under i.i.d. residuals on the log scale."""
    window: tuple[int, int]
    """Inclusive round window (start, end) requested."""
    points: int
    """Number of rounds of the series that fall inside the window."""

    @property
    def ok(self) -> bool:
        """Return whether the fit was made."""
        return self.status == "ok"


class PsiSummary(NamedTuple):
    """Mean and spread of psi across runs, counting only fits with status ``ok``."""

    mean: float | None
    """Mean of psi, or None when no fit is ok."""
    std: float | None
    """Sample standard deviation (ddof = 1), or None for fewer than two ok fits."""
    n: int
    """Number of ok fits that entered the mean."""


def fit_decay_exponent(
    rounds: ArrayLike,
    values: ArrayLike,
    window: tuple[int, int] | None = None,
) -> DecayFit:
    """Fit the power-law exponent psi of ``values`` over ``rounds`` in ``window``.

    Parameters
    ----------
    rounds : array-like of int, shape (T,)
        Distinct round numbers. Round 0 may be present but is never inside a window,
        because log(0) is undefined.
    values : array-like of float, shape (T,)
        The series, for example Tr(Sigma_t) / Tr(Sigma_0).
    window : (int, int), optional
        Inclusive (start, end) with 1 <= start <= end. Defaults to (1, max(rounds)).
        Rounds outside it are ignored, and an end beyond the last round simply uses
        every round from start on.

    Returns
    -------
    DecayFit
        Status ``ok`` with psi, intercept, R^2 and the standard error of psi, or a
        status that gives the reason no fit was made.

    Raises
    ------
    ValueError
        When the arrays are not one-dimensional, differ in length, hold repeated or
        non-finite round numbers, or the window is invalid.
    """
    round_array = np.asarray(rounds, dtype=np.float64)
    value_array = np.asarray(values, dtype=np.float64)
    _check_series(round_array, value_array)
    if window is None:
        last = int(round_array.max()) if round_array.size else 1
        window = (1, max(last, 1))
    start, end = int(window[0]), int(window[1])
    if start < 1 or end < start:
        raise ValueError(
            f"fit_decay_exponent: window must satisfy 1 <= start <= end, got {window}. "
            "Start at round 1 or later, because log(0) is undefined"
        )

    inside = (round_array >= start) & (round_array <= end)
    points = int(inside.sum())
    fit_window = (start, end)
    if points < MIN_FIT_POINTS:
        return _no_fit("too_few_points", fit_window, points)
    y_raw = value_array[inside]
    if not np.isfinite(y_raw).all():
        return _no_fit("non_finite_values", fit_window, points)
    if (y_raw <= 0).any():
        return _no_fit("non_positive_values", fit_window, points)

    x = np.log(round_array[inside])
    y = np.log(y_raw)
    x_centred = x - x.mean()
    y_centred = y - y.mean()
    sxx = float(x_centred @ x_centred)
    slope = float(x_centred @ y_centred) / sxx
    intercept = float(y.mean() - slope * x.mean())

    residuals = y_centred - slope * x_centred
    ssr = float(residuals @ residuals)
    sst = float(y_centred @ y_centred)
    r_squared = 1.0 - ssr / sst if sst > 0.0 else 1.0
    stderr = float(np.sqrt(ssr / (points - 2) / sxx))
    return DecayFit("ok", -slope, intercept, r_squared, stderr, fit_window, points)


def summarize_psi(fits: Sequence[DecayFit]) -> PsiSummary:
    """Return the mean, sample standard deviation and count of psi over the ok fits.

    Fits whose status is not ``ok`` are left out, so ``len(fits) - summary.n`` counts
    them. Report psi per run as well, because runs that decay slowly dominate a mean
    curve.
    """
    psis = np.array([fit.psi for fit in fits if fit.ok], dtype=np.float64)
    count = int(psis.size)
    if count == 0:
        return PsiSummary(None, None, 0)
    std = float(psis.std(ddof=1)) if count >= 2 else None
    return PsiSummary(float(psis.mean()), std, count)


def _check_series(rounds: np.ndarray, values: np.ndarray) -> None:
    if rounds.ndim != 1 or values.ndim != 1:
        raise ValueError(
            "fit_decay_exponent: rounds and values must be one-dimensional, got shapes "
            f"{rounds.shape} and {values.shape}"
        )
    if rounds.shape != values.shape:
        raise ValueError(
            f"fit_decay_exponent: {rounds.size} rounds but {values.size} values. Pass one "
            "value per round"
        )
    if not np.isfinite(rounds).all():
        raise ValueError("fit_decay_exponent: round numbers must be finite")
    if np.unique(rounds).size != rounds.size:
        raise ValueError("fit_decay_exponent: round numbers must be distinct")


def _no_fit(status: DecayStatus, window: tuple[int, int], points: int) -> DecayFit:
    return DecayFit(status, None, None, None, None, window, points)
