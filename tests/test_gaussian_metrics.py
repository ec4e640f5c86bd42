"""Closed-form Gaussian metrics against numpy and scipy references in float64."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from selbias_audit.errors import NonFiniteError
from selbias_audit.metrics.gaussian import (
    gaussian_w2,
    gaussian_w2_squared,
    mean_error_squared,
    mle_fit,
    sqrtm_psd,
)


def _random_spd(rng: np.random.Generator, dim: int, rank: int | None = None) -> np.ndarray:
    factor = rng.standard_normal((dim, rank or dim))
    return factor @ factor.T + (0.0 if rank else 0.1) * np.eye(dim)


def _scipy_w2_squared(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    root = scipy.linalg.sqrtm(s1)
    cross = scipy.linalg.sqrtm(root @ s2 @ root)
    value = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(cross)
    return float(np.real(value))


def test_mle_fit_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((50, 4)) @ rng.standard_normal((4, 4)) + 3.0
    mean, cov = mle_fit(torch.as_tensor(samples), ridge=1e-6)
    expected_cov = np.cov(samples.T, bias=True) + 1e-6 * np.eye(4)
    np.testing.assert_allclose(mean.numpy(), samples.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), expected_cov, rtol=1e-12, atol=1e-12)


def test_mle_fit_batched_equals_per_batch() -> None:
    samples = torch.randn(3, 20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mean, cov = mle_fit(samples, ridge=0.0)
    for b in range(3):
        single_mean, single_cov = mle_fit(samples[b], ridge=0.0)
        torch.testing.assert_close(mean[b], single_mean, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(cov[b], single_cov, rtol=1e-14, atol=1e-14)


def test_mle_fit_single_sample_is_ridge() -> None:
    mean, cov = mle_fit(torch.tensor([[1.0, 2.0]], dtype=torch.float64), ridge=0.5)
    torch.testing.assert_close(mean, torch.tensor([1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(cov, 0.5 * torch.eye(2, dtype=torch.float64))


@pytest.mark.parametrize(
    ("samples", "ridge", "message"),
    [
        (torch.zeros(0, 3), 1e-6, "n >= 1"),
        (torch.zeros(3), 1e-6, "shape"),
        (torch.zeros(4, 3), -1.0, "ridge"),
    ],
)
def test_mle_fit_rejects_invalid_input(samples: torch.Tensor, ridge: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mle_fit(samples, ridge=ridge)


def test_mean_error_squared_by_hand() -> None:
    value = mean_error_squared(torch.tensor([1.0, 2.0]), torch.tensor([4.0, -2.0]))
    assert float(value) == pytest.approx(25.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_w2_matches_scipy_sqrtm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dim = 6
    m1, m2 = rng.standard_normal(dim), rng.standard_normal(dim)
    s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim)
    value = gaussian_w2_squared(*(torch.as_tensor(a) for a in (m1, s1, m2, s2)))
    # Both sides are float64, and rel=1e-9 leaves room for the two square-root methods
    # (eigh here, scipy's Schur-based sqrtm there).
    assert float(value) == pytest.approx(_scipy_w2_squared(m1, s1, m2, s2), rel=1e-9)


def test_w2_rank_deficient_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    m1, m2 = rng.standard_normal(5), rng.standard_normal(5)
    s1, s2 = _random_spd(rng, 5, rank=2), _random_spd(rng, 5)
    value = gaussian_w2_squared(*(torch.as_tensor(a) for a in (m1, s1, m2, s2)))
    assert float(value) == pytest.approx(_scipy_w2_squared(m1, s1, m2, s2), rel=1e-6)


def test_w2_one_dimensional_closed_form() -> None:
    # In one dimension W2^2 = (m1 - m2)^2 + (sigma1 - sigma2)^2.
    value = gaussian_w2(
        torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]])
    )
    assert float(value) == pytest.approx(np.sqrt(9.0 + 1.0), rel=1e-12)


def test_w2_diagonal_covariances() -> None:
    a = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    b = torch.tensor([9.0, 1.0, 0.25], dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    value = gaussian_w2_squared(zero, torch.diag(a), zero, torch.diag(b))
    expected = float(((a.sqrt() - b.sqrt()) ** 2).sum())
    assert float(value) == pytest.approx(expected, rel=1e-12)


def test_w2_identical_gaussians_is_zero() -> None:
    rng = np.random.default_rng(3)
    mean = torch.as_tensor(rng.standard_normal(8))
    cov = torch.as_tensor(_random_spd(rng, 8))
    value = gaussian_w2_squared(mean, cov, mean, cov)
    assert float(value) >= 0.0
    assert float(value) == pytest.approx(0.0, abs=1e-9)


def test_w2_is_symmetric() -> None:
    rng = np.random.default_rng(4)
    args = [torch.as_tensor(a) for a in (rng.standard_normal(4), _random_spd(rng, 4))]
    other = [torch.as_tensor(a) for a in (rng.standard_normal(4), _random_spd(rng, 4))]
    forward = gaussian_w2_squared(*args, *other)
    backward = gaussian_w2_squared(*other, *args)
    assert float(forward) == pytest.approx(float(backward), rel=1e-10)


def test_w2_batched_and_precomputed_root() -> None:
    rng = np.random.default_rng(6)
    means = torch.as_tensor(rng.standard_normal((3, 4)))
    covs = torch.as_tensor(np.stack([_random_spd(rng, 4) for _ in range(3)]))
    target_mean = torch.as_tensor(rng.standard_normal(4))
    target_cov = torch.as_tensor(_random_spd(rng, 4))
    batched = gaussian_w2_squared(target_mean, target_cov, means, covs)
    with_root = gaussian_w2_squared(
        target_mean, target_cov, means, covs, cov_a_sqrt=sqrtm_psd(target_cov)
    )
    assert batched.shape == (3,)
    for i in range(3):
        single = gaussian_w2_squared(target_mean, target_cov, means[i], covs[i])
        assert float(batched[i]) == pytest.approx(float(single), rel=1e-12)
    torch.testing.assert_close(with_root, batched, rtol=1e-12, atol=1e-12)


def test_w2_float32_input_returns_float64() -> None:
    value = gaussian_w2_squared(
        torch.zeros(2), torch.eye(2), torch.ones(2), 4.0 * torch.eye(2)
    )
    assert value.dtype == torch.float64
    # |m|^2 = 2 and each axis adds (1 - 2)^2 = 1.
    assert float(value) == pytest.approx(4.0, rel=1e-12)


def test_w2_rejects_non_finite_input() -> None:
    with pytest.raises(NonFiniteError, match="mean_b"):
        gaussian_w2_squared(
            torch.zeros(2), torch.eye(2), torch.tensor([0.0, float("nan")]), torch.eye(2)
        )


def test_w2_rejects_indefinite_covariance() -> None:
    indefinite = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="not positive semidefinite"):
        gaussian_w2_squared(torch.zeros(2), indefinite, torch.zeros(2), torch.eye(2))


def test_sqrtm_psd_squares_back() -> None:
    cov = torch.as_tensor(_random_spd(np.random.default_rng(7), 5))
    root = sqrtm_psd(cov)
    torch.testing.assert_close(root @ root, cov, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(root, root.T, rtol=0, atol=1e-12)
