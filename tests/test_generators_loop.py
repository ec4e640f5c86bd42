"""Generators and the round loop: refits, labels, and the three paradigms' pool rules."""

from __future__ import annotations

import pytest
import torch

from selbias_audit.generators.gaussian import ClassGaussianGenerator, GaussianGenerator
from selbias_audit.loop import LoopStreams, run_loop
from selbias_audit.selectors.base import SelectionContext
from selbias_audit.selectors.baselines import CenterMatchSelector, RandomSelector
from selbias_audit.spec import CenterMatchSpec, LoopSpec


def _data(n: int = 300, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centers = torch.tensor([[0.0, 0, 0], [5, 0, 0], [0, 5, 0]])[:, :d]
    return centers[labels].double() + torch.randn(n, d, generator=gen, dtype=torch.float64), labels


def test_gaussian_generator_mle_moments() -> None:
    x, _ = _data()
    model = GaussianGenerator(ridge=0.0)
    model.fit(x, None)
    sample, labels = model.sample(200_000, torch.Generator().manual_seed(1))
    assert labels is None
    centred = x - x.mean(0)
    cov = centred.T @ centred / x.shape[0]
    # Monte Carlo error of a mean over 2e5 draws is about 3 sigma / sqrt(2e5) ~ 0.02.
    torch.testing.assert_close(sample.mean(0), x.mean(0), atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(sample.T, correction=0), cov, atol=0.1, rtol=0.03)


def test_class_gaussian_priors_follow_pool() -> None:
    x, labels = _data()
    keep = labels != 2
    model = ClassGaussianGenerator(3)
    model.fit(x[keep], labels[keep])
    _, sampled = model.sample(1000, torch.Generator().manual_seed(0))
    assert sampled is not None
    assert int((sampled == 2).sum()) == 0, "a class absent from the pool came back"
    assert abs(float((sampled == 0).double().mean()) - 0.5) < 0.06


def test_class_gaussian_single_member_class() -> None:
    x, labels = _data()
    x = torch.cat([x, torch.zeros(1, 3, dtype=torch.float64)])
    labels = torch.cat([labels, torch.tensor([3])])
    model = ClassGaussianGenerator(4)
    model.fit(x, labels)
    sample, _ = model.sample(500, torch.Generator().manual_seed(0))
    assert torch.isfinite(sample).all()


def test_generator_sampling_is_seeded() -> None:
    x, labels = _data()
    model = ClassGaussianGenerator(3)
    model.fit(x, labels)
    a = model.sample(50, torch.Generator().manual_seed(4))
    b = model.sample(50, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)


def _run(paradigm: str, selector, rounds: int = 3, train_size: int | None = None):
    x, labels = _data(90)
    spec = LoopSpec(paradigm=paradigm, rounds=rounds, select=20, candidates=80,
                    train_size=train_size)
    refs = (x[labels == 0].float(),)

    def make_context(t: int, rng: torch.Generator) -> SelectionContext:
        return SelectionContext(round=t, references=refs, generator=rng,
                                device=torch.device("cpu"))

    streams = LoopStreams(
        candidates=lambda t: torch.Generator().manual_seed(100 + t),
        subsample=lambda t: torch.Generator().manual_seed(200 + t),
        selection=lambda t: torch.Generator().manual_seed(300 + t),
    )
    return list(run_loop(
        spec=spec, selector=selector, generator=ClassGaussianGenerator(3), initial=x,
        initial_labels=labels, make_context=make_context, streams=streams,
        device=torch.device("cpu"), dtype=torch.float32,
    ))


@pytest.mark.parametrize(
    ("paradigm", "sizes"),
    [("replace", [20, 20, 20]), ("accumulate", [110, 130, 150]),
     ("accumulate_subsample", [110, 130, 150])],
)
def test_pool_sizes_per_paradigm(paradigm: str, sizes: list[int]) -> None:
    records = _run(paradigm, RandomSelector())
    assert [r.pool.shape[0] for r in records] == sizes


def test_accumulate_keeps_real_data_first() -> None:
    x, _ = _data(90)
    records = _run("accumulate", RandomSelector())
    torch.testing.assert_close(records[-1].pool[:90], x, rtol=0, atol=0)


def test_first_round_candidates_shared_across_selectors() -> None:
    a = _run("accumulate", RandomSelector(), rounds=1)
    b = _run("accumulate", CenterMatchSelector(CenterMatchSpec(client=0)), rounds=1)
    torch.testing.assert_close(a[0].candidates, b[0].candidates, rtol=0, atol=0)


def test_center_match_narrows_replace_pool() -> None:
    records = _run("replace", CenterMatchSelector(CenterMatchSpec(client=0)), rounds=3)
    labels = records[-1].pool_labels
    assert labels is not None
    assert float((labels == 0).double().mean()) > 0.9


def test_selector_returning_repeats_rejected() -> None:
    class Repeats:
        name = "repeats"

        def select(self, candidates, count, context):
            from selbias_audit.selectors.base import Selection

            return Selection(indices=torch.zeros(count, dtype=torch.int64))

    with pytest.raises(ValueError, match="repeated indices"):
        _run("replace", Repeats(), rounds=1)
