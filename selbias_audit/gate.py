"""The gate: does the audited selector keep less of the tail than random selection?"""

from __future__ import annotations

import numpy as np

from selbias_audit.receipt.model import Band, GateCheck, SelectorRun, Verdict
from selbias_audit.spec import GateSpec

# Tail retentions are shares in [0, 1]; differences below this are rounding, not erosion.
TOLERANCE = 1e-9


def random_band(randoms: list[SelectorRun]) -> list[Band]:
    """Return per round the mean, sample standard deviation, min and max across seeds."""
    if not randoms:
        return []
    table = np.array([[r.tail_retention for r in run.rounds] for run in randoms])
    std = table.std(axis=0, ddof=1) if table.shape[0] > 1 else np.zeros(table.shape[1])
    return [
        Band(
            round=i + 1, mean=float(table[:, i].mean()), std=float(std[i]),
            min=float(table[:, i].min()), max=float(table[:, i].max()),
        )
        for i in range(table.shape[1])
    ]


def _gated_rounds(spec: GateSpec, total: int) -> list[int]:
    if spec.rounds == "all":
        return list(range(1, total + 1))
    if spec.rounds == "last":
        return [total]
    return sorted({r for r in spec.rounds if r <= total})


def _tail_check(spec: GateSpec, audited: SelectorRun, band: list[Band]) -> GateCheck:
    total = len(audited.rounds)
    rounds = _gated_rounds(spec, total)
    failed: list[int] = []
    worst = ""
    worst_gap = -np.inf
    for t in rounds:
        kept = audited.rounds[t - 1].tail_retention
        ref = band[t - 1]
        margin = ref.std if spec.margin == "auto" else float(spec.margin)
        gap = (ref.mean - margin) - kept
        if gap > TOLERANCE:
            failed.append(t)
        if gap > worst_gap:
            worst_gap = gap
            worst = (
                f"round {t}: audited {kept:.3f} vs random {ref.mean:.3f} "
                f"(margin {margin:.3f}, threshold {ref.mean - margin:.3f})"
            )
    margin_text = "the random baseline's standard deviation across seeds" if spec.margin == "auto" else f"{spec.margin}"
    which = {"all": "at every round", "last": "at the last round"}.get(
        str(spec.rounds), f"at rounds {rounds}"
    )
    rule = (
        f"tail retention of the audited selector must not fall below the random baseline's "
        f"mean minus a margin ({margin_text}) {which}"
    )
    gated = "1 gated round" if len(rounds) == 1 else f"{len(rounds)} gated rounds"
    if failed:
        detail = f"below random at {len(failed)} of {gated}; worst {worst}"
    elif len(rounds) == 1:
        detail = f"at or above random at the only gated round; closest {worst}"
    else:
        detail = f"at or above random at all {gated}; closest {worst}"
    return GateCheck(
        name="tail_retention_vs_random", passed=not failed, rule=rule, detail=detail,
        rounds_failed=failed,
    )


def evaluate_gate(
    spec: GateSpec,
    audited: SelectorRun,
    band: list[Band],
    missing_governance: list[str],
) -> Verdict:
    """Apply every rule of the gate policy and return the verdict."""
    checks = [_tail_check(spec, audited, band)]
    if spec.max_frechet is not None:
        final = audited.rounds[-1].frechet_distance
        ok = final.status == "ok" and final.value is not None and final.value <= spec.max_frechet
        shown = f"{final.value:.3f}" if final.value is not None else final.status
        checks.append(GateCheck(
            name="max_frechet", passed=ok,
            rule=f"final-round Frechet distance to the target at most {spec.max_frechet}",
            detail=f"final Frechet distance {shown}",
        ))
    if spec.require_governance:
        checks.append(GateCheck(
            name="governance_complete", passed=not missing_governance,
            rule="every governance field that only the user knows is provided",
            detail="missing: " + ", ".join(missing_governance) if missing_governance else "all provided",
        ))
    if spec.fail_on_nonconvergence:
        bad = [s for s in audited.solves if not s.converged]
        checks.append(GateCheck(
            name="solver_convergence", passed=not bad,
            rule="every OT solve of the audited selector converged",
            detail=f"{len(bad)} of {len(audited.solves)} solves did not converge",
            rounds_failed=sorted({s.round for s in bad}),
        ))
    passed = all(c.passed for c in checks)
    failed_names = [c.name for c in checks if not c.passed]
    summary = (
        f"PASS: {audited.label} keeps the tail at least as well as random selection"
        if passed
        else f"FAIL: {audited.label} fails {', '.join(failed_names)}"
    )
    return Verdict(passed=passed, summary=summary, checks=checks)
