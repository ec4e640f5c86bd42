"""Distances between a sample and the target: Frechet distance and Sinkhorn divergence."""

from __future__ import annotations

import torch
from torch import Tensor

from selbias_audit.metrics.gaussian import gaussian_w2_squared
from selbias_audit.receipt.model import MetricValue


def gaussian_fit(features: Tensor) -> tuple[Tensor, Tensor]:
    """Return the float64 mean (d,) and unbiased covariance (d, d) of (n, d) features."""
    x = features.detach().double()
    mean = x.mean(dim=0)
    centred = x - mean
    cov = centred.T @ centred / max(x.shape[0] - 1, 1)
    return mean, cov


def frechet_distance_gaussians(
    mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor
) -> float:
    r"""Return the Frechet distance between two Gaussians in float64.

    .. math::
        d^2 = \|\mu_a - \mu_b\|^2 + \operatorname{Tr}\big(\Sigma_a + \Sigma_b
              - 2 (\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2})^{1/2}\big)

    This is the squared 2-Wasserstein distance between the Gaussians (as FID reports
    it), in squared feature units. The symmetric form needs no ridge for a singular
    covariance.
    """
    return float(gaussian_w2_squared(mean_a, cov_a, mean_b, cov_b))


def frechet_distance(features: Tensor, target_mean: Tensor, target_cov: Tensor) -> MetricValue:
    """Return the Frechet distance of the Gaussian fit of ``features`` to the target's fit."""
    if features.shape[0] < 2:
        return MetricValue(status="not_computed", detail="fewer than 2 samples")
    mean, cov = gaussian_fit(features)
    value = frechet_distance_gaussians(mean, cov, target_mean, target_cov)
    if not torch.isfinite(torch.tensor(value)):
        return MetricValue(status="non_finite", detail="eigendecomposition produced NaN")
    return MetricValue(status="ok", value=value)


def sinkhorn_divergence(
    features: Tensor, target: Tensor, *, blur: float, dtype: torch.dtype = torch.float32
) -> MetricValue:
    r"""Return the debiased Sinkhorn divergence S_eps between a sample and the target.

    Uses geomloss with the cost ||x - y||^2 / 2 and eps = blur^2, both measures
    uniform. S_eps is non-negative, zero only for equal measures, and bounds the
    global risk of a model trained on the sample. float32 is the default because the
    tests show it agrees with float64 to a relative 1e-4 on standardised features.
    """
    from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.5, debias=True, backend="tensorized")
    value = loss(features.to(dtype), target.to(device=features.device, dtype=dtype))
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        return MetricValue(status="non_finite", detail="geomloss returned a non-finite value")
    # Debiasing can leave a tiny negative value from rounding; it is zero.
    return MetricValue(status="ok", value=max(value, 0.0))
