"""Assemble the receipt from an audit's setup, runs and verdict."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from selbias_audit import __version__
from selbias_audit.receipt.model import (
    BaselineStatus,
    CandidateGeneration,
    ClientReference,
    CodeRevision,
    Environment,
    FileDigest,
    Governance,
    Licenses,
    MetricDefinition,
    Modes,
    NonIidSeverity,
    Provided,
    SelectionBudget,
    SelectorRun,
    TailMode,
    TargetDistribution,
)
from selbias_audit.selectors.registry import CITATIONS, SCORING
from selbias_audit.setup import AuditSetup, client_total_variations
from selbias_audit.spec import RunSpec

if TYPE_CHECKING:
    from selbias_audit.replay.setup import ReplayInputs

_PACKAGES = (
    "numpy", "scipy", "scikit-learn", "pot", "geomloss", "pydantic", "cryptography",
    "weasyprint", "matplotlib", "torchmetrics", "rfc8785",
)

METRICS = [
    MetricDefinition(
        name="tail_retention", higher_is_better=True, lower_bound=0.0, upper_bound=1.0,
        unit="share of tail mass",
        description="Sum over tail modes of min(pool share, target share) divided by the "
        "target mass of the tail; 1 keeps the tail intact, 0 means it is gone.",
    ),
    MetricDefinition(
        name="trace_ratio", higher_is_better=True, ideal=1.0, lower_bound=0.0,
        upper_bound=None, unit="ratio",
        description="Covariance trace of the training pool over that of the target; values "
        "far below 1 mean lost diversity, values above 1 a pool more spread than the target.",
    ),
    MetricDefinition(
        name="frechet_distance", higher_is_better=False, lower_bound=0.0, upper_bound=None,
        unit="squared standardised feature units",
        description="Frechet distance between Gaussian fits of the pool and of the target.",
    ),
    MetricDefinition(
        name="sinkhorn_divergence", higher_is_better=False, lower_bound=0.0, upper_bound=None,
        unit="squared standardised feature units",
        description="Debiased Sinkhorn divergence between the pool and the target "
        "(cost |x - y|^2 / 2), the quantity that bounds global risk.",
    ),
    MetricDefinition(
        name="precision", higher_is_better=True, lower_bound=0.0, upper_bound=1.0,
        unit="share of pool points",
        description="Share of pool points inside some target ball; a target point's ball "
        "reaches its 5th nearest target neighbour, boundary included.",
    ),
    MetricDefinition(
        name="recall", higher_is_better=True, lower_bound=0.0, upper_bound=1.0,
        unit="share of target points",
        description="Share of target points inside some pool ball (5th nearest pool "
        "neighbour); a lost mode leaves its target points outside.",
    ),
    MetricDefinition(
        name="density", higher_is_better=True, ideal=1.0, lower_bound=0.0, upper_bound=None,
        unit="balls per point / k",
        description="Target balls around each pool point, averaged and divided by k = 5; "
        "about 1 when the pool follows the target.",
    ),
    MetricDefinition(
        name="coverage", higher_is_better=True, lower_bound=0.0, upper_bound=1.0,
        unit="share of target points",
        description="Share of target points whose own ball contains a pool point; tail "
        "erosion lowers it.",
    ),
    MetricDefinition(
        name="vendi_ratio", higher_is_better=True, ideal=1.0, lower_bound=0.0,
        upper_bound=None, unit="ratio",
        description="Vendi score (exponential of the eigenvalue entropy of the cosine "
        "kernel) of the pool over that of the target.",
    ),
    MetricDefinition(
        name="psi", higher_is_better=False, lower_bound=None, upper_bound=None, unit="exponent",
        description="Decay exponent of the trace ratio, fitted as trace ~ t^-psi by least "
        "squares on log-log over the stated window.",
    ),
]


def provided(value: str | None) -> Provided:
    """Wrap a user-supplied fact, marking it missing when empty."""
    if value is None or not value.strip():
        return Provided(status="missing")
    return Provided(status="provided", value=value)


def missing_governance(spec: RunSpec) -> list[str]:
    """Return the governance fields only the user knows that the run description lacks."""
    g = spec.governance
    fields = {
        "governance.pooling_restriction": g.pooling_restriction,
        "governance.license.data": g.license.data,
        "governance.license.model": g.license.model,
        "governance.pipeline_revision": g.pipeline_revision,
    }
    if spec.replay is not None:
        # A re-run's scoring rule and partition follow from its spec, but a replay's are
        # only the user's statement.
        fields["replay.scoring_metric"] = spec.replay.scoring_metric
        fields["replay.partition"] = spec.replay.partition
    return [name for name, value in fields.items() if value is None or not value.strip()]


def environment(setup: AuditSetup) -> Environment:
    """Describe the machine, the library versions and the numerical settings."""
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    device = str(setup.device)
    if setup.device.type == "cuda":
        device = f"{device} ({torch.cuda.get_device_name(setup.device)})"
    return Environment(
        python=sys.version.split()[0],
        platform=platform.platform(),
        torch=torch.__version__,
        device=device,
        cpu_count=os.cpu_count() or 1,
        packages=packages,
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        ot_dtype=str(setup.dtype).removeprefix("torch."),
    )


def tool_revision() -> str:
    """Return the git commit of this tool, or a note that it was installed from a package."""
    not_checkout = "not a git checkout (installed from a package; see tool_version)"
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return not_checkout
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return not_checkout
    return out.stdout.strip()


def _baseline_status(runs: list[SelectorRun], scope: str, advice: str) -> BaselineStatus:
    labels = [r.label for r in runs if r.scope == scope and r.role != "random"]
    if labels:
        return BaselineStatus(ran=True, selectors=labels)
    return BaselineStatus(ran=False, selectors=[], note=f"not run in this audit; {advice}")


def governance(
    setup: AuditSetup, runs: list[SelectorRun], artifacts: list[FileDigest]
) -> Governance:
    """Fill every governance field of the receipt."""
    spec = setup.spec
    tvs = client_total_variations(setup)
    random_runs = [r.label for r in runs if r.role == "random"]
    references = [
        ClientReference(
            client=k, size=int(reference.shape[0]),
            mode_shares=[float(v) for v in setup.client_shares[k]], total_variation=tvs[k],
        )
        for k, reference in enumerate(setup.references)
    ]
    target = TargetDistribution(
        source=spec.target.source, description=setup.data.description,
        samples=int(setup.target.shape[0]), dimension=int(setup.target.shape[1]),
        transform=setup.transform.description,
        mode_shares=[float(v) for v in setup.target_shares],
    )
    if setup.replay is not None:
        facts = _replay_facts(setup, setup.replay, tvs)
    else:
        facts = _rerun_facts(setup, tvs)
    return Governance(
        target_distribution=target,
        local_references=references,
        pooling_restriction=provided(spec.governance.pooling_restriction),
        **facts,
        verifier_scope=_scope_of(runs),
        random_baseline=BaselineStatus(
            ran=True, selectors=random_runs,
            note=f"{len(random_runs)} seeds; the gate compares against their mean and spread",
        ),
        local_selection_baseline=_baseline_status(
            runs, "local", "add center_match, covmatch or local_sinkhorn to selection.compare"
        ),
        collaborative_proxy_baseline=_baseline_status(
            runs, "collaborative", "add scheme1 or scheme2 to selection.compare"
        ),
        compute_environment=environment(setup),
        code_revision=CodeRevision(
            tool_version=__version__, tool_revision=tool_revision(),
            pipeline_revision=provided(spec.governance.pipeline_revision),
        ),
        artifacts=artifacts,
        licenses=Licenses(
            data=provided(spec.governance.license.data),
            model=provided(spec.governance.license.model),
        ),
    )


def _rerun_facts(setup: AuditSetup, tvs: list[float]) -> dict[str, Any]:
    """Return the governance fields that describe a re-run's loop, selector and partition."""
    spec = setup.spec
    loop = spec.rerun_loop
    partition = spec.references.partition
    params = partition.model_dump(mode="json", exclude={"rule"})
    params = {k: v for k, v in params.items() if v is not None}
    return {
        "candidate_generation": CandidateGeneration(
            process="re-run", generator=spec.generator.kind,
            parameters=spec.generator.model_dump(mode="json", exclude={"kind"}),
            paradigm=loop.paradigm, rounds=loop.rounds,
            initial_size=int(setup.initial.shape[0]),
            train_size=(loop.train_size or int(setup.initial.shape[0]))
            if loop.paradigm == "accumulate_subsample" else None,
        ),
        "selection_budget": SelectionBudget(
            select=loop.select, candidates=loop.candidate_count,
            ratio=loop.select / loop.candidate_count,
        ),
        "scoring_metric": SCORING[spec.audited_selector.method],
        "partition_rule": partition.rule,
        "client_count": spec.references.clients,
        "reference_size_per_client": spec.references.per_client,
        "non_iid_severity": NonIidSeverity(
            rule=partition.rule, parameters=params,
            mean_total_variation=float(sum(tvs) / len(tvs)), max_total_variation=float(max(tvs)),
        ),
    }


