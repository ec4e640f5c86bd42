"""Gaussian theory mode: construction, the four settings, spec loading and outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from selbias_audit.data.gaussian import gaussian_construction, sample_gaussian
from selbias_audit.errors import RunError, SpecError
from selbias_audit.metrics.gaussian import mle_fit
from selbias_audit.selectors.base import SelectionContext
from selbias_audit.selectors.top_alpha import TopAlphaSelector
from selbias_audit.spec import TopAlphaSpec
from selbias_audit.theory.report import CSV_COLUMNS, trace_ratio_figure, write_theory_outputs
from selbias_audit.theory.run import (
    SettingTrace,
    TheoryProgress,
    TheoryResult,
    run_theory,
    sampling_seed,
)
from selbias_audit.theory.spec import (
    PUBLISHED_SEEDS,
    TheorySpec,
    load_theory_spec,
    resolve_output_dir,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "gaussian-theory.yaml"
SHORT = {"dim": 5, "rounds": 30, "select": 100, "ratio": 0.05, "seeds": [42, 123], "device": "cpu"}


@pytest.fixture(scope="module")
def short_result() -> TheoryResult:
    return run_theory(TheorySpec(**SHORT))


def _setting(result: TheoryResult, name: str) -> SettingTrace:
    return next(trace for trace in result.settings if trace.setting == name)


# ---- construction -------------------------------------------------------------------------


def test_construction_structure() -> None:
    construction = gaussian_construction(10, seed=42)
    assert construction.mu_star.shape == (10,)
    assert construction.sigma_star.shape == (10, 10)
    assert np.linalg.eigvalsh(construction.sigma_star).min() >= 0.1 - 1e-9
    np.testing.assert_array_equal(construction.biased_cov, 0.3 * construction.sigma_star)
    shifted = np.flatnonzero(construction.biased_mean != construction.mu_star)
    assert sorted(shifted.tolist()) == sorted(construction.shifted_coordinates)
    assert len(construction.shifted_coordinates) == 5


def test_construction_is_deterministic_per_seed() -> None:
    first = gaussian_construction(4, seed=7)
    again = gaussian_construction(4, seed=7)
    other = gaussian_construction(4, seed=8)
    np.testing.assert_array_equal(first.sigma_star, again.sigma_star)
    np.testing.assert_array_equal(first.biased_mean, again.biased_mean)
    assert not np.array_equal(first.mu_star, other.mu_star)


def test_construction_accepts_large_seed() -> None:
    construction = gaussian_construction(3, seed=2**40 + 5)
    assert np.isfinite(construction.sigma_star).all()


def test_sample_gaussian_moments() -> None:
    construction = gaussian_construction(3, seed=1)
    mean = torch.as_tensor(construction.mu_star)
    cov = torch.as_tensor(construction.sigma_star)
    samples = sample_gaussian(mean, cov, 100_000, torch.Generator().manual_seed(0))
    fitted_mean, fitted_cov = mle_fit(samples, ridge=0.0)
    assert samples.dtype == torch.float64
    scale = float(torch.diagonal(cov).max())
    torch.testing.assert_close(fitted_mean, mean, rtol=0, atol=0.05 * scale**0.5)
    torch.testing.assert_close(fitted_cov, cov, rtol=0, atol=0.05 * scale)


def test_sample_gaussian_rejects_singular_cov() -> None:
    with pytest.raises(ValueError, match="not positive definite"):
        sample_gaussian(torch.zeros(2), torch.zeros(2, 2), 3, torch.Generator())


# ---- the four settings --------------------------------------------------------------------


def test_selection_collapses_trace_accumulate_keeps_it(short_result: TheoryResult) -> None:
    final = {t.setting: t.trace_ratio[:, -1] for t in short_result.settings}
    for seed_index, seed in enumerate(short_result.seeds):
        accumulate = final["accumulate"][seed_index]
        assert 0.7 < accumulate < 1.4, f"seed {seed}: Accumulate trace ratio {accumulate}"
        assert final["accumulate_select"][seed_index] < 0.5, f"seed {seed}"
        assert final["accumulate_select"][seed_index] < accumulate, f"seed {seed}"
        assert final["replace_select"][seed_index] < 0.01, f"seed {seed}"


def test_accumulate_select_mean_moves_to_biased_target(short_result: TheoryResult) -> None:
    trace = _setting(short_result, "accumulate_select")
    start = trace.biased_mean_error_sq[:, 0]
    end = trace.biased_mean_error_sq[:, -1]
    assert (end < 0.1 * start).all(), f"squared distance to u_b: {start} -> {end}"


def test_accumulate_select_psi_positive(short_result: TheoryResult) -> None:
    trace = _setting(short_result, "accumulate_select")
    for fit in trace.fits:
        assert fit.ok
        assert fit.psi > 0.2
        assert fit.window == (20, 30)


def test_round_zero_is_the_truth(short_result: TheoryResult) -> None:
    for trace in short_result.settings:
        np.testing.assert_allclose(trace.trace_ratio[:, 0], 1.0, rtol=1e-12)
        np.testing.assert_allclose(trace.mean_error_sq[:, 0], 0.0, atol=1e-20)
        # For a Gaussian compared with itself the trace term cancels to round-off, and
        # the square root lifts 1e-14 to 1e-7.
        np.testing.assert_allclose(trace.w2[:, 0], 0.0, atol=1e-5)


def test_common_random_numbers_pair_settings(short_result: TheoryResult) -> None:
    # Replace and Accumulate refit on the same round-1 draws, and so do the two
    # selecting settings, because every setting of a seed reuses one stream.
    pairs = (("replace", "accumulate"), ("replace_select", "accumulate_select"))
    for first, second in pairs:
        a, b = _setting(short_result, first), _setting(short_result, second)
        np.testing.assert_array_equal(a.trace_ratio[:, 1], b.trace_ratio[:, 1])
        assert not np.array_equal(a.trace_ratio[:, 2], b.trace_ratio[:, 2])


def test_seed_result_independent_of_batch(short_result: TheoryResult) -> None:
    alone = run_theory(TheorySpec(**{**SHORT, "seeds": [123]}))
    for trace_alone, trace_batch in zip(alone.settings, short_result.settings):
        np.testing.assert_allclose(
            trace_alone.trace_ratio[0], trace_batch.trace_ratio[1], rtol=1e-9
        )


def test_accumulate_select_matches_plain_loop(short_result: TheoryResult) -> None:
    # Reference loop for one seed: the public sampler and selector, and an MLE refit
    # on the concatenated pool instead of the batched running moments.
    seed = 42
    construction = gaussian_construction(5, seed)
    generator = torch.Generator().manual_seed(sampling_seed(seed))
    target = (torch.as_tensor(construction.biased_mean), torch.as_tensor(construction.biased_cov))
    context = SelectionContext(
        round=0, references=(), generator=generator, device=torch.device("cpu"),
        extras={"biased_target": target},
    )
    selector = TopAlphaSelector(TopAlphaSpec())
    mean = torch.as_tensor(construction.mu_star)
    cov = torch.as_tensor(construction.sigma_star)
    pool = []
    ratios = [1.0]
    for _ in range(SHORT["rounds"]):
        candidates = sample_gaussian(mean, cov, 2000, generator)
        pool.append(candidates[selector.select(candidates, 100, context).indices])
        mean, cov = mle_fit(torch.cat(pool), ridge=1e-6)
        ratios.append(float(torch.trace(cov)) / float(np.trace(construction.sigma_star)))
    batched = _setting(short_result, "accumulate_select").trace_ratio[0]
    np.testing.assert_allclose(batched, ratios, rtol=1e-8)


def test_real_samples_enter_round_zero() -> None:
    result = run_theory(
        TheorySpec(**{**SHORT, "seeds": [42], "real_samples": 200, "settings": ["accumulate"]})
    )
    ratio = result.settings[0].trace_ratio[0]
    assert ratio[0] != 1.0
    assert 0.5 < ratio[0] < 1.5
    assert "42/real-data" in result.stream_seeds


def test_progress_reports_every_round() -> None:
    events: list[TheoryProgress] = []
    spec = TheorySpec(**{**SHORT, "rounds": 6, "seeds": [1], "settings": ["replace", "accumulate"]})
    run_theory(spec, progress=events.append)
    assert len(events) == 12
    assert events[0] == TheoryProgress("replace", 1, 6, 0, 2)
    assert events[-1] == TheoryProgress("accumulate", 6, 6, 1, 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available on this machine")
def test_cuda_request_without_cuda_raises() -> None:
    with pytest.raises(RunError, match="no CUDA device"):
        run_theory(TheorySpec(**{**SHORT, "device": "cuda"}))


# ---- spec loading -------------------------------------------------------------------------


def test_example_has_published_defaults() -> None:
    spec = load_theory_spec(EXAMPLE)
    assert spec == TheorySpec(output=spec.output, fit_window=spec.fit_window)
    assert spec.seeds == PUBLISHED_SEEDS
    assert spec.candidates == 6000
    assert spec.window == (20, 300)
    assert resolve_output_dir(spec, EXAMPLE) == EXAMPLE.parent / "../out/gaussian-theory"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "theory.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dim: 10\nroundz: 5\n", r"roundz: unknown key"),
        ("ratio: 1.5\n", r"ratio: .*received 1\.5"),
        ("seeds: [1, 2, 1]\n", r"seeds: .*these repeat: \[1\].*received \[1, 2, 1\]"),
        ("settings: [replace, keep]\n", r"settings\[1\]: .*received 'keep'"),
        ("rounds: 30\nfit_window: [28, 30]\n", r"fit_window: .*at least 5.*received \[28, 30\]"),
        ("rounds: 30\nfit_window: [1, 31]\n", r"fit_window: .*<= rounds \(30\)"),
        ("ridge: .nan\n", r"ridge: .*received nan"),
        ("- 1\n- 2\n", r"YAML mapping, got list"),
        ("dim: [\n", r"invalid YAML"),
        ("dim: 3\ndim: 4\n", r"duplicate key 'dim'"),
    ],
)
def test_invalid_spec_names_file_field_value(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SpecError, match=expected) as caught:
        load_theory_spec(path)
    assert str(path) in caught.value.message


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_theory_spec(tmp_path / "absent.yaml")


def test_empty_spec_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="theory description is empty"):
        load_theory_spec(_write(tmp_path, ""))


def test_explicit_empty_mapping_gives_defaults(tmp_path: Path) -> None:
    assert load_theory_spec(_write(tmp_path, "{}")) == TheorySpec()


def test_oversized_round_rejected(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="GiB per round"):
        load_theory_spec(_write(tmp_path, "ratio: 1.0e-7\n"))


# ---- outputs ------------------------------------------------------------------------------


def test_outputs_written(short_result: TheoryResult, tmp_path: Path) -> None:
    paths = write_theory_outputs(short_result, tmp_path / "out")
    names = [path.name for path in paths]
    assert names == ["runs.csv", "trace_ratio.png", "trace_ratio.svg", "summary.json", "report.pdf"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)

    lines = paths[0].read_text().splitlines()
    assert lines[0].split(",") == list(CSV_COLUMNS)
    assert len(lines) == 1 + 4 * 2 * 31
    assert lines[1].startswith("42,replace,0,1.0,")

    assert paths[1].read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in paths[2].read_bytes()
    assert paths[4].read_bytes().startswith(b"%PDF")

    summary = json.loads(paths[3].read_text())
    assert summary["checkpoints"] == [10, 30]
    assert summary["band"] == "min-max across seeds"
    psi = summary["settings"]["accumulate_select"]["psi"]
    assert psi["n"] == 2
    assert [run["seed"] for run in psi["per_run"]] == [42, 123]
    assert psi["mean"] == pytest.approx(np.mean([run["psi"] for run in psi["per_run"]]))
    assert psi["mean_curve"]["status"] == "ok"
    assert psi["window"] == [20, 30]
    at_ten = summary["settings"]["accumulate"]["trace_ratio"]["10"]
    trace = _setting(short_result, "accumulate").trace_ratio[:, 10]
    assert at_ten["mean"] == pytest.approx(trace.mean())
    assert at_ten["min"] == pytest.approx(trace.min())


def test_svg_is_reproducible(short_result: TheoryResult) -> None:
    _, first = trace_ratio_figure(short_result)
    _, second = trace_ratio_figure(short_result)
    assert first == second
