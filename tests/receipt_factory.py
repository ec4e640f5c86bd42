"""A small, valid receipt built by hand, for tests of signing, verification and rendering.

The receipt describes a failed audit: a local Sinkhorn verifier pointed at client 0 loses
the tail modes 2 and 3 over three rounds, while three random-selection seeds and the
collaborative Scheme I baseline keep them. Four modes, three clients, three rounds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selbias_audit.receipt.model import Receipt

TARGET_SHARES = [0.4, 0.3, 0.2, 0.1]
TAIL_MODES = (2, 3)
FAKE_KEY_ID = hashlib.sha256(b"receipt factory key").hexdigest()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _tail_retention(shares: list[float]) -> float:
    kept = sum(min(shares[m], TARGET_SHARES[m]) for m in TAIL_MODES)
    return round(kept / sum(TARGET_SHARES[m] for m in TAIL_MODES), 4)


def _metric(value: float | None, status: str = "ok", detail: str | None = None) -> dict[str, Any]:
    return {"status": status, "value": value, "detail": detail}


def _rounds(pool_shares: list[list[float]], trace: list[float], frechet: list[Any]) -> list[Any]:
    rounds = []
    for index, shares in enumerate(pool_shares):
        fid = frechet[index]
        rounds.append(
            {
                "round": index + 1,
                "tail_retention": _tail_retention(shares),
                "trace_ratio": trace[index],
                "frechet_distance": fid if isinstance(fid, dict) else _metric(fid),
                "sinkhorn_divergence": _metric(round(0.4 * trace[-1] + 0.05 * index, 4)),
                "precision": _metric(round(0.9 - 0.01 * index, 4)),
                "recall": _metric(round(0.8 * trace[index], 4)),
                "density": _metric(round(1.1 - 0.02 * index, 4)),
                "coverage": _metric(round(0.85 * trace[index], 4)),
                "vendi_ratio": _metric(round(trace[index] ** 0.5, 4)),
                "pool_size": 200 + 50 * (index + 1),
                "pool_mode_shares": shares,
                "selected_mode_shares": shares,
            }
        )
    return rounds


def _solves(purpose: str, clients: list[int | None], unconverged: int | None) -> list[Any]:
    solves = []
    for round_index in (1, 2, 3):
        for client in clients:
            converged = not (unconverged == round_index and client in (0, None))
            solves.append(
                {
                    "round": round_index,
                    "purpose": purpose,
                    "client": client,
                    "backend": "geomloss",
                    "dtype": "float32",
                    "blur": 0.05,
                    "epsilon": 0.0025,
                    "iterations": 200 if not converged else 41,
                    "converged": converged,
                    "marginal_error": 3.2e-3 if not converged else 4.1e-6,
                }
            )
    return solves


def _decay(psi: float | None) -> dict[str, Any]:
    if psi is None:
        return {"status": "too_few_rounds", "window": [1, 2, 3]}
    return {"status": "ok", "psi": psi, "stderr": 0.03, "r_squared": 0.97, "window": [1, 2, 3]}


def _run(label: str, method: str, role: str, scope: str, seed: int, **rest: Any) -> dict[str, Any]:
    return {
        "label": label,
        "method": method,
        "role": role,
        "scope": scope,
        "options": rest.pop("options", {}),
        "seed": seed,
        "seconds": rest.pop("seconds", 0.5),
        **rest,
    }


def _runs() -> list[dict[str, Any]]:
    audited = _run(
        "local_sinkhorn[client 0]",
        "local_sinkhorn",
        "audited",
        "local",
        11,
        options={"client": 0, "blur": 0.05},
        rounds=_rounds(
            [[0.45, 0.30, 0.17, 0.08], [0.52, 0.30, 0.12, 0.06], [0.60, 0.30, 0.07, 0.03]],
            [0.91, 0.80, 0.69],
            [1.8, 3.1, 4.6],
        ),
        decay=_decay(0.42),
        solves=_solves("score", [None], unconverged=3),
        seconds=2.25,
    )
    randoms = []
    random_shares = [
        [[0.40, 0.31, 0.20, 0.09], [0.41, 0.30, 0.20, 0.09], [0.41, 0.31, 0.19, 0.09]],
        [[0.39, 0.31, 0.20, 0.10], [0.40, 0.31, 0.19, 0.10], [0.42, 0.30, 0.19, 0.09]],
        [[0.40, 0.30, 0.20, 0.10], [0.42, 0.30, 0.19, 0.09], [0.43, 0.30, 0.18, 0.09]],
    ]
    for index, shares in enumerate(random_shares):
        trace = [round(0.99 - 0.01 * r - 0.005 * index, 4) for r in range(3)]
        randoms.append(
            _run(
                f"random#{index}",
                "random",
                "random",
                "none",
                101 + index,
                rounds=_rounds(shares, trace, [0.4 + 0.1 * index, 0.5, 0.6]),
                decay=_decay(None),
                solves=[],
                seconds=0.01,
            )
        )
    baseline = _run(
        "scheme1",
        "scheme1",
        "baseline",
        "collaborative",
        12,
        options={"weights": "uniform", "blur": 0.05},
        rounds=_rounds(
            [[0.40, 0.30, 0.20, 0.10], [0.41, 0.30, 0.20, 0.09], [0.41, 0.30, 0.20, 0.09]],
            [0.98, 0.97, 0.96],
            [0.5, _metric(None, "non_finite", "covariance product is singular"), 0.7],
        ),
        decay=_decay(0.02),
        solves=_solves("client_potentials", [0, 1, 2], unconverged=None),
        seconds=6.5,
    )
    return [audited, *randoms, baseline]


def _random_band(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    band = []
    for index in range(3):
        values = [run["rounds"][index]["tail_retention"] for run in runs if run["role"] == "random"]
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        band.append(
            {
                "round": index + 1,
                "mean": round(mean, 6),
                "std": round(std, 6),
                "min": min(values),
                "max": max(values),
            }
        )
    return band


def _provided(value: str | None) -> dict[str, Any]:
    if value is None:
        return {"status": "missing", "value": None}
    return {"status": "provided", "value": value}


def _governance() -> dict[str, Any]:
    clients = [
        ([0.70, 0.25, 0.05, 0.00], 0.3),
        ([0.30, 0.30, 0.30, 0.10], 0.1),
        ([0.20, 0.35, 0.25, 0.20], 0.2),
    ]
    return {
        "target_distribution": {
            "source": "sklearn:digits",
            "description": "handwritten digits 0-3, 8x8 pixels",
            "samples": 720,
            "dimension": 16,
            "transform": "standardize, pca: 16",
            "mode_shares": TARGET_SHARES,
        },
        "local_references": [
            {"client": index, "size": 60, "mode_shares": shares, "total_variation": tv}
            for index, (shares, tv) in enumerate(clients)
        ],
        "pooling_restriction": _provided("patient records may not leave each hospital"),
        "candidate_generation": {
            "process": "re-run",
            "generator": "class_gaussian",
            "parameters": {"shrinkage": 0.1},
            "paradigm": "accumulate_subsample",
            "rounds": 3,
            "initial_size": 200,
            "train_size": 200,
        },
        "selection_budget": {"select": 50, "candidates": 200, "ratio": 0.25},
        "scoring_metric": "debiased Sinkhorn potential against client 0's reference",
        "verifier_scope": "local",
        "partition_rule": "dirichlet(alpha=0.3)",
        "client_count": 3,
        "reference_size_per_client": 60,
        "non_iid_severity": {
            "rule": "dirichlet",
            "parameters": {"alpha": 0.3},
            "mean_total_variation": 0.2,
            "max_total_variation": 0.3,
        },
        "random_baseline": {"ran": True, "selectors": ["random#0", "random#1", "random#2"]},
        "local_selection_baseline": {
            "ran": True,
            "selectors": ["local_sinkhorn[client 0]"],
            "note": "the audited selector is itself a local verifier",
        },
        "collaborative_proxy_baseline": {"ran": True, "selectors": ["scheme1"]},
        "compute_environment": {
            "python": "3.11.7",
            "platform": "Linux-6.1-x86_64",
            "torch": "2.5.1",
            "device": "cpu",
            "cpu_count": 2,
            "packages": {"geomloss": "0.2.6", "numpy": "2.1.3", "pot": "0.9.5"},
            "deterministic_algorithms": True,
            "ot_dtype": "float32",
        },
        "code_revision": {
            "tool_version": "0.1.0",
            "tool_revision": "d55da5e",
            "pipeline_revision": _provided(None),
        },
        "artifacts": [
            {"path": "rounds.csv", "sha256": _digest("rounds.csv"), "role": "per-round table"}
        ],
        "licenses": {
            "data": _provided("BSD-3-Clause (scikit-learn digits)"),
            "model": _provided(None),
        },
    }


def _modes() -> dict[str, Any]:
    return {
        "kind": "labels",
        "description": "digit class labels",
        "names": ["digit 0", "digit 1", "digit 2", "digit 3"],
        "tail": [
            {
                "mode": 2,
                "name": "digit 2",
                "target_share": 0.2,
                "reference_share": 0.05,
                "reasons": ["underrepresented_by_verifier"],
            },
            {
                "mode": 3,
                "name": "digit 3",
                "target_share": 0.1,
                "reference_share": 0.0,
                "reasons": ["globally_rare", "underrepresented_by_verifier"],
            },
        ],
        "tail_rule": "rarest modes holding 10% of the target mass, plus modes whose "
        "reference share is below half their global share",
    }


def _metrics() -> list[dict[str, Any]]:
    def define(name: str, description: str, higher: bool, low: Any, high: Any, unit: str):
        return {
            "name": name,
            "description": description,
            "higher_is_better": higher,
            "lower_bound": low,
            "upper_bound": high,
            "unit": unit,
        }

    return [
        define("tail_retention", "tail mass kept, each mode capped at its target share",
               True, 0.0, 1.0, "fraction of target tail mass"),
        {
            **define("trace_ratio", "Tr(Sigma_pool) / Tr(Sigma_target)", True, 0.0, None, "ratio"),
            "ideal": 1.0,
        },
        define("frechet_distance", "Frechet distance of Gaussian fits", False, 0.0, None,
               "squared feature units"),
        define("sinkhorn_divergence", "debiased Sinkhorn divergence to the target", False, 0.0,
               None, "squared feature units"),
        define("precision", "pool points inside target balls", True, 0.0, 1.0, "share"),
        define("recall", "target points inside pool balls", True, 0.0, 1.0, "share"),
        {**define("density", "target balls per pool point / k", True, 0.0, None, "ratio"),
         "ideal": 1.0},
        define("coverage", "target balls holding a pool point", True, 0.0, 1.0, "share"),
        {**define("vendi_ratio", "Vendi score over the target's", True, 0.0, None, "ratio"),
         "ideal": 1.0},
    ]


def base_receipt_data() -> dict[str, Any]:
    """Return the factory receipt as JSON-compatible data, before overrides."""
    runs = _runs()
    return {
        "schema_version": "1",
        "tool": "selbias-audit",
        "run_name": "digits-local-verifier",
        "created_at": "2025-01-02T03:04:05Z",
        "started_at": "2025-01-02T03:03:50Z",
        "audited_selector": "local_sinkhorn[client 0]",
        "verdict": {
            "passed": False,
            "summary": "tail retention of local_sinkhorn[client 0] fell below the random "
            "baseline at rounds 1, 2, 3",
            "checks": [
                {
                    "name": "tail_retention_vs_random",
                    "passed": False,
                    "rule": "tail retention >= random mean - margin at every round "
                    "(margin = random std across seeds)",
                    "detail": "round 3: 0.3333 < 0.9222 - 0.0192 (random mean - margin)",
                    "rounds_failed": [1, 2, 3],
                },
                {
                    "name": "solver_convergence",
                    "passed": True,
                    "rule": "every OT solve converged or is reported",
                    "detail": "1 of 12 solves did not converge (reported, not gated)",
                },
            ],
        },
        "governance": _governance(),
        "modes": _modes(),
        "runs": runs,
        "random_band": _random_band(runs),
        "metrics": _metrics(),
        "seeds": {"run": 7, "streams": {"generator": 1001, "random#0": 101, "scheme1": 12}},
        "run_description": {"path": "run.yaml", "sha256": _digest("run.yaml"), "role": "run"},
        "inputs": [
            {"path": "data/features.npz", "sha256": _digest("features"), "role": "replay"}
        ],
        "counterfactual_note": None,
        "signing_key_id": FAKE_KEY_ID,
        "citations": ["[cuturi2013]", "[feydy2019]"],
    }


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def make_receipt(**overrides: Any) -> Receipt:
    """Build the factory receipt, with ``overrides`` applied, and validate it.

    A key replaces a top-level field. A key with double underscores replaces a nested
    field: ``governance__pooling_restriction={"status": "missing"}``. Values may be
    models or plain data.
    """
    data = base_receipt_data()
    for key, value in overrides.items():
        *parents, leaf = key.split("__")
        node = data
        for part in parents:
            node = node[part]
        if leaf not in node and not parents and leaf not in Receipt.model_fields:
            raise KeyError(f"Receipt has no field {leaf!r}")
        node[leaf] = _plain(value)
    return Receipt.model_validate(data)


def input_overrides(run_description: Path, inputs: list[Path]) -> dict[str, Any]:
    """Return ``make_receipt`` overrides that list real files with their digests."""

    def entry(path: Path, role: str) -> dict[str, Any]:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return {"path": path.name, "sha256": digest, "role": role}

    return {
        "run_description": entry(run_description, "run description"),
        "inputs": [entry(path, "input") for path in inputs],
    }
