"""Log-domain Sinkhorn solver against POT, geomloss and its own invariants."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from geomloss import SamplesLoss
from geomloss._legacy.sinkhorn_divergence import epsilon_schedule as geomloss_schedule

from selbias_audit.selectors._conventions import (
    SinkhornSettings,
    blur_from_epsilon,
    epsilon_from_blur,
    epsilon_schedule,
    half_squared_distances,
)
from selbias_audit.selectors.sinkhorn import (
    barycentric_projection,
    debiased_potentials,
    sinkhorn_divergence,
    solve_cross,
    solve_symmetric,
)

# Tight settings for comparisons with converged reference solvers: the solve stops at
# an L1 marginal error of 1e-12, so potentials agree to about eps * 1e-12 / min weight.
TIGHT = SinkhornSettings(blur=0.5, tol=1e-12, final_iter=20_000, symmetric_iter=2_000)


def make_clouds(
    seed: int = 0, n: int = 50, m: int = 40, d: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = torch.randn(m, d, generator=generator, dtype=torch.float64) + 1.0
    return x, y


def centred(values: torch.Tensor) -> torch.Tensor:
    return values - values.mean()


def test_blur_epsilon_round_trip() -> None:
    # Pure float64 arithmetic: one rounding of a power and of a root.
    assert epsilon_from_blur(0.05) == pytest.approx(0.0025, rel=1e-15)
    assert blur_from_epsilon(epsilon_from_blur(0.3)) == pytest.approx(0.3, rel=1e-15)


@pytest.mark.parametrize("diameter", [0.3, 3.0, 45.0, 160.0])
@pytest.mark.parametrize("scaling", [0.5, 0.9])
def test_schedule_matches_geomloss(diameter: float, scaling: float) -> None:
    ours = epsilon_schedule(diameter, 0.05, scaling)
    reference = [float(e) for e in geomloss_schedule(2, diameter, 0.05, scaling)]
    assert len(ours) == len(reference)
    # Both compute exp of the same float64 exponents.
    np.testing.assert_allclose(ours, reference, rtol=1e-12)


def test_cost_is_half_squared_distance() -> None:
    x, y = make_clouds()
    expected = torch.cdist(x, y) ** 2 / 2
    # Two float64 formulas of the same cost on unit-scale points: rounding only.
    torch.testing.assert_close(half_squared_distances(x, y), expected, atol=1e-12, rtol=1e-12)


def test_cross_potentials_match_pot_log_sinkhorn() -> None:
    x, y = make_clouds()
    result = solve_cross(x, y, TIGHT, purpose="test")
    assert result.record.converged
    epsilon = TIGHT.epsilon
    cost = half_squared_distances(x, y).numpy()
    a, b = np.full(x.shape[0], 1 / x.shape[0]), np.full(y.shape[0], 1 / y.shape[0])
    _, log = ot.bregman.sinkhorn_log(
        a, b, cost, reg=epsilon, stopThr=1e-14, numItermax=100_000, log=True
    )
    # POT's scalings u, v give f = eps log u, g = eps log v up to opposite constants.
    f_pot, g_pot = epsilon * log["log_u"], epsilon * log["log_v"]
    # Both solvers stop at marginal errors <= 1e-12; potentials then agree to ~1e-10.
    np.testing.assert_allclose(centred(result.f).numpy(), f_pot - f_pot.mean(), atol=1e-8)
    np.testing.assert_allclose(centred(result.g).numpy(), g_pot - g_pot.mean(), atol=1e-8)


def test_recorded_marginal_error_matches_plan() -> None:
    x, y = make_clouds(seed=1)
    settings = SinkhornSettings(blur=0.2)
    result = solve_cross(x, y, settings, purpose="test")
    epsilon = settings.epsilon
    log_plan = (result.f[:, None] + result.g[None, :] - half_squared_distances(x, y)) / epsilon
    plan = torch.exp(log_plan) / (x.shape[0] * y.shape[0])
    # f is the soft c-transform of g, so rows are exact and the error sits in columns.
    torch.testing.assert_close(
        plan.sum(dim=1), torch.full((50,), 1 / 50, dtype=torch.float64), atol=1e-12, rtol=0
    )
    column_error = float((plan.sum(dim=0) - 1 / 40).abs().sum())
    # The same column sums, computed by the solver's blocked softmax and by a dense
    # exp here: they differ by float64 rounding, far below the recorded error itself.
    assert result.record.marginal_error == pytest.approx(column_error, rel=1e-9, abs=1e-14)


def test_symmetric_potential_matches_pot() -> None:
    x, _ = make_clouds(seed=2)
    result = solve_symmetric(x, TIGHT, purpose="test")
    cost = half_squared_distances(x, x).numpy()
    weights = np.full(x.shape[0], 1 / x.shape[0])
    _, log = ot.bregman.sinkhorn_log(
        weights, weights, cost, reg=TIGHT.epsilon, stopThr=1e-14, numItermax=100_000, log=True
    )
    # The symmetric potential is unique. POT's scalings are u_i = a_i exp(f_i / eps) and
    # may split a constant between u and v, so compare the symmetrised sum minus eps log a.
    symmetric = 0.5 * TIGHT.epsilon * (log["log_u"] + log["log_v"]) - TIGHT.epsilon * np.log(
        weights
    )
    np.testing.assert_allclose(result.f.numpy(), symmetric, atol=1e-8)
    assert result.record.iterations < 100  # the averaged update needs no annealing


def test_debiased_potentials_match_geomloss() -> None:
    x, y = make_clouds(seed=3, n=30, m=25)
    settings = SinkhornSettings(blur=1.0, tol=1e-12, final_iter=20_000)
    potential_x, potential_y, _ = debiased_potentials(x, y, settings)
    loss = SamplesLoss(
        "sinkhorn", p=2, blur=1.0, scaling=0.99, debias=True, potentials=True, backend="tensorized"
    )
    f_geomloss, g_geomloss = loss(x, y)
    # geomloss anneals with one update per level and stops there. At blur 1 and
    # scaling 0.99 it sits 3.4e-3 from the fixed point, which this solver reaches
    # (see the POT test). Potentials are unique up to opposite constants, hence the centring.
    torch.testing.assert_close(
        centred(potential_x), centred(f_geomloss.view(-1)), atol=1e-2, rtol=0
    )
    torch.testing.assert_close(
        centred(potential_y), centred(g_geomloss.view(-1)), atol=1e-2, rtol=0
    )
    value, _ = sinkhorn_divergence(x, y, settings)
    reference = SamplesLoss("sinkhorn", p=2, blur=1.0, scaling=0.99, debias=True)(x, y)
    assert value == pytest.approx(float(reference), rel=1e-3)


def test_debiased_map_matches_geomloss_gradient() -> None:
    x, y = make_clouds(seed=4, n=30, m=25)
    settings = SinkhornSettings(blur=1.0, tol=1e-12, final_iter=20_000, symmetric_iter=2_000)
    cross = solve_cross(x, y, settings, purpose="test", project=True)
    self_term = solve_symmetric(x, settings, purpose="test", project=True)
    ours = cross.projection + x - self_term.projection
    moving = x.clone().requires_grad_(True)
    loss = SamplesLoss("sinkhorn", p=2, blur=1.0, scaling=0.99, debias=True, backend="tensorized")
    (gradient,) = torch.autograd.grad(loss(moving, y), [moving])
    published = x - x.shape[0] * gradient
    # Same 3.4e-3 annealing bias of geomloss as for the potentials, now in positions.
    torch.testing.assert_close(ours, published, atol=2e-2, rtol=0)


def test_barycentric_projection_reuses_potential() -> None:
    x, y = make_clouds(seed=5)
    settings = SinkhornSettings(blur=0.3)
    cross = solve_cross(x, y, settings, purpose="test", project=True)
    again = barycentric_projection(x, y, cross.g, settings)
    # Same potential, same float64 passes: the projections agree to rounding.
    torch.testing.assert_close(again, cross.projection, atol=1e-12, rtol=0)


def test_streamed_costs_equal_cached_costs() -> None:
    x, y = make_clouds(seed=6, n=120, m=80)
    cached = solve_cross(x, y, SinkhornSettings(blur=0.1), purpose="test")
    streamed = solve_cross(x, y, SinkhornSettings(blur=0.1, cache_bytes=0), purpose="test")
    # Identical float64 arithmetic apart from the order of block reductions.
    torch.testing.assert_close(streamed.f, cached.f, atol=1e-10, rtol=0)
    assert streamed.record.iterations == cached.record.iterations


def test_float32_agrees_with_float64() -> None:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(200, 8, generator=generator, dtype=torch.float64)
    y = torch.randn(80, 8, generator=generator, dtype=torch.float64) * 0.7 + 0.5
    results = {}
    for dtype in (torch.float32, torch.float64):
        settings = SinkhornSettings(blur=0.05, dtype=dtype)
        cross = solve_cross(x, y, settings, purpose="test")
        self_term = solve_symmetric(x, settings, purpose="test")
        results[dtype] = centred((cross.f - self_term.f).double())
    spread = float(results[torch.float64].max() - results[torch.float64].min())
    # float32 rounds C / eps (up to ~1e4 here) to ~1e-3, i.e. eps * 1e-3 per update;
    # over the 50-odd annealing levels the potentials drift by at most ~1e-4 of their range.
    torch.testing.assert_close(
        results[torch.float32], results[torch.float64], atol=1e-3 * spread, rtol=0
    )


def test_starved_columns_stay_finite_in_float32() -> None:
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(200, 2, generator=generator)
    # One reference point far from every candidate: its plan column underflows to 0.
    y = torch.cat([torch.randn(50, 2, generator=generator), torch.tensor([[40.0, 40.0]])])
    result = solve_cross(x, y, SinkhornSettings(blur=0.05, dtype=torch.float32), purpose="test")
    assert bool(torch.isfinite(result.f).all())
    assert bool(torch.isfinite(result.g).all())
    assert math.isfinite(result.record.marginal_error)


def test_record_describes_solve() -> None:
    x, y = make_clouds()
    record = solve_cross(x, y, SinkhornSettings(blur=0.05), purpose="unit", client=3).record
    assert record.purpose == "unit"
    assert record.client == 3
    assert record.dtype == "float64"
    assert record.epsilon == pytest.approx(0.0025, rel=1e-15)  # blur ** 2 in float64
    assert record.iterations >= 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_solve_matches_cpu() -> None:
    x, y = make_clouds(seed=9, n=200, m=150)
    settings = SinkhornSettings(blur=0.1)
    on_cpu = solve_cross(x, y, settings, purpose="test", project=True)
    on_gpu = solve_cross(x.cuda(), y.cuda(), settings, purpose="test", project=True)
    # Same float64 algorithm; only the order of GPU reductions differs.
    torch.testing.assert_close(on_gpu.f.cpu(), on_cpu.f, atol=1e-9, rtol=0)
    torch.testing.assert_close(on_gpu.projection.cpu(), on_cpu.projection, atol=1e-9, rtol=0)
    assert on_gpu.record.iterations == on_cpu.record.iterations