def _replay_facts(setup: AuditSetup, inputs: ReplayInputs, tvs: list[float]) -> dict[str, Any]:
    """Return the governance fields that describe the logged pipeline and its references."""
    replay, log = inputs.spec, inputs.log
    manifest = log.manifest
    sizes = [int(reference.shape[0]) for reference in setup.references]
    if replay.partition:
        rule = f"logged: {replay.partition}"
    else:
        rule = "logged (how the references were formed is not stated in replay.partition)"
    kept = sum(r.kept for r in log.rounds)
    candidates = sum(r.candidates for r in log.rounds)
    rounds = len(log.rounds)
    return {
        "candidate_generation": CandidateGeneration(
            process="replay",
            generator=manifest.generator or "not stated in the replay manifest",
            parameters={
                "log": str(log.folder), "format_version": manifest.format_version,
                "description": manifest.description,
            },
            paradigm=inputs.paradigm,  # type: ignore[arg-type]
            rounds=manifest.rounds,
            initial_size=None if log.initial is None else log.initial.rows,
            train_size=None,
        ),
        # Per-round means when the pipeline's n or N varied; the ratio is over all rounds.
        "selection_budget": SelectionBudget(
            select=round(kept / rounds), candidates=round(candidates / rounds),
            ratio=kept / candidates,
        ),
        "scoring_metric": replay.scoring_metric or "not stated (replay.scoring_metric)",
        "partition_rule": rule,
        "client_count": manifest.clients,
        "reference_size_per_client": max(sizes),
        "non_iid_severity": NonIidSeverity(
            rule=rule, parameters={"reference_sizes": sizes},
            mean_total_variation=float(sum(tvs) / len(tvs)), max_total_variation=float(max(tvs)),
        ),
    }


