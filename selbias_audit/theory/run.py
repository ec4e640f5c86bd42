"""The four-setting Gaussian collapse experiment, batched over seeds.

Every run starts from the true distribution, (mu_0, Sigma_0) = (mu*, Sigma*), or from
the MLE fit on a real training set D_0 when ``real_samples > 0``. For t = 1..T it draws
from the current fit N(mu_{t-1}, Sigma_{t-1}) and refits by maximum likelihood (sample
mean, divide-by-n covariance plus a ridge):

=====================  ==================================================  ==============
setting                data of round t                                      refit on
=====================  ==================================================  ==============
Replace                n draws                                              those n
Replace + Select       N draws, keep the n closest to the biased target     those n
Accumulate             n draws, appended to the pool                        the whole pool
Accumulate + Select    N draws, keep n as above, append them to the pool    the whole pool
=====================  ==================================================  ==============

"Closest" is the squared Mahalanobis distance to (u_b, Sigma_b), as in
:class:`~selbias_audit.selectors.top_alpha.TopAlphaSelector`.

Common random numbers: within one seed, every setting draws its standard normals from
its own generator, and all of them are seeded with the same value derived from the
seed. So Replace and Accumulate draw identical round-1 samples, and so do the two
selecting settings, and differences between settings are not sampling noise of
separate streams. D_0 comes from a second derived stream and is the same for every
setting. Draws are made on the CPU in float64, so a seed gives the same numbers on
every device.

The seeds are a leading batch dimension: each round does one batched Cholesky
factorisation, one batched scoring and one batched refit for all seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from selbias_audit.data.gaussian import GaussianConstruction, gaussian_construction
from selbias_audit.errors import NonFiniteError, RunError
from selbias_audit.metrics.decay import DecayFit, fit_decay_exponent
from selbias_audit.metrics.gaussian import gaussian_w2, mean_error_squared, mle_fit, sqrtm_psd
from selbias_audit.seeding import derive_seed
from selbias_audit.selectors.top_alpha import lowest_score_indices, mahalanobis_squared
from selbias_audit.theory.spec import SETTING_LABELS, TheorySpec


def sampling_seed(seed: int) -> int:
    """Return the seed of the round draws of run ``seed``, shared by all its settings."""
    return derive_seed(seed, "gaussian-theory", "rounds")


def real_data_seed(seed: int) -> int:
    """Return the seed of the real training set D_0 of run ``seed`` (``real_samples > 0``)."""
    return derive_seed(seed, "gaussian-theory", "real-data")


@dataclass(frozen=True)
class TheoryProgress:
    """Progress event sent after every round of every setting."""

    setting: str
    round: int
    rounds: int
    setting_index: int
    """0-based position of the setting in the run."""
    setting_count: int


@dataclass(frozen=True)
class SettingTrace:
    """Per-round metrics of one setting for every seed. Arrays have shape (seeds, T + 1)."""

    setting: str
    label: str
    trace_ratio: np.ndarray
    """Tr(Sigma_t) / Tr(Sigma*), 1 at round 0 unless a real training set is used."""
    mean_error_sq: np.ndarray
    """||mu_t - mu*||^2."""
    biased_mean_error_sq: np.ndarray
    """||mu_t - u_b||^2, the squared distance of the fitted mean to the biased target."""
    w2: np.ndarray
    """2-Wasserstein distance between N(mu_t, Sigma_t) and N(mu*, Sigma*)."""
    fits: tuple[DecayFit, ...]
    """psi fit of each seed's trace ratio over the fit window."""
    mean_curve_fit: DecayFit
    """psi fit of the arithmetic mean across seeds, the curve the figure draws. Slowly
    decaying runs dominate that mean, so its psi can differ from the mean of per-run psi.
    (The fit of the geometric-mean curve is not reported because least squares is linear
    in log-values, which makes its psi equal to the mean of per-run psi.)"""
    seconds: float
    """Wall time of this setting."""


@dataclass(frozen=True)
class TheoryResult:
    """Everything a theory run measured, in float64 numpy arrays."""

    spec: TheorySpec
    seeds: tuple[int, ...]
    rounds: np.ndarray
    """(T + 1,) round numbers 0..T."""
    candidates: int
    """N, candidates drawn per round by the selecting settings."""
    fit_window: tuple[int, int]
    settings: tuple[SettingTrace, ...]
    constructions: tuple[GaussianConstruction, ...]
    stream_seeds: dict[str, int]
    """Derived seed of every random stream, by name."""
    device: str
    seconds: float
    """Wall time of the whole run."""


ProgressCallback = Callable[[TheoryProgress], None]


@dataclass(frozen=True)
class _Truth:
    """The constructions of all seeds as batched float64 tensors on the run device."""

    mu_star: Tensor  # (S, d)
    sigma_star: Tensor  # (S, d, d)
    sigma_star_sqrt: Tensor  # (S, d, d)
    trace_star: Tensor  # (S,)
    biased_mean: Tensor  # (S, d)
    biased_cholesky: Tensor  # (S, d, d)


