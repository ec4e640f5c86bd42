"""The Gaussian model of the collapse theory: true distribution, biased target, sampling.

For dimension d and seed s the construction is

.. math::

    \\mu^* \\sim \\mathcal N(0, I_d), \\qquad
    \\Sigma^* = A A^\\top + 0.1\\, I_d,\\quad A_{ij} \\overset{iid}{\\sim} \\mathcal N(0, 1),

    u_b = \\mu^* + 3 \\sum_{j \\in J} z_j e_j, \\qquad
    \\Sigma_b = 0.3\\, \\Sigma^*,

where J is a set of floor(d/2) distinct coordinates chosen uniformly and z_j ~ N(0, 1).
N(u_b, Sigma_b) is the "local, narrower view" that a top-alpha selector ranks
candidates against. The 0.3 factor scales the Mahalanobis distance to u_b by a constant,
so it never changes a ranking. Only the shape Sigma* and the offset u_b matter.

The draws use numpy's legacy ``RandomState(s)`` in the order mu*, A, J, z. That is the
order of the published Gaussian experiment (``gaussian_correct.py`` in the authors'
release of "When Sample Selection Bias Precipitates Model Collapse"), so a seed below
2**32 gives the same mu* and biased target as that script, and the same Sigma* up to the
last bit, because Sigma* is symmetrised here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

_SIGMA_STAR_RIDGE = 0.1
_BIAS_SHIFT_SCALE = 3.0
_BIASED_COV_SCALE = 0.3


@dataclass(frozen=True)
class GaussianConstruction:
    """True distribution N(mu*, Sigma*) and biased target N(u_b, Sigma_b) of one seed."""

    mu_star: np.ndarray
    """(d,) float64 mean of the true distribution."""
    sigma_star: np.ndarray
    """(d, d) float64 covariance of the true distribution, positive definite."""
    biased_mean: np.ndarray
    """(d,) float64 u_b: mu* with floor(d/2) coordinates shifted by 3 z."""
    biased_cov: np.ndarray
    """(d, d) float64 Sigma_b = 0.3 Sigma*."""
    seed: int
    """Seed the construction was drawn from."""
    shifted_coordinates: tuple[int, ...] = ()
    """Coordinates J of mu* that were shifted to make u_b, in draw order."""

    @property
    def dim(self) -> int:
        """Return the dimension d."""
        return int(self.mu_star.shape[0])


def _legacy_state(seed: int) -> np.random.RandomState:
    if not 0 <= seed < 2**64:
        raise ValueError(f"Gaussian construction seed must be in [0, 2**64), got {seed}")
    if seed < 2**32:
        return np.random.RandomState(seed)
    # RandomState takes an integer seed below 2**32 only. Larger seeds are split into
    # two 32-bit words, which seeds Mersenne Twister through its array initialiser.
    return np.random.RandomState([seed & 0xFFFFFFFF, seed >> 32])


def gaussian_construction(dim: int, seed: int) -> GaussianConstruction:
    """Draw mu*, Sigma* and the biased target (u_b, Sigma_b) for one seed.

    Parameters
    ----------
    dim : int
        Dimension d >= 1. For d = 1 no coordinate is shifted (floor(1/2) = 0), so
        u_b = mu*.
    seed : int
        Seed in [0, 2**64).

    Returns
    -------
    GaussianConstruction
        float64 arrays. ``sigma_star`` is symmetric positive definite because of the
        0.1 I ridge.
    """
    if dim < 1:
        raise ValueError(f"Gaussian construction dimension must be >= 1, got {dim}")
    state = _legacy_state(seed)

    mu_star = state.randn(dim)
    factor = state.randn(dim, dim)
    sigma_star = factor @ factor.T + _SIGMA_STAR_RIDGE * np.eye(dim)
    # A @ A.T is symmetric in exact arithmetic only, so symmetrise the rounding.
    sigma_star = 0.5 * (sigma_star + sigma_star.T)

    biased_mean = mu_star.copy()
    shifted = state.choice(dim, size=dim // 2, replace=False)
    biased_mean[shifted] += state.randn(shifted.shape[0]) * _BIAS_SHIFT_SCALE

    return GaussianConstruction(
        mu_star=mu_star,
        sigma_star=sigma_star,
        biased_mean=biased_mean,
        biased_cov=_BIASED_COV_SCALE * sigma_star,
        seed=seed,
        shifted_coordinates=tuple(int(j) for j in shifted),
    )


def sample_gaussian(
    mean: Tensor | np.ndarray,
    cov: Tensor | np.ndarray,
    count: int,
    generator: torch.Generator,
) -> Tensor:
    """Draw ``count`` samples of N(mean, cov) as mean + z L^T with L the Cholesky factor.

    Parameters
    ----------
    mean : Tensor or ndarray, shape (d,)
        Mean. Its dtype (float32 or float64) is the dtype of the samples, and its
        device is their device.
    cov : Tensor or ndarray, shape (d, d)
        Symmetric positive definite covariance.
    count : int
        Number of samples, >= 0.
    generator : torch.Generator
        Source of the standard normal draws z, which are made on the generator's
        device and then moved to the mean's device.

    Returns
    -------
    Tensor, shape (count, d)

    Raises
    ------
    ValueError
        When the shapes do not match, an input is not finite, or ``cov`` is not
        positive definite. A singular covariance is rejected rather than repaired, so
        add a ridge before sampling.
    """
    mean_t = torch.as_tensor(mean)
    if not mean_t.is_floating_point():
        mean_t = mean_t.to(torch.float64)
    cov_t = torch.as_tensor(cov).to(device=mean_t.device, dtype=mean_t.dtype)
    dim = mean_t.shape[-1] if mean_t.ndim == 1 else -1
    if mean_t.ndim != 1 or cov_t.shape != (dim, dim):
        raise ValueError(
            f"sample_gaussian: expected mean of shape (d,) and cov of shape (d, d), got "
            f"{tuple(mean_t.shape)} and {tuple(cov_t.shape)}"
        )
    if count < 0:
        raise ValueError(f"sample_gaussian: count must be >= 0, got {count}")
    if not (torch.isfinite(mean_t).all() and torch.isfinite(cov_t).all()):
        raise ValueError("sample_gaussian: mean or cov contains NaN or infinity")

    # The factorisation runs in float64 so that a float32 request does not fail on a
    # covariance that is positive definite but badly conditioned.
    cholesky, info = torch.linalg.cholesky_ex(cov_t.to(torch.float64))
    if int(info) != 0:
        raise ValueError(
            "sample_gaussian: cov is not positive definite (Cholesky failed at column "
            f"{int(info)}). Add a small ridge such as 1e-6 * I"
        )
    normals = torch.randn(
        count, dim, generator=generator, device=generator.device, dtype=torch.float64
    )
    samples = mean_t.to(torch.float64) + normals.to(mean_t.device) @ cholesky.T
    return samples.to(mean_t.dtype)