def counterfactual_note(setup: AuditSetup, runs: list[SelectorRun]) -> str | None:
    """Return the receipt's statement of what a replay's baselines mean; None for a re-run."""
    inputs = setup.replay
    if inputs is None:
        return None
    log = inputs.log
    kept = sorted({r.kept for r in log.rounds})
    candidates = sorted({r.candidates for r in log.rounds})
    others = [r.label for r in runs if r.role != "audited"]
    budget = (
        f"{kept[0]} of {candidates[0]} per round"
        if len(kept) == 1 and len(candidates) == 1
        else f"between {kept[0]} and {kept[-1]} of between {candidates[0]} and {candidates[-1]} "
        "candidates per round (the selection budget shows per-round means)"
    )
    initial = (
        f"D_0 ({log.initial.rows} logged rows) plus "
        if log.initial is not None and inputs.paradigm != "replace"
        else ""
    )
    return (
        f"Replay of {log.manifest.rounds} rounds logged by the pipeline in {log.folder}. "
        f"The audited run '{runs[0].label}' is the selection the pipeline logged, measured on "
        f"what it kept ({budget}); its pool after round t is {initial}"
        f"{'the kept batch' if inputs.paradigm == 'replace' else 'every batch kept so far'}. "
        f"The other runs ({', '.join(others)}) are a per-round counterfactual: in each round "
        "each selected from the same logged candidates, kept as many as the pipeline did, and "
        "built its own pool from its own selections. Those candidates were generated from the "
        "pipeline's pool, not the baseline's, so a baseline shows what another selection stage "
        "would have kept from the same candidates, not what a pipeline using it throughout "
        "would have produced. The gate compares the logged selection with random selection on "
        "the same candidate pools."
    )


def _scope_of(runs: list[SelectorRun]) -> str:
    audited = next(r for r in runs if r.role == "audited")
    return audited.scope


def modes_section(setup: AuditSetup) -> Modes:
    """Describe the modes and why each tail mode is in the tail set."""
    tail = [
        TailMode(
            mode=m, name=setup.modes.names[m], target_share=float(setup.target_shares[m]),
            reference_share=None if setup.tail.reference_shares is None
            else float(setup.tail.reference_shares[m]),
            reasons=setup.tail.reasons[m],  # type: ignore[arg-type]
        )
        for m in setup.tail.modes
    ]
    rule = setup.tail.rule
    if setup.verifier_client is not None:
        rule += f" (verifier reference: client {setup.verifier_client})"
    return Modes(
        kind=setup.modes.kind, description=setup.modes.description, names=list(setup.modes.names),
        tail=tail, tail_rule=rule,
    )


def citations(runs: list[SelectorRun]) -> list[str]:
    """Return the references of the selectors that ran, without repeats."""
    keys: list[str] = []
    for run in runs:
        for ref in CITATIONS.get(run.method, []):
            if ref not in keys:
                keys.append(ref)
    return keys
