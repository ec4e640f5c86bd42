"""Reading and validating a replay log, one file at a time.

:func:`open_log` reads the manifest, checks the folder layout, then reads and checks every
file once (one file in memory at a time) and records its SHA-256. The audit then reads
the rounds a second time through :meth:`ReplayLog.iter_rounds`, again one at a time, so
memory stays bounded by the largest round whatever the number of rounds. Every problem
is a :class:`~selbias_audit.errors.SpecError` (exit code 2) naming the file and the array.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from selbias_audit.errors import SpecError
from selbias_audit.replay.files import LoggedRound, LoggedSet, read_round, read_set
from selbias_audit.replay.manifest import (
    CLIENTS_DIR,
    INITIAL_NAME,
    MANIFEST_NAME,
    ROUNDS_DIR,
    ReplayManifest,
    client_name,
    client_path,
    round_name,
    round_path,
)


@dataclass(frozen=True)
class SetSummary:
    """Size and labelling of a logged feature set, kept after its arrays are released."""

    rows: int
    max_label: int | None
    """Largest logged label, or None when the set carries no labels."""


@dataclass(frozen=True)
class RoundSummary:
    """Sizes and facts of one logged round, kept after its arrays are released."""

    candidates: int
    kept: int
    max_label: int | None
    score_order: Literal["lowest", "highest", "other"] | None
    """Whether the kept candidates are exactly those with the lowest or highest logged
    scores; None when no scores are logged or every candidate was kept."""


@dataclass(frozen=True)
class LoggedFile:
    """A file of the log and its SHA-256, for the receipt's inputs and the signed subjects."""

    path: Path
    sha256: str
    role: str


@dataclass(frozen=True)
class ReplayLog:
    """A validated replay log; the arrays are read again on demand."""

    folder: Path
    manifest: ReplayManifest
    rounds: tuple[RoundSummary, ...]
    clients: tuple[SetSummary, ...]
    initial: SetSummary | None
    files: tuple[LoggedFile, ...]
    """The manifest first, then D_0, the clients and the rounds in order."""

    @property
    def labelled(self) -> bool:
        """Return whether every logged set (rounds, clients, D_0) carries labels."""
        sets = [*self.rounds, *self.clients, *([self.initial] if self.initial else [])]
        return all(s.max_label is not None for s in sets)

    def iter_rounds(self) -> Iterator[LoggedRound]:
        """Yield the rounds in order, reading one file per step."""
        for t in range(1, self.manifest.rounds + 1):
            yield read_round(round_path(self.folder, t), t, self.manifest)

    def read_clients(self) -> list[LoggedSet]:
        """Return every client's logged reference."""
        return [
            read_set(client_path(self.folder, k), self.manifest)
            for k in range(self.manifest.clients)
        ]

    def read_initial(self) -> LoggedSet | None:
        """Return the logged D_0, or None when the log has none."""
        if not self.manifest.initial:
            return None
        return read_set(self.folder / INITIAL_NAME, self.manifest)


def open_log(folder: Path) -> ReplayLog:
    """Validate the log in ``folder`` file by file and return its summary.

    Raises
    ------
    SpecError
        On the first problem: a missing folder, manifest or file, a file that is not a
        readable ``.npz`` archive, an array with the wrong name, shape or dtype,
        non-finite features, or kept indices that are out of range or repeated.
    """
    manifest, manifest_digest = read_manifest(folder)
    _check_layout(folder, manifest)
    files = [LoggedFile(folder / MANIFEST_NAME, manifest_digest, "replay manifest")]

    initial = None
    if manifest.initial:
        path = folder / INITIAL_NAME
        initial = _summarise_set(read_set(path, manifest))
        files.append(LoggedFile(path, sha256_file(path), "replay initial training set D_0"))
    clients = []
    for k in range(manifest.clients):
        path = client_path(folder, k)
        clients.append(_summarise_set(read_set(path, manifest)))
        files.append(LoggedFile(path, sha256_file(path), f"replay client {k} reference"))
    rounds = []
    for t in range(1, manifest.rounds + 1):
        path = round_path(folder, t)
        rounds.append(_summarise_round(read_round(path, t, manifest)))
        files.append(LoggedFile(path, sha256_file(path), f"replay round {t}"))
    return ReplayLog(folder, manifest, tuple(rounds), tuple(clients), initial, tuple(files))


