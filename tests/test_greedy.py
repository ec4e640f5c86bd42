"""Lazy greedy against plain greedy and against the brute-force optimum."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selbias_audit.selectors.greedy import lazy_greedy, objective_value, plain_greedy

# Few distinct utility values (with 0 and 1, as clamping and min-max produce) make
# exact ties between candidates common.
TIED_VALUES = st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.0 / 3.0])


@st.composite
def instances(draw: st.DrawFn) -> tuple[np.ndarray, int, list[float] | None]:
    total = draw(st.integers(min_value=1, max_value=12))
    clients = draw(st.integers(min_value=1, max_value=4))
    values = st.one_of(TIED_VALUES, st.floats(min_value=0.0, max_value=1.0))
    utilities = np.array(
        draw(
            st.lists(
                st.lists(values, min_size=clients, max_size=clients), min_size=total, max_size=total
            )
        )
    )
    if draw(st.booleans()):
        # Repeat rows to create candidates with identical gains at every step.
        utilities = np.concatenate([utilities, utilities[: draw(st.integers(0, total))]])
    count = draw(st.integers(min_value=0, max_value=utilities.shape[0]))
    weights = draw(
        st.one_of(
            st.none(),
            st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=clients, max_size=clients),
        )
    )
    return utilities, count, weights


@given(instances())
@settings(max_examples=300, deadline=None)
def test_lazy_equals_plain_greedy(instance: tuple[np.ndarray, int, list[float] | None]) -> None:
    utilities, count, weights = instance
    lazy = lazy_greedy(utilities, count, weights)
    plain = plain_greedy(utilities, count, weights)
    assert lazy.indices.tolist() == plain.indices.tolist()
    assert lazy.gains == plain.gains
    assert lazy.objective == plain.objective


def brute_force_optimum(utilities: np.ndarray, count: int) -> float:
    best = 0.0
    for subset in itertools.combinations(range(utilities.shape[0]), count):
        totals = utilities[list(subset)].sum(axis=0)
        best = max(best, objective_value(totals.tolist(), [1.0] * utilities.shape[1]))
    return best


@pytest.mark.parametrize("seed", range(20))
def test_greedy_reaches_one_minus_one_over_e(seed: int) -> None:
    generator = np.random.default_rng(seed)
    utilities = generator.random((8, 3)) ** 3  # skewed, so that choices matter
    count = int(generator.integers(1, 5))
    optimum = brute_force_optimum(utilities, count)
    achieved = lazy_greedy(utilities, count).objective
    # Nemhauser-Wolsey-Fisher bound for monotone submodular maximisation; the 1e-12
    # allows for the rounding of two sums of at most 8 logarithms.
    assert achieved >= (1 - 1 / math.e) * optimum - 1e-12


def test_ties_go_to_lower_index() -> None:
    utilities = np.ones((5, 2))
    assert lazy_greedy(utilities, 3).indices.tolist() == [0, 1, 2]


def test_lazy_greedy_spreads_across_clients() -> None:
    # Client 0 likes candidates 0-2, client 1 likes 3; the concave utility rewards
    # giving client 1 its candidate after client 0 got one.
    utilities = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.9]])
    assert lazy_greedy(utilities, 2).indices.tolist() == [0, 3]


def test_zero_count_returns_empty_int64() -> None:
    result = lazy_greedy(torch.rand(4, 2), 0)
    assert result.indices.dtype == torch.int64
    assert result.indices.shape == (0,)
    assert result.objective == 0.0


def test_lazy_greedy_evaluates_fewer_gains() -> None:
    utilities = np.random.default_rng(0).random((400, 5))
    lazy = lazy_greedy(utilities, 100)
    plain_evaluations = sum(400 - step for step in range(100))
    assert lazy.evaluations < plain_evaluations / 5


@pytest.mark.parametrize(
    ("utilities", "count", "message"),
    [
        (np.ones(3), 1, "shape"),
        (np.ones((3, 2)), 4, "cannot pick 4 of 3"),
        (np.array([[0.5, np.nan]]), 1, "finite"),
        (np.array([[-0.1, 0.2]]), 1, "non-negative"),
    ],
)
def test_invalid_input_raises(utilities: np.ndarray, count: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lazy_greedy(utilities, count)
