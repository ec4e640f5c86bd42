"""Write a replay log from inside a pipeline, one file per round.

The writer is a convenience: any code that writes the layout of
:mod:`selbias_audit.replay.manifest` with ``numpy.savez`` produces a valid log. The
manifest is written last, by :meth:`ReplayLogWriter.close`, so a pipeline that stops
half-way leaves a folder that the audit rejects instead of one that looks complete.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from selbias_audit.io import atomic_write_bytes, atomic_write_text
from selbias_audit.replay.manifest import (
    CLIENTS_DIR,
    FORMAT_NAME,
    FORMAT_VERSION,
    INITIAL_NAME,
    MANIFEST_NAME,
    ROUNDS_DIR,
    ReplayManifest,
    client_path,
    manifest_text,
    round_path,
)

TARGET_NAME = "target.npz"


class ReplayLogWriter:
    """Write D_0, the client references and each round's candidates and kept indices.

    Parameters
    ----------
    folder : Path
        Log folder, created if missing.
    dimension : int
        Feature dimension d of every feature array written.
    clients : int
        Number of client references K; :meth:`close` checks that each was written.
    paradigm : str or None
        ``replace``, ``accumulate`` or ``accumulate_subsample``, recorded in the manifest.
    label_names : list[str] or None
        Name of each label id.
    generator, description : str or None
        Free text recorded in the manifest.
    compress : bool
        Write compressed archives (``numpy.savez_compressed``).
    overwrite : bool
        Remove an earlier log's files from ``folder`` first; without it an existing
        manifest or round file raises FileExistsError.
    """

    def __init__(
        self,
        folder: Path,
        *,
        dimension: int,
        clients: int,
        paradigm: str | None = None,
        label_names: list[str] | None = None,
        generator: str | None = None,
        description: str | None = None,
        compress: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.dimension = dimension
        self.clients = clients
        self.compress = compress
        self._facts: dict[str, Any] = {
            "paradigm": paradigm, "label_names": label_names, "generator": generator,
            "description": description,
        }
        self._rounds = 0
        self._clients_written: set[int] = set()
        self._initial = False
        previous = (self.folder / MANIFEST_NAME).exists() or any(
            (self.folder / ROUNDS_DIR).glob("*.npz")
        )
        if previous and not overwrite:
            raise FileExistsError(f"{self.folder} already contains a replay log (or part of one)")
        if previous:
            self._remove_previous()

    def _remove_previous(self) -> None:
        for sub in (ROUNDS_DIR, CLIENTS_DIR):
            for path in (self.folder / sub).glob("*.npz"):
                path.unlink()
        for name in (MANIFEST_NAME, INITIAL_NAME, TARGET_NAME):
            (self.folder / name).unlink(missing_ok=True)

    def _save(self, path: Path, arrays: dict[str, Any]) -> Path:
        present = {name: np.asarray(value) for name, value in arrays.items() if value is not None}
        buffer = io.BytesIO()
        if self.compress:
            np.savez_compressed(buffer, **present)
        else:
            np.savez(buffer, **present)
        return atomic_write_bytes(path, buffer.getvalue())

    def _check_features(self, features: Any, what: str) -> None:
        shape = np.shape(features)
        if len(shape) != 2 or shape[1] != self.dimension:
            raise ValueError(f"{what} must have shape (rows, {self.dimension}), got {shape}")

    def write_initial(self, features: Any, labels: Any = None) -> Path:
        """Write the real training set D_0, shape (n_0, d), with optional (n_0,) labels."""
        self._check_features(features, "D_0 features")
        self._initial = True
        return self._save(self.folder / INITIAL_NAME, {"features": features, "labels": labels})

    def write_client(self, client: int, features: Any, labels: Any = None) -> Path:
        """Write client ``client``'s reference, shape (M, d), with optional (M,) labels."""
        if not 0 <= client < self.clients:
            raise ValueError(f"client {client} is outside 0 to {self.clients - 1}")
        self._check_features(features, f"client {client} features")
        self._clients_written.add(client)
        path = client_path(self.folder, client)
        return self._save(path, {"features": features, "labels": labels})

    def write_round(
        self, candidates: Any, kept: Any, labels: Any = None, scores: Any = None
    ) -> Path:
        """Write the next round: (N, d) candidates, (n,) kept indices, optional (N,) labels
        and (N,) scores."""
        self._check_features(candidates, "candidates")
        self._rounds += 1
        path = round_path(self.folder, self._rounds)
        arrays = {"candidates": candidates, "kept": kept, "labels": labels, "scores": scores}
        return self._save(path, arrays)

    def write_target(self, features: Any, labels: Any = None) -> Path:
        """Write ``target.npz`` with arrays ``X`` and ``y``, the format ``target.source`` reads."""
        return self._save(self.folder / TARGET_NAME, {"X": features, "y": labels})

    def close(self) -> Path:
        """Write the manifest for the rounds written so far and return its path."""
        missing = sorted(set(range(self.clients)) - self._clients_written)
        if missing:
            raise ValueError(f"client reference(s) {missing} were never written")
        if self._rounds == 0:
            raise ValueError("no round was written")
        manifest = ReplayManifest(
            format=FORMAT_NAME, format_version=FORMAT_VERSION, rounds=self._rounds,
            dimension=self.dimension, clients=self.clients, initial=self._initial,
            **self._facts,
        )
        return atomic_write_text(self.folder / MANIFEST_NAME, manifest_text(manifest))
