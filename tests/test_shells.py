"""Mahalanobis shells: target mass per shell, boundaries and input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from selbias_audit.data.gaussian import gaussian_construction, sample_gaussian
from selbias_audit.data.shells import DEFAULT_SHELL_MASSES, MahalanobisShells
from selbias_audit.errors import NonFiniteError


def test_gaussian_shells_hold_their_mass() -> None:
    construction = gaussian_construction(6, seed=42)
    shells = MahalanobisShells.from_gaussian(construction.mu_star, construction.sigma_star)
    count = 200_000
    samples = sample_gaussian(
        torch.as_tensor(construction.mu_star), torch.as_tensor(construction.sigma_star),
        count, torch.Generator().manual_seed(1),
    )
    shares = torch.bincount(shells.assign(samples, None), minlength=5).double() / count
    for share, mass in zip(shares.tolist(), DEFAULT_SHELL_MASSES):
        # The chi-square boundaries are exact, so only sampling error remains, and five
        # binomial standard errors bound it.
        assert share == pytest.approx(mass, abs=5 * math.sqrt(mass * (1 - mass) / count))


def test_gaussian_boundaries_are_chi_square_quantiles() -> None:
    shells = MahalanobisShells.from_gaussian(np.zeros(3), np.eye(3), masses=(0.5, 0.5))
    assert shells.boundaries.tolist() == pytest.approx([chi2.ppf(0.5, df=3)])


def test_sample_shells_hold_exact_counts() -> None:
    samples = torch.randn(1000, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shells = MahalanobisShells.from_samples(samples)
    counts = torch.bincount(shells.assign(samples, None), minlength=5).tolist()
    cumulative = np.round(np.cumsum(DEFAULT_SHELL_MASSES), 12)
    expected = np.diff(np.concatenate([[0], np.ceil(cumulative * 1000)])).astype(int).tolist()
    assert counts == expected


def test_point_on_boundary_belongs_to_inner_shell() -> None:
    shells = MahalanobisShells(
        torch.zeros(2), torch.eye(2), masses=(0.5, 0.5), boundaries=torch.tensor([4.0]),
        source="test boundaries",
    )
    points = torch.tensor([[2.0, 0.0], [2.0, 1e-6], [0.0, 0.0]])
    assert shells.assign(points, None).tolist() == [0, 1, 0]


def test_labels_are_ignored() -> None:
    shells = MahalanobisShells.from_gaussian(np.zeros(2), np.eye(2))
    points = torch.tensor([[0.1, 0.0], [3.0, 3.0]])
    without = shells.assign(points, None)
    with_labels = shells.assign(points, torch.tensor([7, 7]))
    assert without.tolist() == with_labels.tolist()
    assert without.dtype == torch.int64


def test_protocol_fields() -> None:
    shells = MahalanobisShells.from_gaussian(np.zeros(2), np.eye(2), masses=(0.9, 0.1))
    assert shells.kind == "shells"
    assert shells.names == ["shell 1 (0-90 % of mass)", "shell 2 (90-100 % of mass)"]
    assert "chi-square(2)" in shells.description
    assert "90 %, 10 %" in shells.description


def test_radius_uses_target_covariance() -> None:
    shells = MahalanobisShells.from_gaussian(np.zeros(2), np.diag([4.0, 1.0]))
    radii = shells.squared_radius(torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    assert radii.tolist() == pytest.approx([1.0, 4.0])


@pytest.mark.parametrize(
    ("masses", "message"),
    [((1.0,), "at least two"), ((0.5, 0.6), "sum to 1"), ((1.2, -0.2), "positive")],
)
def test_invalid_masses_raise(masses: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MahalanobisShells.from_gaussian(np.zeros(2), np.eye(2), masses=masses)


def test_too_few_distinct_radii_raise() -> None:
    # Every sample has the same radius, so the quantiles coincide.
    samples = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]] * 5)
    with pytest.raises(ValueError, match="increase strictly"):
        MahalanobisShells.from_samples(samples, masses=(0.25, 0.25, 0.5))


def test_non_finite_features_raise() -> None:
    shells = MahalanobisShells.from_gaussian(np.zeros(2), np.eye(2))
    with pytest.raises(NonFiniteError, match="features"):
        shells.assign(torch.tensor([[float("nan"), 0.0]]), None)


def test_wrong_dimension_raises() -> None:
    shells = MahalanobisShells.from_gaussian(np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        shells.assign(torch.zeros(3, 4), None)
