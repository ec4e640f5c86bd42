"""Manifold metrics against the prdc reference, and the Vendi score against vendi_score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prdc import compute_prdc
from vendi_score import vendi

from selbias_audit.metrics.manifold import knn_radii, manifold_scores, subsample, vendi_score


def clouds(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    real = torch.randn(300, 6, generator=generator, dtype=torch.float64)
    fake = torch.randn(250, 6, generator=generator, dtype=torch.float64) * 0.8 + 0.4
    return real, fake


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_prdc(seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    real, fake = clouds(seed)
    ours = manifold_scores(real, fake, k=5)
    # Continuous random points have no ties, so prdc's strict < and our <= agree.
    reference = compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    capsys.readouterr()  # prdc prints the set sizes
    assert ours.precision == pytest.approx(reference["precision"], abs=1e-12)
    assert ours.recall == pytest.approx(reference["recall"], abs=1e-12)
    assert ours.density == pytest.approx(reference["density"], abs=1e-12)
    assert ours.coverage == pytest.approx(reference["coverage"], abs=1e-12)


def test_identical_sets_score_one() -> None:
    real, _ = clouds(3)
    scores = manifold_scores(real, real.clone(), k=5)
    assert scores.precision == 1.0
    assert scores.recall == 1.0
    assert scores.coverage == 1.0


def test_duplicates_count_as_inside() -> None:
    real, _ = clouds(4)
    # Every target point six times: each radius is 0, and an exact copy sits on it.
    repeated = real[:40].repeat(6, 1)
    scores = manifold_scores(repeated, real[:40].clone(), k=5)
    assert scores.precision == 1.0
    assert scores.coverage == 1.0


def test_lost_mode_lowers_recall_and_coverage() -> None:
    generator = torch.Generator().manual_seed(5)
    modes = torch.tensor([[0.0, 0.0], [12.0, 0.0]], dtype=torch.float64)
    target = torch.cat([modes[i] + torch.randn(200, 2, generator=generator) for i in (0, 1)])
    kept = modes[0] + torch.randn(200, 2, generator=generator, dtype=torch.float64)
    scores = manifold_scores(target, kept, k=5)
    # The pool keeps one of two equal modes: about half the target is left uncovered.
    assert scores.recall < 0.6
    assert scores.coverage < 0.6
    assert scores.precision > 0.9


def test_radii_exclude_the_point_itself() -> None:
    points = torch.tensor([[0.0], [1.0], [3.0], [6.0]], dtype=torch.float64)
    radii = knn_radii(points, k=1)
    torch.testing.assert_close(radii, torch.tensor([1.0, 1.0, 4.0, 9.0], dtype=torch.float64))


def test_radii_need_more_points_than_k() -> None:
    with pytest.raises(ValueError, match="more than k = 5"):
        knn_radii(torch.zeros(5, 2), k=5)


@pytest.mark.parametrize("seed", [0, 1])
def test_vendi_matches_reference(seed: int) -> None:
    real, _ = clouds(seed)
    expected = vendi.score_dual(real.numpy(), normalize=True)
    assert vendi_score(real) == pytest.approx(float(expected), rel=1e-9)


def test_vendi_of_one_direction_is_one() -> None:
    points = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    assert vendi_score(points) == pytest.approx(1.0, abs=1e-12)


def test_subsample_is_seeded() -> None:
    points = torch.arange(20, dtype=torch.float64)[:, None]
    first = subsample(points, torch.Generator().manual_seed(9), limit=5)
    second = subsample(points, torch.Generator().manual_seed(9), limit=5)
    assert first.shape == (5, 1)
    assert torch.equal(first, second)
    assert subsample(points, torch.Generator().manual_seed(9), limit=50) is points
    assert np.unique(first.numpy()).size == 5
