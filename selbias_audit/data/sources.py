"""Target sources: scikit-learn's bundled data sets, ``.npz`` files and the Gaussian model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selbias_audit.errors import SpecError
from selbias_audit.spec import TargetSpec

# Classification data sets that scikit-learn ships inside the package (no download).
_SKLEARN_BUNDLED = {
    "digits": "load_digits",
    "iris": "load_iris",
    "wine": "load_wine",
    "breast_cancer": "load_breast_cancer",
}


@dataclass(frozen=True)
class TargetData:
    """Raw target features (before the transform) and their labels."""

    features: np.ndarray
    """(n, d) float64."""
    labels: np.ndarray | None
    """(n,) int64 class labels, or None for an unlabelled target."""
    label_names: list[str]
    description: str
    files: list[Path] = field(default_factory=list)
    """Input files read, for the receipt's digests."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Facts of the source a special selector may need (the Gaussian's biased target)."""


def load_target(spec: TargetSpec, base_dir: Path, seed: int) -> TargetData:
    """Load the target named by ``spec``; relative paths are resolved against ``base_dir``."""
    if spec.source.startswith("sklearn:"):
        data = _load_sklearn(spec.source.removeprefix("sklearn:"))
    elif spec.source == "gaussian":
        data = _load_gaussian(spec, seed)
    else:
        data = load_npz_target(_resolve(spec.source, base_dir))
    if spec.max_samples is not None and data.features.shape[0] > spec.max_samples:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(data.features.shape[0], spec.max_samples, replace=False))
        labels = None if data.labels is None else data.labels[keep]
        data = TargetData(
            data.features[keep], labels, data.label_names, data.description, data.files,
            data.extras,
        )
    return data


def _resolve(source: str, base_dir: Path) -> Path:
    path = Path(source).expanduser()
    return path if path.is_absolute() else base_dir / path


def _load_sklearn(name: str) -> TargetData:
    loader_name = _SKLEARN_BUNDLED.get(name)
    if loader_name is None:
        known = ", ".join(f"sklearn:{key}" for key in sorted(_SKLEARN_BUNDLED))
        raise SpecError(
            f"target.source: unknown scikit-learn data set 'sklearn:{name}'; "
            f"bundled classification sets are {known}"
        )
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    names = [str(n) for n in getattr(bunch, "target_names", np.unique(labels))]
    description = f"scikit-learn {name}: {features.shape[0]} samples, {len(names)} classes"
    return TargetData(features, labels, names, description)


def _load_gaussian(spec: TargetSpec, seed: int) -> TargetData:
    import torch

    from selbias_audit.data.gaussian import gaussian_construction, sample_gaussian

    construction_seed = spec.gaussian.seed if spec.gaussian.seed is not None else seed
    construction = gaussian_construction(spec.gaussian.dim, construction_seed)
    generator = torch.Generator().manual_seed(construction_seed)
    samples = sample_gaussian(
        torch.as_tensor(construction.mu_star),
        torch.as_tensor(construction.sigma_star),
        spec.gaussian.size,
        generator,
    )
    description = (
        f"Gaussian N(mu*, Sigma*) in {spec.gaussian.dim} dimensions, "
        f"construction seed {construction_seed}, {spec.gaussian.size} samples"
    )
    return TargetData(
        samples.double().numpy(),
        None,
        [],
        description,
        extras={"gaussian": construction},
    )


def load_npz_target(path: Path) -> TargetData:
    """Load ``X`` (n, d) and optional integer ``y`` (n,) from a ``.npz`` file."""
    where = f"target.source: {path}"
    if path.is_dir():
        raise SpecError(f"{where}: is a folder, not a .npz file")
    if not path.is_file():
        raise SpecError(f"{where}: file not found", hint="check the path in the run description")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        raise SpecError(
            f"{where}: not a readable .npz file; write it with numpy.savez(path, X=..., y=...)"
        ) from None
    with archive:
        if "X" not in archive.files:
            raise SpecError(f"{where}: array 'X' missing; found {sorted(archive.files)}")
        try:
            features = archive["X"]
            labels = archive["y"] if "y" in archive.files else None
        except (OSError, ValueError) as exc:
            # Object arrays need pickle, which is never enabled for untrusted files.
            raise SpecError(
                f"{where}: cannot read arrays X/y ({exc}); save numeric arrays, for example "
                "np.savez(path, X=X.astype(float), y=y.astype(int))"
            ) from None
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 1:
        raise SpecError(f"{where}: X must have shape (n, d) with n >= 2, got {features.shape}")
    if not np.issubdtype(features.dtype, np.number) or np.iscomplexobj(features):
        raise SpecError(f"{where}: X must be real numbers, got dtype {features.dtype}")
    features = features.astype(np.float64)
    bad = np.argwhere(~np.isfinite(features))
    if bad.size:
        row, col = bad[0]
        raise SpecError(f"{where}: X[{row}, {col}] is {features[row, col]}; X must be finite")
    names: list[str] = []
    if labels is not None:
        labels = _check_labels(where, labels, features.shape[0])
        names = [str(c) for c in range(int(labels.max()) + 1)]
    description = f"{path.name}: {features.shape[0]} samples, {features.shape[1]} features"
    return TargetData(features, labels, names, description, files=[path])


def _check_labels(where: str, labels: np.ndarray, rows: int) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != rows:
        raise SpecError(f"{where}: y must have shape ({rows},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(labels == np.round(labels)):
            raise SpecError(f"{where}: y must hold integer class labels, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise SpecError(f"{where}: y contains a negative label {labels.min()}; use 0, 1, 2, ...")
    return labels
