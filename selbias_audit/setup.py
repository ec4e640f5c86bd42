"""Prepare an audit: target, transform, modes, client references, tail set and D_0.

Everything here is computed once per audit and shared by every selector run, so all
selectors are measured against the same target, references and tail modes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from selbias_audit.data.modes import ClassifierModes, ClusterModes, LabelModes, TailSet, choose_tail
from selbias_audit.data.modes_base import ModeAssigner
from selbias_audit.data.partition import limit_size, mode_shares, partition, total_variation
from selbias_audit.data.sources import TargetData, load_target
from selbias_audit.data.transform import FeatureTransform, fit_transform
from selbias_audit.errors import SpecError
from selbias_audit.metrics.distances import gaussian_fit
from selbias_audit.metrics.diversity import covariance_trace
from selbias_audit.seeding import SeedBook
from selbias_audit.spec import RunSpec

if TYPE_CHECKING:
    from selbias_audit.replay.setup import ReplayInputs


@dataclass
class AuditSetup:
    """Shared state of one audit."""

    spec: RunSpec
    base_dir: Path
    device: torch.device
    dtype: torch.dtype
    seeds: SeedBook
    data: TargetData
    transform: FeatureTransform
    target: Tensor
    """(n, d) float64 transformed target on the CPU."""
    target_labels: Tensor | None
    modes: ModeAssigner
    target_shares: np.ndarray
    target_trace: float
    target_mean: Tensor
    target_cov: Tensor
    client_indices: list[np.ndarray]
    """Target rows of each client's reference in a re-run; empty for a replay."""
    references: tuple[Tensor, ...]
    """Per-client (M_k, d) float64 references on the CPU."""
    reference_labels: tuple[Tensor, ...] | None
    client_shares: list[np.ndarray]
    tail: TailSet
    verifier_client: int | None
    initial: Tensor
    """(n_0, d) float64 real training set D_0; (0, d) for a replay that logged none."""
    initial_labels: Tensor | None
    extras: dict[str, Any] = field(default_factory=dict)
    replay: ReplayInputs | None = None
    """The validated log and the replay settings, for a replay."""

    @property
    def mode_count(self) -> int:
        """Return the number of modes."""
        return len(self.modes.names)

    @property
    def rounds(self) -> int:
        """Return the number of rounds T, re-run or logged."""
        if self.replay is not None:
            return self.replay.log.manifest.rounds
        return self.spec.rerun_loop.rounds


@dataclass(frozen=True)
class TargetSpace:
    """The target in the audit's feature space and the facts every metric compares with."""

    data: TargetData
    transform: FeatureTransform
    features: np.ndarray
    """(n, d) float64 transformed target."""
    target: Tensor
    """The same features as a CPU tensor."""
    labels: Tensor | None
    mean: Tensor
    cov: Tensor
    trace: float


def load_target_space(spec: RunSpec, base_dir: Path, seeds: SeedBook) -> TargetSpace:
    """Load the target, fit the feature transform on it and fit its Gaussian moments."""
    data = load_target(spec.target, base_dir, seeds.seed("target"))
    transform = fit_transform(spec.target.transform, data.features)
    features = transform.apply(data.features)
    target = torch.as_tensor(features, dtype=torch.float64)
    labels = None if data.labels is None else torch.as_tensor(data.labels)
    mean, cov = gaussian_fit(target)
    return TargetSpace(
        data=data, transform=transform, features=features, target=target, labels=labels,
        mean=mean, cov=cov, trace=covariance_trace(target),
    )


