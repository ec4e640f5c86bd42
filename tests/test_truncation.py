"""Truncated kernels: sweeps over the kept entries agree with full sweeps to rounding."""

from __future__ import annotations

import torch

from selbias_audit.selectors._conventions import SinkhornSettings
from selbias_audit.selectors._kernels import CostBlocks, apply_plan, softmax_pass
from selbias_audit.selectors._truncated import KernelBuilder, safe_logit_gap
from selbias_audit.selectors.sinkhorn import solve_cross, solve_symmetric


def spread_clouds(
    dtype: torch.dtype, seed: int = 0, n: int = 300, m: int = 200, d: int = 6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two clouds whose points lie far apart relative to a blur of 0.05, so that the
    plan's rows concentrate on a few columns well before the last annealing level."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = torch.randn(m, d, generator=generator, dtype=torch.float64) * 0.8 + 0.3
    return x.to(dtype), y.to(dtype)


def concentrated_kernel(dtype: torch.dtype, scale: float = 1.0):
    """Return the costs, a potential, an epsilon and the kernel a dense pass builds there.

    The potential is the solved one at blur 0.05; the pass runs at ``scale`` times the
    final epsilon, where a larger scale keeps more entries per row.
    """
    x, y = spread_clouds(dtype)
    settings = SinkhornSettings(blur=0.05, dtype=dtype, truncate=False)
    solved = solve_cross(x, y, settings, purpose="test")
    costs = CostBlocks(x, y, dtype, settings.cache_bytes)
    epsilon = settings.epsilon * scale
    phi = solved.g + epsilon * torch.log(torch.full_like(solved.g, 1 / y.shape[0]))
    builder = KernelBuilder(x.shape[0], y.shape[0], dtype, phi, epsilon)
    anchors = torch.zeros(x.shape[0], dtype=torch.int64)
    weights = torch.full((x.shape[0],), 1 / x.shape[0], dtype=dtype)
    dense = softmax_pass(
        costs, phi / epsilon, epsilon, row_weights=weights, anchors=anchors, builder=builder
    )
    kernel = builder.finish(anchors)
    assert kernel is not None
    return costs, phi, epsilon, kernel, dense, weights


def test_truncated_sweep_equals_dense_pass() -> None:
    _, phi, epsilon, kernel, (lse, mass, _), weights = concentrated_kernel(torch.float64)
    assert kernel.width < 0.125 * phi.shape[0]
    truncated_lse, truncated_mass, _ = kernel.sweep(phi, epsilon, weights)
    # Dropped entries sit exp(-80) below their row maximum: invisible in float64.
    torch.testing.assert_close(truncated_lse, lse, atol=1e-12, rtol=0)
    torch.testing.assert_close(truncated_mass, mass, atol=1e-15, rtol=1e-12)


def test_bound_fails_once_the_potential_drifts() -> None:
    _, phi, epsilon, kernel, _, _ = concentrated_kernel(torch.float64)
    assert kernel.covers(phi, epsilon)
    drifted = phi.clone()
    # A column raised by the whole reach could now dominate rows that dropped it.
    drifted[3] += kernel.bounds[0].reach
    assert not kernel.covers(drifted, epsilon)
    # A smaller epsilon tightens nothing: the gap in logit units only grows.
    assert kernel.covers(phi, epsilon / 4)


def test_narrowed_kernel_keeps_earlier_bounds() -> None:
    # Built at three times the final epsilon, the kernel is wider than the final plan needs.
    _, phi, epsilon, kernel, _, weights = concentrated_kernel(torch.float32, scale=3.0)
    final = epsilon / 3
    logits = kernel.logits(phi, final)
    lse = torch.logsumexp(logits, dim=1)
    narrow = kernel.narrowed(logits, lse, phi, final)
    assert narrow.width <= kernel.width // 2
    assert len(narrow.bounds) == len(kernel.bounds) + 1
    assert narrow.covers(phi, final)
    wide_lse, wide_mass, _ = kernel.sweep(phi, final, weights)
    narrow_lse, narrow_mass, _ = narrow.sweep(phi, final, weights)
    # The narrow kernel dropped entries exp(-40) below their row maximum.
    torch.testing.assert_close(narrow_lse, wide_lse, atol=0, rtol=1e-6)
    torch.testing.assert_close(narrow_mass, wide_mass, atol=1e-12, rtol=1e-5)


def test_truncated_solve_matches_full_sweeps_float64() -> None:
    x, y = spread_clouds(torch.float64)
    full = solve_cross(
        x, y, SinkhornSettings(blur=0.05, truncate=False), purpose="test", project=True
    )
    fast = solve_cross(
        x, y, SinkhornSettings(blur=0.05, truncate_from=0), purpose="test", project=True
    )
    assert fast.truncated_sweeps > 0
    assert full.truncated_sweeps == 0
    assert fast.record.iterations == full.record.iterations
    assert "truncated" in fast.record.backend
    torch.testing.assert_close(fast.f, full.f, atol=1e-10, rtol=0)
    torch.testing.assert_close(fast.g, full.g, atol=1e-10, rtol=0)
    torch.testing.assert_close(fast.projection, full.projection, atol=1e-9, rtol=0)


def test_truncated_solve_matches_full_sweeps_float32() -> None:
    x, y = spread_clouds(torch.float32, seed=1)
    settings = {"blur": 0.05, "dtype": torch.float32, "truncate_from": 0}
    full = solve_cross(x, y, SinkhornSettings(truncate=False, **settings), purpose="test")
    fast = solve_cross(x, y, SinkhornSettings(**settings), purpose="test")
    assert fast.truncated_sweeps > 0
    spread = float(full.f.max() - full.f.min())
    # Both round C / eps (about 1e4 here) at float32 precision, in a different order.
    torch.testing.assert_close(fast.f, full.f, atol=1e-5 * spread, rtol=0)


def test_safe_gap_is_below_rounding() -> None:
    for dtype in (torch.float32, torch.float64):
        gap = torch.tensor(-safe_logit_gap(dtype), dtype=torch.float64).exp()
        assert float(gap) < torch.finfo(dtype).eps * 1e-9


def test_sparse_plan_product_equals_dense_product() -> None:
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(64, 500, generator=generator, dtype=torch.float64) * 40
    plan = torch.softmax(logits, dim=1)
    values = torch.randn(500, 3, generator=generator, dtype=torch.float64)
    out = torch.empty(64, 3, dtype=torch.float64)
    apply_plan(plan, values, out=out)
    # Entries below 1e-30 are skipped: rows move by at most 500 * 1e-30 * max|values|.
    torch.testing.assert_close(out, plan @ values, atol=1e-25, rtol=1e-12)


def test_warm_symmetric_projection_equals_cold_projection() -> None:
    x, _ = spread_clouds(torch.float64, n=200)
    settings = SinkhornSettings(blur=0.05, tol=1e-9)
    cold = solve_symmetric(x, settings, purpose="test", project=True)
    warm = solve_symmetric(x, settings, purpose="test", init_f=cold.f, project=True)
    # The warm pass starts at the converged potential, converges at once and hands
    # back the projection it computed on the way, from the streamed costs.
    assert warm.record.iterations == 1
    torch.testing.assert_close(warm.projection, cold.projection, atol=1e-9, rtol=0)


def test_small_solve_skips_truncation() -> None:
    x, y = spread_clouds(torch.float64)
    small = solve_cross(x, y, SinkhornSettings(blur=0.05), purpose="test")
    assert x.shape[0] * y.shape[0] < SinkhornSettings().truncate_from
    assert small.truncated_sweeps == 0
    assert "truncated" not in small.record.backend
