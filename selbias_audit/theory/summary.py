"""The JSON-ready summary of a theory run: trace ratio checkpoints and psi per run.

The summary is plain data (dicts, lists, floats, None) so that the JSON file and the
PDF report are rendered from the same values and cannot disagree.
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import torch

from selbias_audit.metrics.decay import DecayFit, fit_decay_exponent, summarize_psi
from selbias_audit.theory.run import SettingTrace, TheoryResult

SUMMARY_SCHEMA = "selbias-audit/gaussian-theory-summary/1"

CHECKPOINTS = (10, 50, 100, 200, 300)
"""Rounds at which the trace ratio is summarised (those beyond T are left out, and T is
added when it is not among them)."""

BAND = "min-max across seeds"
"""Description of the band around each mean curve in the figure."""


def checkpoint_rounds(rounds: int) -> list[int]:
    """Return the summary rounds for a run of ``rounds`` rounds."""
    chosen = [t for t in CHECKPOINTS if t <= rounds]
    if rounds not in chosen:
        chosen.append(rounds)
    return chosen


def describe_values(values: np.ndarray) -> dict[str, float | None]:
    """Return mean, sample std, standard error, min, max and geometric mean of ``values``.

    ``std`` and ``sem`` (std / sqrt(n)) are None for a single value. The geometric mean
    is None when a value is not positive.
    """
    values = np.asarray(values, dtype=np.float64)
    count = values.size
    std = float(values.std(ddof=1)) if count >= 2 else None
    positive = bool((values > 0).all())
    return {
        "mean": float(values.mean()),
        "std": std,
        "sem": std / float(np.sqrt(count)) if std is not None else None,
        "min": float(values.min()),
        "max": float(values.max()),
        "geometric_mean": float(np.exp(np.log(values).mean())) if positive else None,
    }


def fit_to_dict(fit: DecayFit) -> dict[str, Any]:
    """Return the fields of a psi fit as plain data."""
    return {
        "status": fit.status,
        "psi": fit.psi,
        "stderr": fit.stderr,
        "r_squared": fit.r_squared,
        "intercept": fit.intercept,
        "window": list(fit.window),
        "points": fit.points,
    }


def theory_summary(result: TheoryResult) -> dict[str, Any]:
    """Build the summary of ``result``: parameters, trace ratio checkpoints, psi fits.

    For each setting it contains the trace ratio at :func:`checkpoint_rounds` (mean, spread
    and range across seeds), the final squared mean errors and W2 distance, and psi of
    every run over the fit window with mean, sample std and R^2, plus psi of the mean
    curve. A second psi fit over the last half of the rounds shows whether psi still
    drifts with the window.
    """
    spec = result.spec
    rounds = spec.rounds
    late_window = (max(1, rounds // 2), rounds)
    settings = {}
    for trace in result.settings:
        settings[trace.setting] = _setting_summary(trace, rounds, result.seeds, late_window)
    return {
        "schema": SUMMARY_SCHEMA,
        "parameters": {
            **spec.model_dump(mode="json"),
            "candidates": result.candidates,
            "fit_window": list(result.fit_window),
        },
        "seeds": list(result.seeds),
        "stream_seeds": dict(result.stream_seeds),
        "checkpoints": checkpoint_rounds(rounds),
        "late_window": list(late_window),
        "band": BAND,
        "settings": settings,
        "environment": {
            "device": result.device,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "elapsed_seconds": result.seconds,
    }


def _setting_summary(
    trace: SettingTrace,
    rounds: int,
    seeds: tuple[int, ...],
    late_window: tuple[int, int],
) -> dict[str, Any]:
    round_numbers = np.arange(rounds + 1)
    late_fits = [fit_decay_exponent(round_numbers, row, late_window) for row in trace.trace_ratio]
    return {
        "label": trace.label,
        "trace_ratio": {
            str(t): describe_values(trace.trace_ratio[:, t]) for t in checkpoint_rounds(rounds)
        },
        "final": {
            "round": rounds,
            "mean_error_sq": describe_values(trace.mean_error_sq[:, rounds]),
            "biased_mean_error_sq": describe_values(trace.biased_mean_error_sq[:, rounds]),
            "w2": describe_values(trace.w2[:, rounds]),
        },
        "psi": _psi_summary(trace.fits, seeds, trace.mean_curve_fit),
        "psi_late_window": _psi_summary(tuple(late_fits), seeds, None),
        "seconds": trace.seconds,
    }


def _psi_summary(
    fits: tuple[DecayFit, ...], seeds: tuple[int, ...], mean_curve: DecayFit | None
) -> dict[str, Any]:
    summary = summarize_psi(fits)
    r_squared = [fit.r_squared for fit in fits if fit.ok and fit.r_squared is not None]
    result: dict[str, Any] = {
        "window": list(fits[0].window) if fits else None,
        "mean": summary.mean,
        "std": summary.std,
        "n": summary.n,
        "not_fitted": len(fits) - summary.n,
        "min": min((f.psi for f in fits if f.psi is not None), default=None),
        "max": max((f.psi for f in fits if f.psi is not None), default=None),
        "r_squared_min": min(r_squared, default=None),
        "r_squared_mean": float(np.mean(r_squared)) if r_squared else None,
        "per_run": [{"seed": seed, **fit_to_dict(fit)} for seed, fit in zip(seeds, fits)],
    }
    if mean_curve is not None:
        result["mean_curve"] = fit_to_dict(mean_curve)
    return result