def sha256_file(path: Path) -> str:
    """Return the SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Manifest and layout
# --------------------------------------------------------------------------------------------


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"duplicate key {key!r}")
    return dict(pairs)


def read_manifest(folder: Path) -> tuple[ReplayManifest, str]:
    """Read and validate ``manifest.json``; return the model and the file's SHA-256."""
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "not found"
        raise SpecError(
            f"replay.log: {folder} {state}", hint="check replay.log in the run description"
        )
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise SpecError(
            f"{path}: manifest missing; a replay log folder must contain {MANIFEST_NAME}",
            hint="the pipeline writes the manifest after its last round file",
        )
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SpecError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the manifest must be a JSON object, got {type(data).__name__}")
    try:
        manifest = ReplayManifest.model_validate(data)
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            where = ".".join(str(part) for part in item["loc"]) or "manifest"
            if item["type"] == "extra_forbidden":
                problems.append(f"  {where}: unknown key")
            else:
                problems.append(f"  {where}: {item['msg']} (received {item.get('input')!r})")
        raise SpecError(f"{path}: invalid manifest\n" + "\n".join(problems)) from None
    return manifest, hashlib.sha256(raw).hexdigest()


def _check_layout(folder: Path, manifest: ReplayManifest) -> None:
    """Check that exactly the files the manifest implies exist, before reading any."""
    _check_numbered(folder / ROUNDS_DIR, "round", range(1, manifest.rounds + 1), round_name)
    _check_numbered(folder / CLIENTS_DIR, "client", range(manifest.clients), client_name)
    initial = folder / INITIAL_NAME
    if manifest.initial and not initial.is_file():
        raise SpecError(f"{initial}: missing, but the manifest sets initial = true")
    if not manifest.initial and initial.exists():
        raise SpecError(
            f"{initial}: present, but the manifest sets initial = false; set it to true to "
            "use D_0, or remove the file"
        )


def _check_numbered(
    sub: Path, kind: str, numbers: range, name_of: Callable[[int], str]
) -> None:
    first, last = name_of(numbers[0]), name_of(numbers[-1])
    for number in numbers:
        if not (sub / name_of(number)).is_file():
            raise SpecError(
                f"{sub / name_of(number)}: missing; the manifest lists {len(numbers)} {kind} "
                f"file(s), {first} to {last}, and each must exist"
            )
    expected = {name_of(number) for number in numbers}
    pattern = re.compile(rf"{kind}_(\d+)\.npz")
    for entry in sorted(sub.iterdir()):
        if entry.suffix != ".npz" or entry.name in expected:
            continue
        match = pattern.fullmatch(entry.name)
        if match is None:
            why = f"not named {kind}_<number>.npz"
        elif int(match.group(1)) in numbers:
            why = f"misnamed; {kind} {int(match.group(1))} is {name_of(int(match.group(1)))}"
        else:
            why = "numbered beyond the manifest"
        raise SpecError(
            f"{entry}: unexpected file ({why}); the manifest lists {first} to {last}; "
            "update the manifest or remove the file"
        )


def _summarise_set(logged: LoggedSet) -> SetSummary:
    top = None if logged.labels is None else int(logged.labels.max())
    return SetSummary(rows=int(logged.features.shape[0]), max_label=top)


def _summarise_round(logged: LoggedRound) -> RoundSummary:
    top = None if logged.labels is None else int(logged.labels.max())
    return RoundSummary(
        candidates=int(logged.candidates.shape[0]),
        kept=int(logged.kept.size),
        max_label=top,
        score_order=_score_order(logged),
    )


def _score_order(logged: LoggedRound) -> Literal["lowest", "highest", "other"] | None:
    if logged.scores is None or logged.kept.size == logged.scores.size:
        return None
    mask = np.zeros(logged.scores.size, dtype=bool)
    mask[logged.kept] = True
    inside, outside = logged.scores[mask], logged.scores[~mask]
    if inside.max() <= outside.min():
        return "lowest"
    if inside.min() >= outside.max():
        return "highest"
    return "other"
