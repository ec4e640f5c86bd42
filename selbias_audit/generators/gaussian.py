"""Feature-space generators: one MLE Gaussian, or one shrunk Gaussian per class.

Both follow one protocol: ``fit(features, labels)`` on the training pool, then
``sample(count, generator)`` returning candidate features and the labels they carry.
Fitting and sampling run in float64 on the CPU so that every device draws the same
candidates from the same seed.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from selbias_audit.spec import GeneratorSpec


class Generator(Protocol):
    """A generative model refitted on the training pool every round."""

    name: str

    def fit(self, features: Tensor, labels: Tensor | None) -> None:
        """Fit on (n, d) features and optional (n,) labels."""
        ...

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Return (count, d) float64 features and their (count,) labels or None."""
        ...


def _cholesky(cov: Tensor) -> Tensor:
    # A near-singular covariance gets a growing ridge until the factorisation succeeds.
    eye = torch.eye(cov.shape[0], dtype=cov.dtype)
    jitter = 0.0
    for _ in range(8):
        factor, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if int(info) == 0:
            return factor
        jitter = max(jitter * 10, 1e-10 * float(cov.diagonal().mean().clamp_min(1e-12)))
    raise ValueError("covariance is not positive definite even with a ridge")


class GaussianGenerator:
    """MLE Gaussian: sample mean and biased covariance plus a ridge."""

    name = "gaussian"

    def __init__(self, ridge: float = 1e-6) -> None:
        self.ridge = ridge
        self.mean: Tensor | None = None
        self.factor: Tensor | None = None

    def fit(self, features: Tensor, labels: Tensor | None) -> None:
        """Fit mean and covariance (1/n normalisation) of ``features``."""
        x = features.detach().cpu().double()
        self.mean = x.mean(dim=0)
        centred = x - self.mean
        cov = centred.T @ centred / x.shape[0]
        cov = cov + self.ridge * torch.eye(x.shape[1], dtype=x.dtype)
        self.factor = _cholesky(cov)

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Draw ``count`` samples; they carry no labels."""
        if self.mean is None or self.factor is None:
            raise RuntimeError("GaussianGenerator.sample called before fit")
        z = torch.randn(count, self.mean.shape[0], generator=generator, dtype=torch.float64)
        return self.mean + z @ self.factor.T, None


class ClassGaussianGenerator:
    """One Gaussian per class with covariance shrinkage; class priors from the pool.

    A class absent from the training pool gets prior zero and is never sampled again,
    so class collapse propagates across rounds as it would in a real generator.
    """

    name = "class_gaussian"

    def __init__(self, num_classes: int, shrinkage: float = 0.1, ridge: float = 1e-6) -> None:
        self.num_classes = num_classes
        self.shrinkage = shrinkage
        self.ridge = ridge
        self.priors: Tensor | None = None
        self.means: dict[int, Tensor] = {}
        self.factors: dict[int, Tensor] = {}

    def fit(self, features: Tensor, labels: Tensor | None) -> None:
        """Fit priors, means and shrunk covariances per class."""
        if labels is None:
            raise ValueError("class_gaussian needs labelled training data")
        x = features.detach().cpu().double()
        y = labels.detach().cpu().long()
        d = x.shape[1]
        eye = torch.eye(d, dtype=x.dtype)
        counts = torch.bincount(y, minlength=self.num_classes)[: self.num_classes]
        self.priors = counts.double() / counts.sum()
        centred_all = x - x.mean(dim=0)
        # Shrink toward the pooled isotropic scale so a class seen once still has spread.
        pooled_scale = float((centred_all**2).sum() / (x.shape[0] * d))
        self.means, self.factors = {}, {}
        for c in torch.nonzero(counts).flatten().tolist():
            members = x[y == c]
            mean = members.mean(dim=0)
            centred = members - mean
            cov = centred.T @ centred / members.shape[0]
            cov = (1 - self.shrinkage) * cov + self.shrinkage * pooled_scale * eye
            self.means[c] = mean
            self.factors[c] = _cholesky(cov + self.ridge * eye)

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Draw class labels from the priors, then features from each class's Gaussian."""
        if self.priors is None:
            raise RuntimeError("ClassGaussianGenerator.sample called before fit")
        labels = torch.multinomial(self.priors, count, replacement=True, generator=generator)
        d = next(iter(self.means.values())).shape[0]
        z = torch.randn(count, d, generator=generator, dtype=torch.float64)
        features = torch.empty(count, d, dtype=torch.float64)
        for c, mean in self.means.items():
            rows = labels == c
            features[rows] = mean + z[rows] @ self.factors[c].T
        return features, labels


def build_generator(spec: GeneratorSpec, num_classes: int) -> Generator:
    """Return the generator named by ``spec``."""
    if spec.kind == "gaussian":
        return GaussianGenerator(ridge=spec.ridge)
    return ClassGaussianGenerator(num_classes, shrinkage=spec.shrinkage, ridge=spec.ridge)
