"""Top-alpha selector: Mahalanobis ranking, ties, target sources and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selbias_audit.errors import NonFiniteError
from selbias_audit.selectors.base import SelectionContext
from selbias_audit.selectors.top_alpha import (
    REFERENCE_RIDGE,
    TopAlphaSelector,
    lowest_score_indices,
)
from selbias_audit.spec import TopAlphaSpec


def _context(
    references: tuple[torch.Tensor, ...] = (),
    biased_target: tuple[torch.Tensor, torch.Tensor] | None = None,
    round_index: int = 3,
) -> SelectionContext:
    extras = {} if biased_target is None else {"biased_target": biased_target}
    return SelectionContext(
        round=round_index,
        references=references,
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
        extras=extras,
    )


def _numpy_scores(points: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    diff = points - mean
    return np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff)


def _gaussian_target(dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal((dim, dim))
    cov = factor @ factor.T + 0.1 * np.eye(dim)
    return torch.as_tensor(rng.standard_normal(dim)), torch.as_tensor(cov)


def test_ranking_matches_numpy() -> None:
    mean, cov = _gaussian_target(4, seed=0)
    candidates = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    selection = TopAlphaSelector(TopAlphaSpec()).select(
        candidates, 10, _context(biased_target=(mean, cov))
    )
    expected_scores = _numpy_scores(candidates.double().numpy(), mean.numpy(), cov.numpy())
    expected = np.argsort(expected_scores, kind="stable")[:10]
    np.testing.assert_array_equal(selection.indices.numpy(), expected)
    np.testing.assert_allclose(selection.scores.numpy(), expected_scores, rtol=1e-10)
    assert selection.indices.dtype == torch.int64


def test_scaling_target_covariance_keeps_ranking() -> None:
    # Sigma_b = 0.3 Sigma* scales every score by 1/0.3, so the kept set is the same.
    mean, cov = _gaussian_target(5, seed=2)
    candidates = torch.randn(300, 5, generator=torch.Generator().manual_seed(3))
    selector = TopAlphaSelector(TopAlphaSpec())
    full = selector.select(candidates, 15, _context(biased_target=(mean, cov)))
    scaled = selector.select(candidates, 15, _context(biased_target=(mean, 0.3 * cov)))
    torch.testing.assert_close(scaled.indices, full.indices)


def test_ties_go_to_lower_index() -> None:
    point = torch.tensor([[1.0, 1.0]])
    far = torch.tensor([[5.0, 5.0]])
    candidates = torch.cat([far, point, far, point, point, far])
    selection = TopAlphaSelector(TopAlphaSpec()).select(
        candidates, 2, _context(biased_target=(torch.zeros(2), torch.eye(2)))
    )
    assert selection.indices.tolist() == [1, 3]
    assert selection.diagnostics["ties_at_cutoff"] == 1


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.integers(0, 5), min_size=1, max_size=40),
    data=st.data(),
)
def test_lowest_score_indices_equals_stable_argsort(scores: list[int], data: st.DataObject) -> None:
    count = data.draw(st.integers(0, len(scores)))
    values = torch.tensor(scores, dtype=torch.float64)
    expected = np.argsort(np.array(scores), kind="stable")[:count]
    np.testing.assert_array_equal(lowest_score_indices(values, count).numpy(), expected)


def test_lowest_score_indices_batched_rows_independent() -> None:
    scores = torch.tensor([[3.0, 1.0, 1.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    kept_indices = lowest_score_indices(scores, 2)
    assert kept_indices.tolist() == [[3, 1], [0, 1]]


def test_client_reference_target() -> None:
    rng = np.random.default_rng(4)
    reference = rng.standard_normal((50, 3)) * [1.0, 2.0, 0.5] + [3.0, 0.0, -1.0]
    candidates = torch.as_tensor(rng.standard_normal((100, 3)) * 3.0)
    spec = TopAlphaSpec(client=1)
    selection = TopAlphaSelector(spec).select(
        candidates, 7, _context(references=(torch.zeros(5, 3), torch.as_tensor(reference)))
    )
    cov = np.cov(reference.T, bias=True)
    cov += REFERENCE_RIDGE * np.trace(cov) / 3 * np.eye(3)
    expected_scores = _numpy_scores(candidates.numpy(), reference.mean(axis=0), cov)
    np.testing.assert_array_equal(
        selection.indices.numpy(), np.argsort(expected_scores, kind="stable")[:7]
    )
    assert selection.diagnostics["biased_target"] == "client 1 reference"
    assert TopAlphaSelector(spec).name == "top_alpha[client 1]"


def test_single_row_reference_ranks_by_euclidean_distance() -> None:
    candidates = torch.tensor([[3.0, 0.0], [0.5, 0.5], [0.0, 2.0]])
    selection = TopAlphaSelector(TopAlphaSpec(client=0)).select(
        candidates, 2, _context(references=(torch.tensor([[0.0, 0.0]]),))
    )
    assert selection.indices.tolist() == [1, 2]


def test_missing_biased_target_raises() -> None:
    candidates = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="no biased target"):
        TopAlphaSelector(TopAlphaSpec()).select(candidates, 2, _context())


def test_client_without_reference_raises() -> None:
    with pytest.raises(ValueError, match="client 2 has no reference"):
        TopAlphaSelector(TopAlphaSpec(client=2)).select(
            torch.zeros(4, 2), 2, _context(references=(torch.zeros(3, 2),))
        )


def test_malformed_biased_target_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        TopAlphaSelector(TopAlphaSpec()).select(
            torch.zeros(4, 2), 2, _context(biased_target=(torch.zeros(3), torch.eye(3)))
        )


def test_non_finite_candidate_names_selector_and_round() -> None:
    candidates = torch.zeros(4, 2)
    candidates[2, 1] = float("inf")
    with pytest.raises(NonFiniteError, match=r"top_alpha \(round 7\)"):
        TopAlphaSelector(TopAlphaSpec()).select(
            candidates, 2,
            _context(biased_target=(torch.zeros(2), torch.eye(2)), round_index=7),
        )


def test_non_finite_reference_raises() -> None:
    reference = torch.tensor([[0.0, float("nan")], [1.0, 1.0]])
    with pytest.raises(NonFiniteError, match="reference of client 0"):
        TopAlphaSelector(TopAlphaSpec(client=0)).select(
            torch.zeros(4, 2), 2, _context(references=(reference,))
        )


@pytest.mark.parametrize("count", [0, 5])
def test_count_edges(count: int) -> None:
    candidates = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    selection = TopAlphaSelector(TopAlphaSpec()).select(
        candidates, count, _context(biased_target=(torch.zeros(2), torch.eye(2)))
    )
    assert selection.indices.shape == (count,)
    assert len(set(selection.indices.tolist())) == count


def test_count_above_candidates_raises() -> None:
    with pytest.raises(ValueError, match="cannot keep 6 of 5"):
        TopAlphaSelector(TopAlphaSpec()).select(
            torch.zeros(5, 2), 6, _context(biased_target=(torch.zeros(2), torch.eye(2)))
        )


def test_inputs_not_mutated() -> None:
    mean, cov = _gaussian_target(3, seed=8)
    candidates = torch.randn(40, 3, generator=torch.Generator().manual_seed(9))
    copies = (candidates.clone(), mean.clone(), cov.clone())
    TopAlphaSelector(TopAlphaSpec()).select(candidates, 5, _context(biased_target=(mean, cov)))
    torch.testing.assert_close(candidates, copies[0], rtol=0, atol=0)
    torch.testing.assert_close(mean, copies[1], rtol=0, atol=0)
    torch.testing.assert_close(cov, copies[2], rtol=0, atol=0)


def test_reordering_candidates_keeps_selected_rows() -> None:
    mean, cov = _gaussian_target(3, seed=10)
    generator = torch.Generator().manual_seed(11)
    candidates = torch.randn(80, 3, dtype=torch.float64, generator=generator)
    permutation = torch.randperm(80, generator=torch.Generator().manual_seed(12))
    selector = TopAlphaSelector(TopAlphaSpec())
    context = _context(biased_target=(mean, cov))
    original = selector.select(candidates, 12, context)
    shuffled = selector.select(candidates[permutation], 12, context)
    kept_after_shuffle = candidates[permutation][shuffled.indices]
    torch.testing.assert_close(kept_after_shuffle, candidates[original.indices])
