"""Modes of an unlabelled continuous target: shells of Mahalanobis radius.

A continuous target such as the Gaussian model has no classes, so its modes are
shells around the centre. With the target mean mu and covariance Sigma, every point x
has the squared Mahalanobis radius

.. math::

    r^2(x) = (x - \\mu)^\\top \\Sigma^{-1} (x - \\mu).

Given shell masses p_1, ..., p_k (inner to outer, summing to 1) with cumulative sums
c_j = p_1 + ... + p_j, shell j contains the points with q_{j-1} < r^2 <= q_j, where q_j
is the c_j-quantile of r^2 under the target (q_0 = -inf, q_k = +inf). Shell j therefore
has target mass p_j, and the outer shells are the tail of the distribution.

The quantiles come from one of two places:

* ``from_gaussian``: for a Gaussian target r^2 follows a chi-square law with d degrees
  of freedom, so q_j is the exact chi-square quantile.
* ``from_samples``: the mean, covariance and quantiles are estimated from target
  samples. Each quantile is the smallest sample value whose empirical CDF reaches c_j,
  so shell j contains ceil(c_j m) - ceil(c_{j-1} m) of the m target samples when no two
  radii are equal.

The default masses (50 %, 25 %, 15 %, 7 %, 3 %) shrink outward, so the outer shells are
also the globally rarest modes, and a "rarest modes holding 10 % of the mass" tail rule
picks the two outermost shells.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import chi2
from torch import Tensor

from selbias_audit.errors import NonFiniteError

DEFAULT_SHELL_MASSES = (0.50, 0.25, 0.15, 0.07, 0.03)
"""Target mass of each shell, inner to outer."""

_SAMPLE_RIDGE = 1e-6
"""Ridge of an estimated covariance, relative to its mean variance Tr(S) / d."""


class MahalanobisShells:
    """Assign samples to shells of squared Mahalanobis radius around the target.

    Build one with :meth:`from_gaussian` or :meth:`from_samples`. The constructor takes
    the target mean, a covariance and the inner shell boundaries directly.

    Parameters
    ----------
    mean : Tensor, shape (d,)
    cov : Tensor, shape (d, d)
        Symmetric positive definite.
    masses : sequence of float, length k
        Target mass of each shell, inner to outer. Every mass is positive and they sum
        to 1.
    boundaries : Tensor, shape (k - 1,)
        Increasing squared radii q_1 < ... < q_{k-1} that separate the shells.
    source : str
        How the boundaries were obtained, for the description.
    """

    kind = "shells"

    def __init__(
        self,
        mean: Tensor,
        cov: Tensor,
        masses: Sequence[float],
        boundaries: Tensor,
        source: str,
    ) -> None:
        masses = _check_masses(masses)
        mean = torch.as_tensor(mean, dtype=torch.float64)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        boundaries = torch.as_tensor(boundaries, dtype=torch.float64)
        dim = mean.shape[0]
        if mean.ndim != 1 or cov.shape != (dim, dim):
            raise ValueError(
                "MahalanobisShells: expected mean (d,) and cov (d, d), got "
                f"{tuple(mean.shape)} and {tuple(cov.shape)}"
            )
        if boundaries.shape != (len(masses) - 1,):
            raise ValueError(
                f"MahalanobisShells: {len(masses)} shells need {len(masses) - 1} boundaries, "
                f"got shape {tuple(boundaries.shape)}"
            )
        if boundaries.numel() > 1 and not bool((boundaries.diff() > 0).all()):
            raise ValueError(
                f"MahalanobisShells: boundaries must increase strictly, got "
                f"{boundaries.tolist()}. When they come from target samples, the target has "
                "too few distinct radii for these masses, so use fewer shells or more samples"
            )
        cholesky, info = torch.linalg.cholesky_ex(0.5 * (cov + cov.T))
        if int(info) != 0:
            raise ValueError("MahalanobisShells: cov is not positive definite. Add a ridge")

        self.mean = mean
        self.cov_cholesky = cholesky
        self.masses = masses
        self.boundaries = boundaries
        self.names = _shell_names(masses)
        percents = ", ".join(f"{100 * p:g} %" for p in masses)
        self.description = (
            f"{len(masses)} shells of squared Mahalanobis radius around the target mean, "
            f"cut at {source} so that they contain target masses {percents} from the "
            "inside out, so the outermost shells are the tail"
        )

    @classmethod
    def from_gaussian(
        cls,
        mean: Tensor | np.ndarray,
        cov: Tensor | np.ndarray,
        masses: Sequence[float] = DEFAULT_SHELL_MASSES,
    ) -> MahalanobisShells:
        """Cut shells at the exact chi-square(d) quantiles of a Gaussian target N(mean, cov)."""
        masses = _check_masses(masses)
        dim = int(torch.as_tensor(mean).shape[-1])
        cumulative = np.cumsum(masses)[:-1]
        boundaries = torch.as_tensor(chi2.ppf(cumulative, df=dim), dtype=torch.float64)
        return cls(
            torch.as_tensor(mean), torch.as_tensor(cov), masses, boundaries,
            f"the chi-square({dim}) quantiles of the Gaussian target",
        )

    @classmethod
    def from_samples(
        cls,
        target: Tensor | np.ndarray,
        masses: Sequence[float] = DEFAULT_SHELL_MASSES,
    ) -> MahalanobisShells:
        """Cut shells at the empirical quantiles of r^2 over target samples (m, d)."""
        masses = _check_masses(masses)
        samples = torch.as_tensor(target, dtype=torch.float64)
        if samples.ndim != 2 or samples.shape[0] < 2:
            raise ValueError(
                "MahalanobisShells.from_samples: expected target samples of shape (m, d) with "
                f"m >= 2, got {tuple(samples.shape)}"
            )
        if not torch.isfinite(samples).all():
            raise NonFiniteError("MahalanobisShells.from_samples: target contains NaN or infinity")
        dim = samples.shape[1]
        mean = samples.mean(dim=0)
        centred = samples - mean
        cov = centred.T @ centred / samples.shape[0]
        mean_variance = float(torch.trace(cov)) / dim
        ridge = _SAMPLE_RIDGE * mean_variance if mean_variance > 0.0 else 1.0
        cov = cov + ridge * torch.eye(dim, dtype=torch.float64)

        cholesky = torch.linalg.cholesky(cov)
        radii = _squared_radius(samples, mean, cholesky).numpy()
        # Rounding keeps a sum such as 0.5 + 0.25 + 0.15 from landing one sample off.
        cumulative = np.round(np.cumsum(masses)[:-1], 12)
        quantiles = np.quantile(radii, cumulative, method="inverted_cdf")
        return cls(
            mean, cov, masses, torch.as_tensor(quantiles, dtype=torch.float64),
            f"the empirical quantiles of {samples.shape[0]} target samples",
        )

    def squared_radius(self, features: Tensor) -> Tensor:
        """Return r^2 of each row of ``features`` (n, d) as an (n,) float64 tensor."""
        points = torch.as_tensor(features).to(torch.float64)
        if points.ndim != 2 or points.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"MahalanobisShells: expected features of shape (n, {self.mean.shape[0]}), "
                f"got {tuple(points.shape)}"
            )
        if not torch.isfinite(points).all():
            raise NonFiniteError("MahalanobisShells: features contain NaN or infinity")
        return _squared_radius(
            points, self.mean.to(points.device), self.cov_cholesky.to(points.device)
        )

    def assign(self, features: Tensor, labels: Tensor | None) -> Tensor:
        """Return the (n,) int64 shell id of each row of ``features``. Labels are ignored.

        A point exactly on boundary q_j belongs to the inner shell j (the shells are
        closed on the outside).
        """
        radii = self.squared_radius(features)
        return torch.searchsorted(self.boundaries.to(radii.device), radii, right=False)


def _squared_radius(points: Tensor, mean: Tensor, cholesky: Tensor) -> Tensor:
    whitened = torch.linalg.solve_triangular(cholesky, (points - mean).T, upper=False)
    return (whitened**2).sum(dim=0)


def _check_masses(masses: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(p) for p in masses)
    if len(values) < 2:
        raise ValueError(f"MahalanobisShells: need at least two shells, got masses {values}")
    if not all(np.isfinite(p) and p > 0 for p in values):
        raise ValueError(f"MahalanobisShells: every shell mass must be positive, got {values}")
    if abs(sum(values) - 1.0) > 1e-9:
        raise ValueError(f"MahalanobisShells: shell masses must sum to 1, got sum {sum(values)}")
    return values


def _shell_names(masses: tuple[float, ...]) -> list[str]:
    names = []
    lower = 0.0
    for index, mass in enumerate(masses):
        upper = lower + mass
        names.append(f"shell {index + 1} ({100 * lower:.4g}-{100 * upper:.4g} % of mass)")
        lower = upper
    return names
