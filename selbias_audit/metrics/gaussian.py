"""Closed forms for Gaussians: MLE refit, squared mean error, 2-Wasserstein distance.

All functions accept leading batch dimensions, so one call covers every seed of a
theory run. The Wasserstein distance is computed in float64 whatever the input dtype,
because the trace term subtracts two nearly equal numbers once the covariances agree.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selbias_audit.errors import NonFiniteError

# Relative size of a negative eigenvalue that is still read as round-off of a PSD matrix.
_PSD_TOLERANCE = 1e-10


def mle_fit(samples: Tensor, ridge: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Fit a Gaussian by maximum likelihood and add a ridge to the covariance.

    .. math::

        \\hat\\mu = \\frac1n \\sum_i x_i, \\qquad
        \\hat\\Sigma = \\frac1n \\sum_i (x_i - \\hat\\mu)(x_i - \\hat\\mu)^\\top + r I

    Parameters
    ----------
    samples : Tensor, shape (..., n, d)
        n >= 1 samples per batch entry.
    ridge : float
        r >= 0, added to the diagonal so the refit stays positive definite when the
        samples collapse.

    Returns
    -------
    mean : Tensor, shape (..., d)
    cov : Tensor, shape (..., d, d)
        Biased (divide-by-n) covariance plus ``ridge * I``, in the samples' dtype.
    """
    if samples.ndim < 2 or samples.shape[-2] < 1:
        raise ValueError(
            "mle_fit: expected samples of shape (..., n, d) with n >= 1, got "
            f"{tuple(samples.shape)}"
        )
    if ridge < 0:
        raise ValueError(f"mle_fit: ridge must be >= 0, got {ridge}")
    count = samples.shape[-2]
    mean = samples.mean(dim=-2)
    centred = samples - mean.unsqueeze(-2)
    cov = centred.transpose(-1, -2) @ centred / count
    eye = torch.eye(samples.shape[-1], dtype=samples.dtype, device=samples.device)
    return mean, cov + ridge * eye


def mean_error_squared(mean: Tensor, target_mean: Tensor) -> Tensor:
    """Return the squared Euclidean distance ||mean - target_mean||^2 over the last axis."""
    return ((mean - target_mean) ** 2).sum(dim=-1)


def sqrtm_psd(cov: Tensor) -> Tensor:
    """Return the symmetric square root of symmetric positive semidefinite matrices.

    Eigenvalues below zero by no more than round-off are set to zero. Larger negative
    eigenvalues raise ValueError because the input is then not a covariance.

    Parameters
    ----------
    cov : Tensor, shape (..., d, d)

    Returns
    -------
    Tensor, shape (..., d, d), float64
    """
    sym = _symmetrise(cov.to(torch.float64))
    eigvals, eigvecs = torch.linalg.eigh(sym)
    eigvals = _clip_round_off(eigvals, "sqrtm_psd")
    return (eigvecs * eigvals.sqrt().unsqueeze(-2)) @ eigvecs.transpose(-1, -2)


def gaussian_w2_squared(
    mean_a: Tensor,
    cov_a: Tensor,
    mean_b: Tensor,
    cov_b: Tensor,
    *,
    cov_a_sqrt: Tensor | None = None,
) -> Tensor:
    """Squared 2-Wasserstein distance between N(mean_a, cov_a) and N(mean_b, cov_b).

    .. math::

        W_2^2 = \\lVert m_a - m_b \\rVert^2 + \\operatorname{Tr} S_a + \\operatorname{Tr} S_b
                - 2 \\operatorname{Tr}\\big( (S_a^{1/2} S_b S_a^{1/2})^{1/2} \\big)

    The covariance part is the squared Bures distance. The same number is the Frechet
    distance of two Gaussian fits. The trace of the matrix square root is the sum of
    the square roots of the eigenvalues of S_a^{1/2} S_b S_a^{1/2}, which is symmetric
    PSD, so no general (non-symmetric) matrix square root is needed.

    Parameters
    ----------
    mean_a, mean_b : Tensor, shape (..., d)
    cov_a, cov_b : Tensor, shape (..., d, d)
        Symmetric positive semidefinite. Batch dimensions broadcast.
    cov_a_sqrt : Tensor, shape (..., d, d), optional
        Precomputed ``sqrtm_psd(cov_a)``. A loop that compares many fits with one fixed
        target passes it so the target's eigendecomposition is done once.

    Returns
    -------
    Tensor, shape (...), float64
        W_2^2 >= 0. A result below zero by round-off is returned as 0.

    Raises
    ------
    NonFiniteError
        When an input contains NaN or infinity.
    ValueError
        When a covariance has an eigenvalue clearly below zero.
    """
    mean_a, cov_a, mean_b, cov_b = (
        t.to(torch.float64) for t in (mean_a, cov_a, mean_b, cov_b)
    )
    named = {"mean_a": mean_a, "cov_a": cov_a, "mean_b": mean_b, "cov_b": cov_b}
    for name, tensor in named.items():
        if not torch.isfinite(tensor).all():
            raise NonFiniteError(f"gaussian_w2_squared: {name} contains NaN or infinity")

    root_a = sqrtm_psd(cov_a) if cov_a_sqrt is None else cov_a_sqrt.to(torch.float64)
    cov_b = _symmetrise(cov_b)
    middle = _symmetrise(root_a @ cov_b @ root_a)
    middle_eigvals = _clip_round_off(torch.linalg.eigvalsh(middle), "gaussian_w2_squared")
    cross = middle_eigvals.sqrt().sum(dim=-1)

    trace_a = torch.diagonal(cov_a, dim1=-2, dim2=-1).sum(dim=-1)
    trace_b = torch.diagonal(cov_b, dim1=-2, dim2=-1).sum(dim=-1)
    value = mean_error_squared(mean_a, mean_b) + trace_a + trace_b - 2.0 * cross
    # W2^2 is non-negative in exact arithmetic, so a negative value is round-off from
    # the cancellation in the trace term.
    return value.clamp_min(0.0)


def gaussian_w2(
    mean_a: Tensor,
    cov_a: Tensor,
    mean_b: Tensor,
    cov_b: Tensor,
    *,
    cov_a_sqrt: Tensor | None = None,
) -> Tensor:
    """Return the 2-Wasserstein distance, the square root of :func:`gaussian_w2_squared`."""
    return gaussian_w2_squared(mean_a, cov_a, mean_b, cov_b, cov_a_sqrt=cov_a_sqrt).sqrt()


def _symmetrise(matrix: Tensor) -> Tensor:
    return 0.5 * (matrix + matrix.transpose(-1, -2))


def _clip_round_off(eigvals: Tensor, caller: str) -> Tensor:
    """Set round-off negatives to zero and reject clearly negative eigenvalues."""
    scale = eigvals.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
    if (eigvals < -_PSD_TOLERANCE * scale).any():
        worst = float(eigvals.min())
        raise ValueError(
            f"{caller}: matrix is not positive semidefinite (smallest eigenvalue {worst:.3g}). "
            "Pass a covariance matrix"
        )
    return eigvals.clamp_min(0.0)