class _RunningMoments:
    """Mean and centred scatter matrix of a growing pool, updated batch by batch.

    Adding a batch (count m, mean b, scatter B) to the pool (count c, mean a, scatter
    A) gives the scatter A + B + (b - a)(b - a)^T c m / (c + m). Old samples are never
    revisited, and no sum of squares is formed, so nothing cancels catastrophically
    when the pool's spread is small next to its mean.
    """

    def __init__(self, seeds: int, dim: int, device: torch.device) -> None:
        self.count = 0
        self.mean = torch.zeros(seeds, dim, dtype=torch.float64, device=device)
        self.scatter = torch.zeros(seeds, dim, dim, dtype=torch.float64, device=device)

    def add(self, samples: Tensor) -> None:
        batch = samples.shape[1]
        batch_mean = samples.mean(dim=1)
        centred = samples - batch_mean.unsqueeze(1)
        delta = batch_mean - self.mean
        total = self.count + batch
        self.scatter = (
            self.scatter
            + centred.transpose(1, 2) @ centred
            + delta.unsqueeze(2) * delta.unsqueeze(1) * (self.count * batch / total)
        )
        self.mean = self.mean + delta * (batch / total)
        self.count = total

    def fit(self, ridge: float) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.mean.shape[1], dtype=torch.float64, device=self.mean.device)
        return self.mean, self.scatter / self.count + ridge * eye


def run_theory(spec: TheorySpec, progress: ProgressCallback | None = None) -> TheoryResult:
    """Run every setting of ``spec`` for all seeds and fit psi per run.

    Parameters
    ----------
    spec : TheorySpec
    progress : callable, optional
        Called with a :class:`TheoryProgress` after every round. Library code never
        prints, so a command line shows progress through this callback.

    Returns
    -------
    TheoryResult

    Raises
    ------
    RunError
        When CUDA is requested but unavailable, or a refitted covariance is not
        positive definite.
    NonFiniteError
        When a metric becomes NaN or infinite.
    """
    started = time.perf_counter()
    device = _pick_device(spec.device)
    constructions = tuple(gaussian_construction(spec.dim, seed) for seed in spec.seeds)
    truth = _batch_truth(constructions, device)
    traces = []
    with _cpu_threads(device, 1):
        for index, setting in enumerate(spec.settings):
            traces.append(_run_setting(spec, setting, truth, device, progress, index))

    stream_seeds = {}
    for seed in spec.seeds:
        stream_seeds[f"{seed}/rounds"] = sampling_seed(seed)
        if spec.real_samples > 0:
            stream_seeds[f"{seed}/real-data"] = real_data_seed(seed)
    return TheoryResult(
        spec=spec,
        seeds=tuple(spec.seeds),
        rounds=np.arange(spec.rounds + 1, dtype=np.int64),
        candidates=spec.candidates,
        fit_window=spec.window,
        settings=tuple(traces),
        constructions=constructions,
        stream_seeds=stream_seeds,
        device=str(device),
        seconds=time.perf_counter() - started,
    )


def _pick_device(requested: str) -> torch.device:
    # NOTE: only the CPU path has been run. On CUDA the draws stay identical (they are
    # made on the CPU), but the batched linear algebra may round differently.
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        raise RunError(
            "device 'cuda' was requested but PyTorch finds no CUDA device",
            hint="set device: auto or device: cpu in the theory description",
        )
    return torch.device("cpu")


