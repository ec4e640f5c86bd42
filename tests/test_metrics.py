"""Metrics on inputs whose answer can be computed by hand or by a reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from selbias_audit.data.modes import choose_tail, tail_retention
from selbias_audit.metrics.distances import (
    frechet_distance,
    frechet_distance_gaussians,
    gaussian_fit,
    sinkhorn_divergence,
)
from selbias_audit.metrics.diversity import covariance_trace, trace_ratio
from selbias_audit.spec import TailSpec


def test_covariance_trace_by_hand() -> None:
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])
    # Variances with 1/n: 1 along the first axis, 4 along the second.
    assert covariance_trace(x) == pytest.approx(5.0, abs=1e-12)
    assert trace_ratio(x, 10.0) == pytest.approx(0.5, abs=1e-12)


def test_covariance_trace_large_offset_is_stable() -> None:
    x = torch.tensor([[1e8, 0.0], [1e8 + 2, 0.0]], dtype=torch.float64)
    assert covariance_trace(x) == pytest.approx(1.0, abs=1e-6)


def test_trace_of_duplicates_is_zero() -> None:
    x = torch.ones(10, 3)
    assert trace_ratio(x, 2.0) == 0.0


def test_frechet_equal_gaussians_is_zero() -> None:
    mean = torch.zeros(3, dtype=torch.float64)
    cov = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert frechet_distance_gaussians(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-10)


def test_frechet_one_dimensional_closed_form() -> None:
    # In 1-d: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s.
    value = frechet_distance_gaussians(
        torch.tensor([1.0], dtype=torch.float64), torch.tensor([[4.0]], dtype=torch.float64),
        torch.tensor([-2.0], dtype=torch.float64), torch.tensor([[9.0]], dtype=torch.float64),
    )
    assert value == pytest.approx(9.0 + 1.0, abs=1e-10)


def test_frechet_matches_scipy_sqrtm() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    ma, ca = gaussian_fit(torch.as_tensor(a))
    mb, cb = gaussian_fit(torch.as_tensor(b))
    ours = frechet_distance_gaussians(ma, ca, mb, cb)
    covmean = scipy.linalg.sqrtm(ca.numpy() @ cb.numpy()).real
    ref = float(((ma - mb) ** 2).sum() + np.trace(ca.numpy() + cb.numpy() - 2 * covmean))
    assert ours == pytest.approx(ref, rel=1e-8)


def test_frechet_matches_torchmetrics() -> None:
    from torchmetrics.image.fid import _compute_fid

    rng = np.random.default_rng(1)
    a = torch.as_tensor(rng.normal(size=(100, 4)))
    b = torch.as_tensor(rng.normal(size=(120, 4)) * 1.5 + 1)
    ma, ca = gaussian_fit(a)
    mb, cb = gaussian_fit(b)
    ref = float(_compute_fid(ma, ca, mb, cb))
    assert frechet_distance_gaussians(ma, ca, mb, cb) == pytest.approx(ref, rel=1e-6)


def test_frechet_too_few_samples_is_status() -> None:
    value = frechet_distance(torch.zeros(1, 2), torch.zeros(2), torch.eye(2))
    assert value.status == "not_computed"
    assert value.value is None


def test_sinkhorn_divergence_zero_for_same_sample() -> None:
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    value = sinkhorn_divergence(x, x, blur=0.5)
    assert value.status == "ok"
    assert value.value == pytest.approx(0.0, abs=1e-4)


def test_sinkhorn_divergence_float32_agrees_with_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=gen, dtype=torch.float64) * 1.2 + 0.3
    y = torch.randn(500, 16, generator=gen, dtype=torch.float64)
    single = sinkhorn_divergence(x, y, blur=0.5, dtype=torch.float32).value
    double = sinkhorn_divergence(x, y, blur=0.5, dtype=torch.float64).value
    assert single == pytest.approx(double, rel=1e-4)


def test_tail_retention_by_hand() -> None:
    target = np.array([0.5, 0.3, 0.2])
    # Mode 1 kept in full (capped at 0.3), mode 2 at half: (0.3 + 0.1) / 0.5.
    assert tail_retention(np.array([0.5, 0.4, 0.1]), target, [1, 2]) == pytest.approx(0.8)
    assert tail_retention(np.array([1.0, 0.0, 0.0]), target, [1, 2]) == 0.0
    assert tail_retention(target, target, [1, 2]) == pytest.approx(1.0)
    assert tail_retention(target, target, []) == 1.0


def test_choose_tail_rare_and_underrepresented() -> None:
    target = np.array([0.5, 0.3, 0.15, 0.05])
    reference = np.array([0.9, 0.1, 0.0, 0.0])
    tail = choose_tail(target, reference, TailSpec(rare_mass=0.2, underrepresented_ratio=0.5))
    assert tail.modes == [1, 2, 3]
    assert tail.reasons[3] == ["globally_rare", "underrepresented_by_verifier"]
    assert tail.reasons[1] == ["underrepresented_by_verifier"]
    assert tail.reasons[2] == ["globally_rare", "underrepresented_by_verifier"]


def test_choose_tail_without_reference() -> None:
    tail = choose_tail(np.array([0.7, 0.2, 0.1]), None, TailSpec(rare_mass=0.15))
    assert tail.modes == [2]


def test_choose_tail_empty_rejected() -> None:
    from selbias_audit.errors import SpecError

    with pytest.raises(SpecError, match="no mode qualifies as a tail mode"):
        choose_tail(np.array([0.5, 0.5]), np.array([0.5, 0.5]), TailSpec(rare_mass=0.0))