def selector_extras(
    space: TargetSpace, device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    """Return the facts of the target source that special selectors read (see SelectionContext)."""
    extras: dict[str, Any] = {}
    if "gaussian" in space.data.extras:
        construction = space.data.extras["gaussian"]
        transform = space.transform
        biased_mean = transform.apply(construction.biased_mean[None, :])[0]
        # Map the biased covariance through the same affine transform as the features.
        linear = np.diag(1.0 / transform.scale)
        if transform.components is not None:
            linear = transform.components @ linear
        biased_cov = linear @ construction.biased_cov @ linear.T
        extras["biased_target"] = (
            torch.as_tensor(biased_mean, device=device, dtype=dtype),
            torch.as_tensor(biased_cov, device=device, dtype=dtype),
        )
    return extras


def resolve_device(requested: str) -> torch.device:
    """Return the torch device for ``auto``, ``cpu`` or ``cuda``."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise SpecError(
            "device = 'cuda' but no CUDA device is available; use device: auto to fall back "
            "to the CPU"
        )
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _build_modes(spec: RunSpec, data: TargetData, target: np.ndarray, seeds: SeedBook) -> ModeAssigner:
    if spec.modes.kind == "clusters":
        return ClusterModes(target, spec.modes.clusters, seeds.seed("modes", "kmeans"))
    if spec.modes.kind == "shells":
        from selbias_audit.data.shells import MahalanobisShells

        return MahalanobisShells.from_samples(target)
    if data.labels is None:
        raise SpecError(
            f"modes.kind = 'labels' but the target {spec.target.source!r} has no labels; "
            "use modes: {kind: clusters, clusters: K}"
        )
    if spec.generator.kind == "class_gaussian":
        return LabelModes(data.label_names)
    return ClassifierModes(target, data.labels, data.label_names, seeds.seed("modes", "classifier"))


def _verifier_client(spec: RunSpec) -> int | None:
    if spec.modes.tail.reference_client is not None:
        return spec.modes.tail.reference_client
    return getattr(spec.audited_selector, "client", None)


def prepare(spec: RunSpec, spec_path: Path) -> AuditSetup:
    """Load and transform the target, cut the client references and fix the tail set.

    This is the setup of a re-run; :func:`selbias_audit.replay.setup.prepare_replay` is
    the one of a replay.
    """
    loop = spec.rerun_loop
    base_dir = spec_path.resolve().parent
    seeds = SeedBook(spec.seed)
    device = resolve_device(spec.device)
    dtype = torch.float64 if spec.solver.dtype == "float64" else torch.float32

    space = load_target_space(spec, base_dir, seeds)
    data, target, target_labels = space.data, space.target, space.labels
    if spec.generator.kind == "class_gaussian" and data.labels is None:
        raise SpecError(
            f"generator.kind = 'class_gaussian' needs a labelled target, but "
            f"{spec.target.source!r} has no labels; use generator: {{kind: gaussian}}"
        )
    modes = _build_modes(spec, data, space.features, seeds)
    target_modes = modes.assign(target, target_labels).numpy()
    count = len(modes.names)
    target_shares = mode_shares(target_modes, count)

    rows = target.shape[0]
    try:
        parts = partition(
            data.labels, rows, spec.references.clients, spec.references.partition,
            seeds.numpy("partition"),
        )
    except SpecError as error:
        # The partition rule names the field but not the file it came from.
        raise SpecError(f"{spec_path}: {error.message}", hint=error.hint) from None
    parts = limit_size(parts, spec.references.per_client, seeds.numpy("reference-size"))
    references = tuple(target[idx] for idx in parts)
    reference_labels = None if target_labels is None else tuple(target_labels[i] for i in parts)
    client_shares = [mode_shares(target_modes[idx], count) for idx in parts]

    verifier = _verifier_client(spec)
    reference_shares = None if verifier is None else client_shares[verifier]
    tail = choose_tail(target_shares, reference_shares, spec.modes.tail)

    initial_size = loop.initial_size or rows
    if initial_size > rows:
        raise SpecError(
            f"loop.initial_size = {initial_size} exceeds the {rows} target samples; use at most "
            f"{rows}"
        )
    order = torch.randperm(rows, generator=seeds.torch("initial"))[:initial_size]
    rows_kept = torch.sort(order).values
    initial = target[rows_kept]
    initial_labels = None if target_labels is None else target_labels[rows_kept]

    return AuditSetup(
        spec=spec, base_dir=base_dir, device=device, dtype=dtype, seeds=seeds, data=data,
        transform=space.transform, target=target, target_labels=target_labels, modes=modes,
        target_shares=target_shares, target_trace=space.trace, target_mean=space.mean,
        target_cov=space.cov, client_indices=parts, references=references,
        reference_labels=reference_labels, client_shares=client_shares, tail=tail,
        verifier_client=verifier, initial=initial, initial_labels=initial_labels,
        extras=selector_extras(space, device, dtype),
    )


def client_total_variations(setup: AuditSetup) -> list[float]:
    """Return each client's total-variation distance to the global mode shares."""
    return [total_variation(s, setup.target_shares) for s in setup.client_shares]
