"""Reading and checking one file of a replay log.

Every function here reads a single ``.npz`` file with ``allow_pickle=False`` and raises
a :class:`~selbias_audit.errors.SpecError` (exit code 2) that names the file and the
array on the first problem.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selbias_audit.errors import SpecError
from selbias_audit.replay.manifest import ROUND_ARRAYS, SET_ARRAYS, ReplayManifest

# Exceptions that np.load and reading a zip member raise on a damaged or foreign file.
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
_HINT = (
    "write the log with numpy.savez from numeric arrays; the replay log format is in "
    "docs/replay.md"
)


@dataclass(frozen=True)
class LoggedSet:
    """A logged client reference or the logged D_0."""

    path: Path
    features: np.ndarray
    """(rows, d) float64 features in the target's raw feature space."""
    labels: np.ndarray | None
    """(rows,) int64 labels, when logged."""


@dataclass(frozen=True)
class LoggedRound:
    """One logged round: the candidate pool and what the pipeline kept from it."""

    round: int
    path: Path
    candidates: np.ndarray
    """(N, d) float64 candidate features in the target's raw feature space."""
    kept: np.ndarray
    """(n,) int64 distinct indices into the candidates, in the logged order."""
    labels: np.ndarray | None
    """(N,) int64 candidate labels, when logged."""
    scores: np.ndarray | None
    """(N,) float64 scores the pipeline's selector gave, when logged."""


def _read_arrays(
    path: Path, allowed: tuple[tuple[str, ...], tuple[str, ...]]
) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file without unpickling anything."""
    required, optional = allowed
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise SpecError(f"{path}: empty file", hint=_HINT)
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise SpecError(f"{path}: not a readable .npz archive ({exc})", hint=_HINT) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SpecError(f"{path}: contains a single .npy array, not an .npz archive", hint=_HINT)
    with archive:
        names = list(archive.files)
        for name in names:
            if name not in (*required, *optional):
                allowed_names = ", ".join((*required, *optional))
                raise SpecError(f"{path}: unknown array {name!r}; allowed: {allowed_names}")
        for name in required:
            if name not in names:
                found = ", ".join(names) or "none"
                raise SpecError(f"{path}: array {name!r} missing (found: {found})")
        arrays = {}
        for name in names:
            try:
                arrays[name] = archive[name]
            except _READ_ERRORS as exc:
                raise SpecError(
                    f"{path}: array {name!r} cannot be read ({exc})", hint=_HINT
                ) from None
    return arrays


def _check_kind(path: Path, name: str, array: np.ndarray, kinds: str, what: str) -> None:
    # dtype.kind: f float, i signed and u unsigned integer; this rejects bool, complex,
    # strings, bytes, datetimes, structured records and objects.
    if array.dtype.kind not in kinds:
        raise SpecError(f"{path}: {name} must hold {what}, got dtype {array.dtype}")


def _check_vector(path: Path, name: str, array: np.ndarray, rows: int) -> None:
    if array.shape != (rows,):
        raise SpecError(
            f"{path}: {name} must have shape ({rows},), one entry per row, got {array.shape}"
        )


def _features(path: Path, name: str, array: np.ndarray, dimension: int) -> np.ndarray:
    if array.ndim != 2:
        raise SpecError(f"{path}: {name} must have shape (rows, {dimension}), got {array.shape}")
    if array.shape[0] == 0:
        raise SpecError(f"{path}: {name} is empty (0 rows)")
    if array.shape[1] != dimension:
        raise SpecError(
            f"{path}: {name} has {array.shape[1]} features per row, but the manifest's "
            f"dimension is {dimension}; every logged feature array must have that dimension"
        )
    _check_kind(path, name, array, "fiu", "real numbers (float or integer)")
    features = array.astype(np.float64, copy=False)
    if not np.isfinite(features).all():
        row, col = np.argwhere(~np.isfinite(features))[0]
        raise SpecError(
            f"{path}: {name}[{row}, {col}] is {features[row, col]}; features must be finite "
            "(no NaN or infinity)"
        )
    return features


def _labels(path: Path, array: np.ndarray, rows: int, manifest: ReplayManifest) -> np.ndarray:
    _check_vector(path, "labels", array, rows)
    _check_kind(path, "labels", array, "iu", "integer label ids")
    if array.min() < 0:
        raise SpecError(f"{path}: labels contains {array.min()}; label ids are 0, 1, 2, ...")
    names = manifest.label_names
    if names is not None and array.max() >= len(names):
        raise SpecError(
            f"{path}: labels contains {array.max()}, but the manifest's label_names has "
            f"{len(names)} entries (ids 0 to {len(names) - 1})"
        )
    return array.astype(np.int64)


def _kept(path: Path, array: np.ndarray, total: int) -> np.ndarray:
    if array.ndim != 1:
        raise SpecError(f"{path}: kept must be a 1-D array of indices, got shape {array.shape}")
    _check_kind(path, "kept", array, "iu", "integer indices into candidates")
    if array.size == 0:
        raise SpecError(f"{path}: kept is empty; a round must keep at least one candidate")
    if array.size > total:
        raise SpecError(
            f"{path}: kept has {array.size} indices but there are only {total} candidates"
        )
    # Compare before casting, so that a huge unsigned index cannot wrap to a valid one.
    if array.min() < 0 or array.max() >= total:
        bad = array.min() if array.min() < 0 else array.max()
        raise SpecError(
            f"{path}: kept contains index {bad}, out of range for {total} candidates "
            f"(0 to {total - 1})"
        )
    kept = array.astype(np.int64)
    values, counts = np.unique(kept, return_counts=True)
    if values.size != kept.size:
        raise SpecError(f"{path}: kept contains index {values[counts > 1][0]} more than once")
    return kept


def _scores(path: Path, array: np.ndarray, rows: int) -> np.ndarray:
    _check_vector(path, "scores", array, rows)
    _check_kind(path, "scores", array, "fiu", "real numbers")
    scores = array.astype(np.float64, copy=False)
    if not np.isfinite(scores).all():
        index = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise SpecError(f"{path}: scores[{index}] is {scores[index]}; scores must be finite")
    return scores


def read_round(path: Path, t: int, manifest: ReplayManifest) -> LoggedRound:
    """Read and check one round file."""
    arrays = _read_arrays(path, ROUND_ARRAYS)
    candidates = _features(path, "candidates", arrays["candidates"], manifest.dimension)
    rows = candidates.shape[0]
    kept = _kept(path, arrays["kept"], rows)
    labels = _labels(path, arrays["labels"], rows, manifest) if "labels" in arrays else None
    scores = _scores(path, arrays["scores"], rows) if "scores" in arrays else None
    return LoggedRound(t, path, candidates, kept, labels, scores)


def read_set(path: Path, manifest: ReplayManifest) -> LoggedSet:
    """Read and check a client reference or D_0."""
    arrays = _read_arrays(path, SET_ARRAYS)
    features = _features(path, "features", arrays["features"], manifest.dimension)
    labels = arrays.get("labels")
    if labels is not None:
        labels = _labels(path, labels, features.shape[0], manifest)
    return LoggedSet(path, features, labels)
