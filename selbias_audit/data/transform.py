"""Feature transforms fitted on the target only and applied to every feature set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selbias_audit.errors import SpecError
from selbias_audit.spec import TransformSpec


@dataclass(frozen=True)
class FeatureTransform:
    """Affine map x -> ((x - mean) / scale) @ components.T, fitted on the target."""

    mean: np.ndarray
    """(d,) target mean (zeros when standardisation is off)."""
    scale: np.ndarray
    """(d,) target standard deviation, with 1 where a feature is constant."""
    components: np.ndarray | None
    """(k, d) principal axes, or None without PCA."""
    description: str

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Return the transformed (n, k) features in float64."""
        out = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        if self.components is not None:
            out = out @ self.components.T
        return out


def fit_transform(spec: TransformSpec, target: np.ndarray) -> FeatureTransform:
    """Fit the transform of ``spec`` on the (n, d) target features."""
    d = target.shape[1]
    parts = []
    if spec.standardize:
        mean = target.mean(axis=0)
        scale = target.std(axis=0)
        # Constant features (the blank border pixels of digits) keep scale 1 instead of 0.
        scale = np.where(scale > 1e-12, scale, 1.0)
        parts.append("standardised on the target")
    else:
        mean = np.zeros(d)
        scale = np.ones(d)
    components = None
    if spec.pca is not None:
        if spec.pca > min(target.shape):
            raise SpecError(
                f"target.transform.pca = {spec.pca} exceeds min(samples, features) = "
                f"{min(target.shape)}; choose a smaller number of components"
            )
        centred = (target - mean) / scale
        centred = centred - centred.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        components = _fix_signs(vt[: spec.pca])
        parts.append(f"PCA to {spec.pca} components")
    description = ", ".join(parts) if parts else "none"
    return FeatureTransform(mean, scale, components, description)


def _fix_signs(components: np.ndarray) -> np.ndarray:
    # SVD axes are defined up to sign; fix it so the transform is reproducible across BLAS.
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), idx])
    return components * signs[:, None]
