"""Scheme II selector: barycenter geometry, reuse across rounds and failure behaviour."""

from __future__ import annotations

import pytest
import torch

from selbias_audit.errors import NonFiniteError
from selbias_audit.selectors._conventions import SinkhornSettings
from selbias_audit.selectors.base import SelectionContext
from selbias_audit.selectors.scheme2 import Scheme2Selector, estimate_barycenter, lowest_scores
from selbias_audit.spec import Scheme2Spec


def separated_references(seed: int = 0) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Two Gaussian references 8 apart on the first axis; candidates spread over both."""
    generator = torch.Generator().manual_seed(seed)
    left = torch.randn(40, 2, generator=generator, dtype=torch.float64) * 0.3 + torch.tensor(
        [-4.0, 0.0], dtype=torch.float64
    )
    right = torch.randn(40, 2, generator=generator, dtype=torch.float64) * 0.3 + torch.tensor(
        [4.0, 0.0], dtype=torch.float64
    )
    candidates = torch.randn(50, 2, generator=generator, dtype=torch.float64) * torch.tensor(
        [3.0, 1.0], dtype=torch.float64
    )
    return candidates, (left, right)


def context(references: tuple[torch.Tensor, ...], round_index: int = 0) -> SelectionContext:
    return SelectionContext(
        round=round_index,
        references=references,
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
        dtype=torch.float64,
    )


def no_check(values: torch.Tensor, what: str, client: int | None) -> None:
    assert bool(torch.isfinite(values).all()), what


@pytest.mark.parametrize("debiased", [False, True])
def test_barycenter_lands_between_references(debiased: bool) -> None:
    candidates, references = separated_references()
    estimate = estimate_barycenter(
        candidates,
        references,
        SinkhornSettings(blur=0.1),
        weights=[0.5, 0.5],
        debiased=debiased,
        max_iter=10,
        tol=0.0,
        check=no_check,
    )
    first_axis = estimate.support[:, 0]
    # The W2 barycenter of N((-4, 0), s^2 I) and N((4, 0), s^2 I) is N(0, s^2 I): every
    # support point is the average of one point from each side. A tolerance of 1.0
    # (3 reference standard deviations) covers the entropic blur and the sampling.
    assert float(first_axis.abs().max()) < 1.0
    assert abs(float(first_axis.mean())) < 0.2
    assert len(estimate.displacements) == 10


def test_tolerance_stops_early() -> None:
    candidates, references = separated_references()
    estimate = estimate_barycenter(
        candidates,
        references,
        SinkhornSettings(blur=0.1),
        weights=[0.5, 0.5],
        debiased=False,
        max_iter=50,
        tol=1e-2,
        check=no_check,
    )
    assert len(estimate.displacements) < 50
    assert estimate.displacements[-1] <= 1e-2


def test_keeps_candidates_nearest_the_barycenter() -> None:
    candidates, references = separated_references()
    selection = Scheme2Selector(Scheme2Spec(blur=0.1)).select(candidates, 10, context(references))
    kept = candidates[selection.indices]
    dropped_mask = torch.ones(50, dtype=torch.bool)
    dropped_mask[selection.indices] = False
    # The barycenter sits at the origin, so the kept candidates are the central ones.
    assert float(kept.norm(dim=1).mean()) < float(candidates[dropped_mask].norm(dim=1).mean())
    assert selection.scores is not None
    assert selection.indices.tolist() == lowest_scores(selection.scores, 10).tolist()


def test_lowest_scores_break_ties_by_index() -> None:
    scores = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0])
    assert lowest_scores(scores, 3).tolist() == [1, 3, 0]


def test_selection_invariant_to_candidate_order() -> None:
    candidates, references = separated_references(seed=1)
    spec = Scheme2Spec(blur=0.1, max_iter=4)
    base = Scheme2Selector(spec).select(candidates, 12, context(references))
    permutation = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    permuted = Scheme2Selector(spec).select(candidates[permutation], 12, context(references))
    assert set(permutation[permuted.indices].tolist()) == set(base.indices.tolist())


def test_reuse_starts_from_previous_support() -> None:
    candidates, references = separated_references()
    selector = Scheme2Selector(Scheme2Spec(blur=0.1, max_iter=3, reuse=True))
    shared = context(references)
    first = selector.select(candidates, 10, shared)
    assert first.diagnostics["initial_support"] == "candidates"
    assert shared.state["support"].shape == candidates.shape
    shared.round = 1
    second = selector.select(candidates.flip(0), 10, shared)
    assert second.diagnostics["initial_support"] == "previous round's support"
    # A support already near the barycenter moves less than the candidates did.
    assert (
        second.diagnostics["final_displacement"] <= first.diagnostics["final_displacement"] + 1e-3
    )
    smaller = selector.select(candidates[:30], 5, shared)
    assert smaller.diagnostics["initial_support"].startswith("candidates (previous support")


def test_records_one_solve_per_client_and_step() -> None:
    candidates, references = separated_references()
    selection = Scheme2Selector(Scheme2Spec(blur=0.1, max_iter=3)).select(
        candidates, 10, context(references)
    )
    transport = [r for r in selection.solves if r.purpose.startswith("scheme2 transport map")]
    assert [r.client for r in transport] == [0, 1, 0, 1, 0, 1]
    assert selection.solves[0].purpose == "candidate self-term"
    assert selection.solves[-1].purpose == "scores against barycenter"


def test_inputs_are_not_mutated() -> None:
    candidates, references = separated_references()
    before = (candidates.clone(), [r.clone() for r in references])
    Scheme2Selector(Scheme2Spec(blur=0.1, max_iter=2, weights="size")).select(
        candidates, 10, context(references)
    )
    assert torch.equal(candidates, before[0])
    for reference, saved in zip(references, before[1], strict=True):
        assert torch.equal(reference, saved)


def test_nan_reference_raises_naming_client_and_round() -> None:
    candidates, references = separated_references()
    broken = (references[0].clone(), references[1])
    broken[0][3, 0] = float("nan")
    with pytest.raises(
        NonFiniteError, match=r"scheme2, round 2, client 0: reference features has 1 NaN"
    ):
        Scheme2Selector(Scheme2Spec()).select(candidates, 10, context(broken, round_index=2))


def test_float32_selection_agrees_with_float64() -> None:
    candidates, references = separated_references(seed=2)
    picks = {}
    for dtype in (torch.float32, torch.float64):
        shared = context(references)
        shared.dtype = dtype
        selection = Scheme2Selector(Scheme2Spec(blur=0.1, max_iter=4)).select(
            candidates, 12, shared
        )
        picks[dtype] = set(selection.indices.tolist())
    # float32 potentials agree to ~1e-4 of their range (see test_sinkhorn); the 12th and
    # 13th lowest scores of this problem are further apart than that.
    assert picks[torch.float32] == picks[torch.float64]
