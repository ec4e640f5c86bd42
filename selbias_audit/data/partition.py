"""Partition the target into client references: iid, Dirichlet, ExDir and single class.

Every rule returns one index array per client. Rules that cannot be met raise a
:class:`SpecError` that says why, instead of redrawing forever.
"""

from __future__ import annotations

import numpy as np

from selbias_audit.errors import SpecError
from selbias_audit.spec import (
    DirichletPartition,
    ExDirPartition,
    IidPartition,
    PartitionSpec,
    SingleClassPartition,
)

MAX_REDRAWS = 1000


def partition(
    labels: np.ndarray | None,
    rows: int,
    clients: int,
    spec: PartitionSpec,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Split ``rows`` samples among ``clients``; return each client's sorted indices.

    ``labels`` (shape (rows,)) is required by every rule except iid.
    """
    if isinstance(spec, IidPartition):
        if rows < clients:
            raise SpecError(f"references.clients = {clients} exceeds the {rows} target samples")
        order = rng.permutation(rows)
        return [np.sort(part) for part in np.array_split(order, clients)]
    if labels is None:
        raise SpecError(
            f"references.partition.rule = {spec.rule!r} needs class labels, but the target has "
            "none; use rule: iid, or a target with labels"
        )
    if isinstance(spec, DirichletPartition):
        return _dirichlet(labels, clients, spec.alpha, rng)
    if isinstance(spec, ExDirPartition):
        return _exdir(labels, clients, spec, rng)
    if isinstance(spec, SingleClassPartition):
        return _single_class(labels, clients, spec, rng)
    raise AssertionError(f"unhandled partition rule {spec!r}")


def _split_by_weights(indices: np.ndarray, weights: np.ndarray) -> list[np.ndarray]:
    # Largest-remainder rounding: floor(w * n) each, then one more to the largest
    # fractional parts. A client with weight zero gets exactly nothing.
    exact = weights * len(indices)
    counts = np.floor(exact).astype(int)
    remainder = len(indices) - counts.sum()
    fractions = np.where(weights > 0, exact - counts, -1.0)
    counts[np.argsort(-fractions, kind="stable")[:remainder]] += 1
    return np.split(indices, np.cumsum(counts)[:-1])


def _owner_weights(
    weights: np.ndarray, owners: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    # A tiny alpha can underflow every owner's weight to zero; the limit of Dir(alpha)
    # as alpha -> 0 puts all mass on one owner, chosen uniformly.
    total = weights.sum()
    if total > 0 and np.isfinite(total):
        return weights / total
    single = np.zeros_like(weights)
    single[rng.choice(np.flatnonzero(owners))] = 1.0
    return single


def _split_classes(
    labels: np.ndarray,
    owners: np.ndarray,
    alpha: float,
    rng: np.random.Generator,
    rule: str,
) -> list[np.ndarray]:
    """Split each class among its owners with Dir(alpha) shares; redraw empty clients.

    ``owners`` is a (clients, classes) boolean table of who may receive each class.
    """
    classes = np.unique(labels)
    clients = owners.shape[0]
    for _ in range(MAX_REDRAWS):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for position, c in enumerate(classes):
            members = rng.permutation(np.flatnonzero(labels == c))
            weights = rng.dirichlet(np.full(clients, alpha))
            weights = _owner_weights(weights * owners[:, position], owners[:, position], rng)
            for k, chunk in enumerate(_split_by_weights(members, weights)):
                parts[k].append(chunk)
        result = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(r) for r in result) >= 1:
            return result
    raise SpecError(
        f"references.partition: {rule} left a client empty in {MAX_REDRAWS} draws; use "
        "fewer clients or a larger alpha"
    )


def _dirichlet(
    labels: np.ndarray, clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    owners = np.ones((clients, len(np.unique(labels))), dtype=bool)
    return _split_classes(labels, owners, alpha, rng, f"Dirichlet(alpha = {alpha})")


def _exdir(
    labels: np.ndarray, clients: int, spec: ExDirPartition, rng: np.random.Generator
) -> list[np.ndarray]:
    classes = np.unique(labels)
    count = len(classes)
    per = spec.classes_per_client
    if per > count:
        raise SpecError(
            f"references.partition.classes_per_client = {per} exceeds the {count} classes"
        )
    # Every class must be owned by at least this many clients, so no class is orphaned.
    coverage = max((per * clients) // count // 2, 1)
    if per * clients < coverage * count:
        raise SpecError(
            f"references.partition: ExDir({per}, {spec.alpha}) cannot give each of the {count} "
            f"classes an owner with {clients} clients owning {per} class(es) each; use at least "
            f"{-(-count // per)} clients or more classes_per_client"
        )
    owners = _draw_ownership(clients, count, per, coverage, rng)
    # Number clients by their smallest owned class: clients are exchangeable, and this
    # makes "client k" mean the same thing in every run (client 0 owns class 0 when C = 1).
    order = sorted(range(clients), key=lambda k: tuple(np.flatnonzero(owners[k])))
    owners = owners[order]
    return _split_classes(labels, owners, spec.alpha, rng, f"ExDir({per}, {spec.alpha})")


def _draw_ownership(
    clients: int, count: int, per: int, coverage: int, rng: np.random.Generator
) -> np.ndarray:
    # Independent draws, redrawn until every class has enough owners.
    for _ in range(MAX_REDRAWS):
        owners = np.zeros((clients, count), dtype=bool)
        for k in range(clients):
            owners[k, rng.choice(count, per, replace=False)] = True
        if owners.sum(axis=0).min() >= coverage:
            return owners
    # Independent draws rarely meet tight settings (K * C equal to the class count forces
    # a permutation). Deal a random class order cyclically instead: client k owns the C
    # classes after position k * C, which meets the coverage by construction.
    order = rng.permutation(count)
    owners = np.zeros((clients, count), dtype=bool)
    for k in range(clients):
        owners[k, order[(k * per + np.arange(per)) % count]] = True
    return owners


def _single_class(
    labels: np.ndarray, clients: int, spec: SingleClassPartition, rng: np.random.Generator
) -> list[np.ndarray]:
    classes = np.unique(labels)
    chosen = spec.labels if spec.labels is not None else list(classes[:clients])
    if len(chosen) != clients:
        raise SpecError(
            f"references.partition.labels has {len(chosen)} entries for {clients} clients; "
            "give one class per client"
        )
    missing = sorted(set(chosen) - set(classes.tolist()))
    if missing:
        raise SpecError(
            f"references.partition.labels: class(es) {missing} not in the target's labels "
            f"{classes.tolist()}"
        )
    result: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * clients
    # Clients that share a class split its members evenly.
    for c in set(chosen):
        sharing = [k for k, label in enumerate(chosen) if label == c]
        members = rng.permutation(np.flatnonzero(labels == c))
        for k, chunk in zip(sharing, np.array_split(members, len(sharing)), strict=True):
            result[k] = np.sort(chunk)
    return result


def limit_size(
    parts: list[np.ndarray], per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Keep a seeded uniform subset of at most ``per_client`` indices of each client."""
    limited = []
    for part in parts:
        if len(part) > per_client:
            part = np.sort(rng.choice(part, per_client, replace=False))
        limited.append(part)
    return limited


def mode_shares(modes: np.ndarray, count: int) -> np.ndarray:
    """Return the (count,) share of each mode id in ``modes`` (zeros when empty)."""
    if len(modes) == 0:
        return np.zeros(count)
    return np.bincount(modes, minlength=count)[:count] / len(modes)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Return the total-variation distance between two share vectors."""
    return float(0.5 * np.abs(p - q).sum())
