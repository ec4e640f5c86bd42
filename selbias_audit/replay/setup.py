"""Prepare a replay: the target, the validated log, modes, logged references, tail set and D_0.

The target and its transform come from ``target:`` exactly as in a re-run. The client
references and D_0 come from the log, transformed like the target. Modes are the logged
labels when every logged set carries them, else a classifier fitted on the target, or
k-means cells when ``modes.kind`` is ``clusters``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from selbias_audit.data.modes import ClassifierModes, ClusterModes, LabelModes, choose_tail
from selbias_audit.data.modes_base import ModeAssigner
from selbias_audit.data.partition import mode_shares
from selbias_audit.errors import SpecError
from selbias_audit.replay.log import ReplayLog, open_log
from selbias_audit.seeding import SeedBook
from selbias_audit.setup import (
    AuditSetup,
    TargetSpace,
    load_target_space,
    resolve_device,
    selector_extras,
)
from selbias_audit.spec import ReplaySpec, RunSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayInputs:
    """Replay part of the shared audit setup: the log, its settings and the pool rule."""

    spec: ReplaySpec
    log: ReplayLog
    paradigm: str
    """Pool rule used to measure the rounds: replace, accumulate or accumulate_subsample."""
    logged_labels_used: bool
    """Whether the logged labels are the modes (else a classifier or k-means assigns them)."""


def resolve_log_folder(spec: ReplaySpec, base_dir: Path) -> Path:
    """Return the log folder, relative paths taken from the run description's folder."""
    path = Path(spec.log).expanduser()
    return (path if path.is_absolute() else base_dir / path).resolve()


def _resolve_paradigm(spec: ReplaySpec, log: ReplayLog) -> str:
    stated = log.manifest.paradigm
    if spec.paradigm is not None and stated is not None and spec.paradigm != stated:
        raise SpecError(
            f"replay.paradigm = {spec.paradigm!r} but {log.folder / 'manifest.json'} states "
            f"paradigm {stated!r}; remove replay.paradigm or correct the manifest"
        )
    paradigm = spec.paradigm or stated
    if paradigm is None:
        raise SpecError(
            f"replay.paradigm: missing, and {log.folder / 'manifest.json'} states no paradigm; "
            "set replay.paradigm to replace, accumulate or accumulate_subsample"
        )
    return paradigm


def _label_names(spec: RunSpec, space: TargetSpace, log: ReplayLog) -> list[str]:
    names = list(space.data.label_names)
    logged = log.manifest.label_names
    if logged is not None:
        if len(logged) != len(names):
            raise SpecError(
                f"{log.folder / 'manifest.json'}: label_names has {len(logged)} entries, but "
                f"the target {spec.target.source!r} has {len(names)} classes"
            )
        names = list(logged)
    return names


def _build_modes(
    spec: RunSpec, replay: ReplaySpec, space: TargetSpace, log: ReplayLog, seeds: SeedBook
) -> tuple[ModeAssigner, bool]:
    """Return the mode assigner and whether it reads the logged labels."""
    if spec.modes.kind == "clusters":
        seed = seeds.seed("modes", "kmeans")
        return ClusterModes(space.features, spec.modes.clusters, seed), False
    if space.data.labels is None:
        raise SpecError(
            f"modes.kind = 'labels' but the target {spec.target.source!r} has no labels, so "
            "target mode shares are unknown; use modes: {kind: clusters, clusters: K}"
        )
    names = _label_names(spec, space, log)
    if replay.use_logged_labels and log.labelled:
        _check_label_range(log, len(names))
        return LabelModes(names), True
    modes = ClassifierModes(
        space.features, space.data.labels, names, seeds.seed("modes", "classifier")
    )
    why = (
        "replay.use_logged_labels is false"
        if not replay.use_logged_labels
        else "not every logged set carries labels"
    )
    modes.description = f"{modes.description}; used because {why}"
    return modes, False


def _check_label_range(log: ReplayLog, count: int) -> None:
    sets = [("D_0", log.initial)] if log.initial else []
    sets += [(f"client {k}", s) for k, s in enumerate(log.clients)]
    sets += [(f"round {t}", s) for t, s in enumerate(log.rounds, start=1)]
    for what, summary in sets:
        if summary is not None and summary.max_label is not None and summary.max_label >= count:
            raise SpecError(
                f"replay log {log.folder}: {what} contains label {summary.max_label}, but the "
                f"target has {count} classes (0 to {count - 1})"
            )