@contextmanager
def _cpu_threads(device: torch.device, threads: int) -> Iterator[None]:
    """Use ``threads`` intra-op threads on the CPU for the duration, then restore.

    Each round's tensors are small (seeds x N x d, about 6e5 numbers by default), so
    splitting an operation across threads costs more in synchronisation than it saves.
    On a shared 2-core CPU the default run took 160 s with 2 threads and 12 s with 1.

    NOTE: the thread count is process-wide, so other threads that use torch during
    the run are limited to it too.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _batch_truth(constructions: tuple[GaussianConstruction, ...], device: torch.device) -> _Truth:
    def stack(name: str) -> Tensor:
        arrays = [getattr(c, name) for c in constructions]
        return torch.as_tensor(np.stack(arrays), dtype=torch.float64, device=device)

    sigma_star = stack("sigma_star")
    return _Truth(
        mu_star=stack("mu_star"),
        sigma_star=sigma_star,
        sigma_star_sqrt=sqrtm_psd(sigma_star),
        trace_star=torch.diagonal(sigma_star, dim1=-2, dim2=-1).sum(dim=-1),
        biased_mean=stack("biased_mean"),
        biased_cholesky=torch.linalg.cholesky(stack("biased_cov")),
    )


def _run_setting(
    spec: TheorySpec,
    setting: str,
    truth: _Truth,
    device: torch.device,
    progress: ProgressCallback | None,
    index: int,
) -> SettingTrace:
    started = time.perf_counter()
    label = SETTING_LABELS[setting]
    selects = setting.endswith("_select")
    accumulates = setting.startswith("accumulate")
    seeds, dim = truth.mu_star.shape
    draw_count = spec.candidates if selects else spec.select
    generators = [torch.Generator().manual_seed(sampling_seed(s)) for s in spec.seeds]
    pool = _RunningMoments(seeds, dim, device) if accumulates else None

    mean, cov = truth.mu_star, truth.sigma_star
    if spec.real_samples > 0:
        real_generators = [torch.Generator().manual_seed(real_data_seed(s)) for s in spec.seeds]
        real_cholesky = torch.linalg.cholesky(truth.sigma_star)
        real = _draw(truth.mu_star, real_cholesky, real_generators, spec.real_samples)
        mean, cov = mle_fit(real, spec.ridge)
        if pool is not None:
            pool.add(real)

    metrics = torch.empty(4, seeds, spec.rounds + 1, dtype=torch.float64, device=device)
    _record(metrics, 0, mean, cov, truth, label, spec.seeds)
    for round_index in range(1, spec.rounds + 1):
        cholesky = _cholesky(cov, f"{label}, round {round_index}", spec.seeds)
        samples = _draw(mean, cholesky, generators, draw_count)
        if selects:
            # Top-alpha selection: keep the n lowest squared Mahalanobis distances to u_b.
            scores = mahalanobis_squared(samples, truth.biased_mean, truth.biased_cholesky)
            kept_indices = lowest_score_indices(scores, spec.select)
            samples = samples.gather(1, kept_indices.unsqueeze(-1).expand(-1, -1, dim))
        if pool is not None:
            pool.add(samples)
            mean, cov = pool.fit(spec.ridge)
        else:
            mean, cov = mle_fit(samples, spec.ridge)
        _record(metrics, round_index, mean, cov, truth, label, spec.seeds)
        if progress is not None:
            progress(TheoryProgress(setting, round_index, spec.rounds, index, len(spec.settings)))

    values = metrics.cpu().numpy()
    _check_finite(values, label, spec.seeds)
    rounds = np.arange(spec.rounds + 1)
    window = spec.window
    fits = tuple(fit_decay_exponent(rounds, row, window) for row in values[0])
    return SettingTrace(
        setting=setting,
        label=label,
        trace_ratio=values[0],
        mean_error_sq=values[1],
        biased_mean_error_sq=values[2],
        w2=values[3],
        fits=fits,
        mean_curve_fit=fit_decay_exponent(rounds, values[0].mean(axis=0), window),
        seconds=time.perf_counter() - started,
    )


def _draw(
    mean: Tensor, cholesky: Tensor, generators: list[torch.Generator], count: int
) -> Tensor:
    """Draw ``count`` samples of N(mean[s], L[s] L[s]^T) per seed s, shape (S, count, d).

    Seed s uses ``generators[s]`` on the CPU, so its draws do not depend on the device
    or on the other seeds in the batch.
    """
    dim = mean.shape[-1]
    # NOTE: a round holds seeds x count x d float64 values at once, and nothing checks
    # that a very small ratio (a very large N) fits in memory.
    normals = torch.stack(
        [torch.randn(count, dim, generator=g, dtype=torch.float64) for g in generators]
    ).to(mean.device)
    return mean.unsqueeze(1) + normals @ cholesky.transpose(1, 2)


def _cholesky(cov: Tensor, where: str, seeds: list[int]) -> Tensor:
    """Return the batched Cholesky factor, or raise RunError naming the failing seeds."""
    cholesky, info = torch.linalg.cholesky_ex(cov)
    failed = [seeds[i] for i in torch.nonzero(info).flatten().tolist()]
    if failed:
        raise RunError(
            f"{where}: the refitted covariance of seed(s) {failed} is not positive definite",
            hint="raise ridge in the theory description",
        )
    return cholesky


def _record(
    metrics: Tensor,
    round_index: int,
    mean: Tensor,
    cov: Tensor,
    truth: _Truth,
    label: str,
    seeds: list[int],
) -> None:
    finite = torch.isfinite(mean).all(dim=-1) & torch.isfinite(cov).flatten(1).all(dim=-1)
    if not bool(finite.all()):
        bad = [seeds[i] for i in torch.nonzero(~finite).flatten().tolist()]
        raise NonFiniteError(
            f"{label}, round {round_index}: the refit of seed(s) {bad} is not finite"
        )
    trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(dim=-1)
    metrics[0, :, round_index] = trace / truth.trace_star
    metrics[1, :, round_index] = mean_error_squared(mean, truth.mu_star)
    metrics[2, :, round_index] = mean_error_squared(mean, truth.biased_mean)
    metrics[3, :, round_index] = gaussian_w2(
        truth.mu_star, truth.sigma_star, mean, cov, cov_a_sqrt=truth.sigma_star_sqrt
    )


def _check_finite(values: np.ndarray, label: str, seeds: list[int]) -> None:
    """Raise NonFiniteError naming the first metric, seed and round that is not finite."""
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        metric, seed_index, round_index = (int(i) for i in bad[0])
        name = ("trace ratio", "mean error", "biased mean error", "W2")[metric]
        raise NonFiniteError(
            f"{label}: {name} of seed {seeds[seed_index]} is not finite at round {round_index}"
        )
