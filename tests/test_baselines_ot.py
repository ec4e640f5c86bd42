"""Local Sinkhorn verifier, k-means and covariance-matching baselines."""

from __future__ import annotations

import pytest
import torch

from selbias_audit.errors import NonFiniteError
from selbias_audit.selectors.base import SelectionContext
from selbias_audit.selectors.covmatch import CovMatchSelector, fit_pca
from selbias_audit.selectors.kmeans import KMeansSelector
from selbias_audit.selectors.local import LocalSinkhornSelector
from selbias_audit.spec import CovMatchSpec, KMeansSpec, LocalSinkhornSpec


def blobs(seed: int = 0, per_blob: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    labels = torch.arange(4 * per_blob) % 4
    return centres[labels] + 0.3 * torch.randn(4 * per_blob, 2, generator=generator), labels


def context(
    references: tuple[torch.Tensor, ...], seed: int = 0, round_index: int = 0
) -> SelectionContext:
    return SelectionContext(
        round=round_index,
        references=references,
        generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        dtype=torch.float64,
    )


# ---------------------------------------------------------------- local Sinkhorn verifier


def test_local_verifier_keeps_its_clients_mode() -> None:
    candidates, labels = blobs()
    generator = torch.Generator().manual_seed(1)
    references = (
        torch.randn(30, 2, generator=generator),
        torch.randn(30, 2, generator=generator) + 10.0,
    )
    selection = LocalSinkhornSelector(LocalSinkhornSpec(client=1)).select(
        candidates, 15, context(references)
    )
    # Client 1's reference sits on blob (10, 10), label 3: a local verifier keeps only it.
    assert set(labels[selection.indices].tolist()) == {3}
    assert selection.scores is not None
    assert selection.scores.shape == (80,)
    assert [record.client for record in selection.solves] == [None, 1]


def test_local_verifier_rejects_missing_client() -> None:
    candidates, _ = blobs()
    with pytest.raises(ValueError, match="client 2 does not exist"):
        LocalSinkhornSelector(LocalSinkhornSpec(client=2)).select(
            candidates, 5, context((candidates[:5],))
        )


def test_local_verifier_nan_raises() -> None:
    candidates, _ = blobs()
    reference = candidates[:10].clone()
    reference[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"local_sinkhorn, round 5, client 0"):
        LocalSinkhornSelector(LocalSinkhornSpec()).select(
            candidates, 5, context((reference,), round_index=5)
        )


# ---------------------------------------------------------------------------- k-means


def test_kmeans_keeps_one_per_blob() -> None:
    candidates, labels = blobs()
    selection = KMeansSelector(KMeansSpec()).select(candidates, 4, context(()))
    assert sorted(labels[selection.indices].tolist()) == [0, 1, 2, 3]
    assert selection.diagnostics["empty_clusters"] == 0


def test_kmeans_is_seeded_by_context_generator() -> None:
    candidates, _ = blobs()
    first = KMeansSelector(KMeansSpec()).select(candidates, 12, context((), seed=3))
    second = KMeansSelector(KMeansSpec()).select(candidates, 12, context((), seed=3))
    assert first.indices.tolist() == second.indices.tolist()
    assert len(set(first.indices.tolist())) == 12


def test_kmeans_with_duplicates_returns_distinct_indices() -> None:
    candidates = torch.zeros(10, 3)
    candidates[5:] = 1.0
    selection = KMeansSelector(KMeansSpec()).select(candidates, 6, context(()))
    assert len(set(selection.indices.tolist())) == 6


def test_kmeans_nan_raises() -> None:
    candidates, _ = blobs()
    candidates[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="kmeans, round 0"):
        KMeansSelector(KMeansSpec()).select(candidates, 4, context(()))


# ------------------------------------------------------------------ covariance matching


def test_pca_variances_match_reference_covariance() -> None:
    reference = torch.randn(200, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    mean, basis, variances = fit_pca(reference, 3)
    projected = (reference - mean) @ basis
    # Projected coordinates are uncorrelated, with the PCA variances (denominator M - 1).
    # The SVD and the covariance are float64, so they agree to rounding (~1e-13 here).
    torch.testing.assert_close(torch.cov(projected.T), torch.diag(variances), atol=1e-10, rtol=0)


def test_covmatch_distance_uses_stable_running_sums() -> None:
    generator = torch.Generator().manual_seed(4)
    # A large common offset breaks the one-pass sum x x^T / n - m m^T in float32.
    offset = 1e6
    candidates = torch.randn(120, 3, generator=generator, dtype=torch.float64) * 2.0 + offset
    reference = torch.randn(80, 3, generator=generator, dtype=torch.float64) + offset
    selection = CovMatchSelector(CovMatchSpec(pca=3)).select(candidates, 30, context((reference,)))
    mean, basis, variances = fit_pca(reference, 3)
    kept = (candidates[selection.indices] - mean) @ basis
    direct = torch.linalg.matrix_norm(torch.cov(kept.T) - torch.diag(variances))
    # Welford sums in float64 agree with a two-pass covariance to rounding of 1e-9
    # relative to the offset-free scale.
    assert selection.diagnostics["frobenius_distance"] == pytest.approx(float(direct), abs=1e-6)


def test_covmatch_beats_random_subset() -> None:
    generator = torch.Generator().manual_seed(5)
    candidates = torch.randn(200, 4, generator=generator, dtype=torch.float64) * 3.0
    reference = torch.randn(100, 4, generator=generator, dtype=torch.float64)
    selection = CovMatchSelector(CovMatchSpec(pca=4)).select(candidates, 40, context((reference,)))
    mean, basis, variances = fit_pca(reference, 4)
    random_kept = (candidates[:40] - mean) @ basis
    random_distance = torch.linalg.matrix_norm(torch.cov(random_kept.T) - torch.diag(variances))
    assert selection.diagnostics["frobenius_distance"] < 0.5 * float(random_distance)


def test_covmatch_does_not_mutate_inputs() -> None:
    candidates, _ = blobs()
    reference = candidates[:20].clone() + 1.0
    saved = (candidates.clone(), reference.clone())
    selection = CovMatchSelector(CovMatchSpec(pca=2)).select(candidates, 10, context((reference,)))
    assert torch.equal(candidates, saved[0])
    assert torch.equal(reference, saved[1])
    assert len(set(selection.indices.tolist())) == 10


def test_covmatch_needs_two_reference_rows() -> None:
    candidates, _ = blobs()
    with pytest.raises(ValueError, match="a covariance needs at least 2"):
        CovMatchSelector(CovMatchSpec()).select(candidates, 5, context((candidates[:1],)))