def _check_clients(spec: RunSpec, replay: ReplaySpec, count: int) -> int | None:
    """Check every client number in the run description against the log; return the verifier's."""
    named = [(f"selection.compare[{i}].client", getattr(s, "client", None))
             for i, s in enumerate(spec.selection.compare)]
    named += [
        ("replay.verifier_client", replay.verifier_client),
        ("modes.tail.reference_client", spec.modes.tail.reference_client),
    ]
    for path, client in named:
        if client is not None and client >= count:
            raise SpecError(
                f"{path} = {client} but the log contains {count} client reference(s) "
                f"(0 to {count - 1})"
            )
    if spec.modes.tail.reference_client is not None:
        return spec.modes.tail.reference_client
    return replay.verifier_client


def _to_tensor(features: np.ndarray, space: TargetSpace) -> Tensor:
    return torch.as_tensor(space.transform.apply(features), dtype=torch.float64)


def prepare_replay(spec: RunSpec, spec_path: Path) -> AuditSetup:
    """Validate the log, load the target and the logged references, and fix the tail set."""
    replay = spec.replay
    if replay is None:
        raise ValueError("prepare_replay needs a run description with replay:")
    if spec.loop is not None or "generator" in spec.model_fields_set:
        logger.warning("loop: and generator: are ignored when replay: is given")
    base_dir = spec_path.resolve().parent
    seeds = SeedBook(spec.seed)
    device = resolve_device(spec.device)
    dtype = torch.float64 if spec.solver.dtype == "float64" else torch.float32

    # Check the log before the target, so that a wrong replay.log is reported as such and
    # not as a missing target.npz inside it.
    log = open_log(resolve_log_folder(replay, base_dir))
    space = load_target_space(spec, base_dir, seeds)
    raw_dimension = space.data.features.shape[1]
    if log.manifest.dimension != raw_dimension:
        raise SpecError(
            f"{log.folder / 'manifest.json'}: dimension = {log.manifest.dimension}, but the "
            f"target {spec.target.source!r} has {raw_dimension} features; log features in "
            "the target's raw feature space"
        )
    paradigm = _resolve_paradigm(replay, log)
    verifier = _check_clients(spec, replay, log.manifest.clients)
    modes, use_labels = _build_modes(spec, replay, space, log, seeds)
    count = len(modes.names)
    target_modes = modes.assign(space.target, space.labels).numpy()
    target_shares = mode_shares(target_modes, count)

    clients = log.read_clients()
    references = tuple(_to_tensor(c.features, space) for c in clients)
    reference_labels = None
    if all(c.labels is not None for c in clients):
        reference_labels = tuple(torch.as_tensor(c.labels) for c in clients)
    client_shares = []
    for k, reference in enumerate(references):
        labels = reference_labels[k] if (use_labels and reference_labels) else None
        client_shares.append(mode_shares(modes.assign(reference, labels).numpy(), count))
    reference_shares = None if verifier is None else client_shares[verifier]
    tail = choose_tail(target_shares, reference_shares, spec.modes.tail)

    logged_initial = log.read_initial()
    if logged_initial is None:
        initial = torch.empty((0, space.target.shape[1]), dtype=torch.float64)
        initial_labels = None
    else:
        initial = _to_tensor(logged_initial.features, space)
        initial_labels = (
            None if logged_initial.labels is None else torch.as_tensor(logged_initial.labels)
        )

    return AuditSetup(
        spec=spec, base_dir=base_dir, device=device, dtype=dtype, seeds=seeds, data=space.data,
        transform=space.transform, target=space.target, target_labels=space.labels, modes=modes,
        target_shares=target_shares, target_trace=space.trace, target_mean=space.mean,
        target_cov=space.cov, client_indices=[], references=references,
        reference_labels=reference_labels, client_shares=client_shares, tail=tail,
        verifier_client=verifier, initial=initial, initial_labels=initial_labels,
        extras=selector_extras(space, device, dtype),
        replay=ReplayInputs(
            spec=replay, log=log, paradigm=paradigm, logged_labels_used=use_labels
        ),
    )
