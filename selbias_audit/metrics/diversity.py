"""Diversity of a sample relative to the target: covariance trace ratio."""

from __future__ import annotations

import torch
from torch import Tensor


def covariance_trace(features: Tensor) -> float:
    """Return Tr(Sigma) of the (n, d) features, with the 1/n (MLE) normalisation.

    The trace is the sum of per-feature variances, computed from centred values in
    float64 so that a large mean does not cancel the variance away.
    """
    x = features.detach().double()
    if x.shape[0] == 0:
        raise ValueError("covariance trace of an empty sample")
    centred = x - x.mean(dim=0)
    return float((centred**2).sum() / x.shape[0])


def trace_ratio(features: Tensor, target_trace: float) -> float:
    """Return Tr(Sigma_sample) / Tr(Sigma_target); 1 keeps the target's spread, 0 is collapse."""
    if target_trace <= 0:
        raise ValueError(f"target covariance trace must be positive, got {target_trace}")
    return covariance_trace(features) / target_trace
