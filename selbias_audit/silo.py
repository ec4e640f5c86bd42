"""Per-silo computations of the collaborative schemes.

Every function here is a pure function of the shared candidates (or the shared
barycenter support), ONE silo's own reference and numerical settings. None of them
takes or reads another silo's reference, so a federated executor can run each of them
at its silo and send only the returned arrays to the server. The server-side
combination (normalisation, greedy, averaging of supports) lives in the scheme modules.

What leaves a silo
------------------
* Scheme I: one calibrated score per candidate (:func:`scheme1_scores`).
* Scheme II: the support transported toward the silo's reference
  (:func:`transport_support`). These points are soft convex combinations of the
  silo's reference records, so they reveal more than scores do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from selbias_audit.selectors._conventions import SinkhornSettings
from selbias_audit.selectors.base import SolveRecord
from selbias_audit.selectors.sinkhorn import solve_cross


@dataclass(frozen=True)
class SiloScores:
    """Scores one silo sends to the server."""

    scores: Tensor
    """(N,) calibrated gradient per candidate; negative means adding mass there brings
    the candidates closer to this silo's reference (or its geodesic proxy)."""
    solves: tuple[SolveRecord, ...]


@dataclass(frozen=True)
class SiloTransport:
    """Transported support one silo sends to the server, plus its private warm start."""

    transported: Tensor
    """(N, d) barycentric projection T_k(Z) of the support toward this silo's reference."""
    warm_start: Tensor
    """(M_k,) potential on this silo's reference; it stays at the silo for the next step."""
    solves: tuple[SolveRecord, ...]


def calibrated_gradient(potential: Tensor) -> Tensor:
    """Return ``s_i = N / (N - 1) * (F_i - mean F)``, zeros when N <= 1.

    ``s_i`` is the derivative of the divergence when candidate i gains mass delta and
    every other candidate loses delta / (N - 1), divided by delta.

    Parameters
    ----------
    potential : Tensor, shape (N,)
        Debiased potential F on the candidates.
    """
    count = potential.shape[0]
    if count <= 1:
        return torch.zeros_like(potential)
    return (potential - potential.mean()) * (count / (count - 1))


def scheme1_scores(
    candidates: Tensor,
    reference: Tensor,
    settings: SinkhornSettings,
    *,
    candidate_self_potential: Tensor,
    client: int,
    proxy_t: float | None = None,
) -> SiloScores:
    """Score the shared candidates against this silo's reference (Scheme I).

    The debiased potential of S_eps(candidates, reference) on the candidates is
    ``f_ab - f_aa``. Because ``f_aa`` depends on the candidates only, the server
    computes it once and sends it to every silo.

    With ``proxy_t = t`` the silo scores against the geodesic proxy
    ``mu_t = ((1 - t) Id + t T)#candidates``, where T is the entropic barycentric
    projection toward the reference, and divides the scores by ``t ** 2``: along a
    geodesic ``W_2^2(alpha, mu_t) = t^2 W_2^2(alpha, beta)``.

    Parameters
    ----------
    candidates : Tensor, shape (N, d)
    reference : Tensor, shape (M, d)
        This silo's reference, never sent anywhere.
    settings : SinkhornSettings
    candidate_self_potential : Tensor, shape (N,)
        Potential f_aa of OT_eps(candidates, candidates).
    client : int
        Index of this silo, recorded in the SolveRecords.
    proxy_t : float in (0, 1], optional
    """
    cross = solve_cross(
        candidates,
        reference,
        settings,
        purpose="candidate potentials",
        client=client,
        project=proxy_t is not None,
    )
    if proxy_t is None:
        potential = cross.f - candidate_self_potential
        return SiloScores(scores=calibrated_gradient(potential), solves=(cross.record,))

    assert cross.projection is not None
    # The projection is in the solve dtype; the proxy support is a new point cloud.
    proxy = (1.0 - proxy_t) * candidates.to(cross.projection.dtype) + proxy_t * cross.projection
    to_proxy = solve_cross(
        candidates,
        proxy,
        settings,
        purpose=f"candidate potentials, proxy t={proxy_t}",
        client=client,
    )
    potential = (to_proxy.f - candidate_self_potential) / proxy_t**2
    return SiloScores(scores=calibrated_gradient(potential), solves=(cross.record, to_proxy.record))


def transport_support(
    support: Tensor,
    reference: Tensor,
    settings: SinkhornSettings,
    *,
    client: int,
    step: int,
    warm_start: Tensor | None = None,
    warm_blur: float | None = None,
) -> SiloTransport:
    """Transport the barycenter support toward this silo's reference (Scheme II).

    Solves OT_eps(support, reference) and returns the barycentric projection
    ``T_k(z_i) = sum_j pi_ij y_j / a_i``. The debiasing term of the published map
    ``z - N grad_z S_eps`` depends on the support only and is added by the server.

    Parameters
    ----------
    support : Tensor, shape (N, d)
        Current barycenter support, uniform weights.
    reference : Tensor, shape (M, d)
        This silo's reference.
    settings : SinkhornSettings
    client : int
    step : int
        Barycenter step, recorded in the SolveRecord purpose.
    warm_start : Tensor, shape (M,), optional
        This silo's potential on its reference from the previous step.
    warm_blur : float, optional
        Blur at which annealing resumes from ``warm_start``; the server derives it from
        the support displacement, a quantity of the shared support only.
    """
    cross = solve_cross(
        support,
        reference,
        settings,
        purpose=f"scheme2 transport map, step {step}",
        client=client,
        init_g=warm_start,
        init_blur=warm_blur,
        project=True,
    )
    assert cross.projection is not None
    return SiloTransport(transported=cross.projection, warm_start=cross.g, solves=(cross.record,))


def reference_fingerprint(reference: Tensor) -> tuple[Any, ...]:
    """Return a cheap identity of a reference (shape, dtype, sums), used by a silo to
    decide whether a warm start saved in an earlier round still belongs to it."""
    values = reference.detach().to(torch.float64)
    return (
        tuple(reference.shape),
        str(reference.dtype),
        float(values.sum()),
        float((values * values).sum()),
        float(
            (
                values
                * torch.arange(1, values.shape[0] + 1, dtype=values.dtype, device=values.device)[
                    :, None
                ]
            ).sum()
        ),
    )
