"""Partition rules: every sample goes to at most one client, and the rules hold."""

from __future__ import annotations

import numpy as np
import pytest

from selbias_audit.data.partition import limit_size, mode_shares, partition, total_variation
from selbias_audit.errors import SpecError
from selbias_audit.spec import (
    DirichletPartition,
    ExDirPartition,
    IidPartition,
    SingleClassPartition,
)

LABELS = np.repeat(np.arange(10), 50)


def _check_disjoint(parts: list[np.ndarray], rows: int) -> None:
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined), "a sample went to two clients"
    assert joined.min() >= 0
    assert joined.max() < rows


@pytest.mark.parametrize(
    "rule",
    [IidPartition(), DirichletPartition(alpha=0.3), ExDirPartition(classes_per_client=2, alpha=0.5),
     SingleClassPartition()],
)
def test_partition_disjoint_and_nonempty(rule) -> None:
    parts = partition(LABELS, len(LABELS), 10, rule, np.random.default_rng(0))
    assert len(parts) == 10
    _check_disjoint(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 1


def test_iid_covers_everything() -> None:
    parts = partition(None, 103, 4, IidPartition(), np.random.default_rng(0))
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))


def test_exdir_one_class_each_client_owns_its_class() -> None:
    parts = partition(LABELS, len(LABELS), 10, ExDirPartition(), np.random.default_rng(5))
    for k, part in enumerate(parts):
        assert set(LABELS[part].tolist()) == {k}


def test_exdir_owned_classes_at_most_c() -> None:
    parts = partition(LABELS, len(LABELS), 20, ExDirPartition(classes_per_client=2, alpha=1.0),
                      np.random.default_rng(1))
    for part in parts:
        assert len(set(LABELS[part].tolist())) <= 2


def test_exdir_too_few_clients_rejected() -> None:
    with pytest.raises(SpecError, match="cannot give each of the 10 classes an owner"):
        partition(LABELS, len(LABELS), 5, ExDirPartition(), np.random.default_rng(0))


def test_dirichlet_small_alpha_is_skewed() -> None:
    parts = partition(LABELS, len(LABELS), 10, DirichletPartition(alpha=0.05),
                      np.random.default_rng(0))
    global_shares = mode_shares(LABELS, 10)
    tvs = [total_variation(mode_shares(LABELS[p], 10), global_shares) for p in parts]
    iid = partition(LABELS, len(LABELS), 10, IidPartition(), np.random.default_rng(0))
    iid_tvs = [total_variation(mode_shares(LABELS[p], 10), global_shares) for p in iid]
    assert np.mean(tvs) > 0.5
    assert np.mean(iid_tvs) < 0.25


def test_single_class_labels_and_sharing() -> None:
    parts = partition(LABELS, len(LABELS), 3, SingleClassPartition(labels=[4, 4, 7]),
                      np.random.default_rng(0))
    assert set(LABELS[parts[0]].tolist()) == {4}
    assert set(LABELS[parts[2]].tolist()) == {7}
    assert len(parts[0]) + len(parts[1]) == 50


def test_single_class_unknown_label_rejected() -> None:
    with pytest.raises(SpecError, match=r"class\(es\) \[42\] not in the target"):
        partition(LABELS, len(LABELS), 1, SingleClassPartition(labels=[42]),
                  np.random.default_rng(0))


def test_label_rule_without_labels_rejected() -> None:
    with pytest.raises(SpecError, match="needs class labels"):
        partition(None, 100, 4, DirichletPartition(), np.random.default_rng(0))


def test_limit_size_caps_each_client() -> None:
    parts = [np.arange(100), np.arange(100, 105)]
    limited = limit_size(parts, 10, np.random.default_rng(0))
    assert [len(p) for p in limited] == [10, 5]
    assert set(limited[0].tolist()) <= set(range(100))


def test_partition_is_seeded() -> None:
    a = partition(LABELS, len(LABELS), 10, DirichletPartition(), np.random.default_rng(9))
    b = partition(LABELS, len(LABELS), 10, DirichletPartition(), np.random.default_rng(9))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_exdir_unsatisfiable_split_rejected() -> None:
    with pytest.raises(SpecError, match="left a client empty"):
        partition(LABELS, len(LABELS), 40, ExDirPartition(classes_per_client=1, alpha=0.01),
                  np.random.default_rng(0))
