"""The audit from run description to signed outputs."""

from __future__ import annotations

import csv
import os
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from selbias_audit.assemble import (
    METRICS,
    citations,
    counterfactual_note,
    governance,
    missing_governance,
    modes_section,
)
from selbias_audit.audit import plan_runs, run_selector
from selbias_audit.errors import EXIT_GATE_FAILED, EXIT_PASS, SpecError
from selbias_audit.gate import evaluate_gate, random_band
from selbias_audit.io import atomic_write_bytes
from selbias_audit.receipt.model import (
    SAMPLE_METRICS,
    FileDigest,
    MetricValue,
    Receipt,
    SelectorRun,
    Seeds,
)
from selbias_audit.setup import AuditSetup, prepare
from selbias_audit.spec import RunSpec, load_spec, sha256_hex


@dataclass(frozen=True)
class AuditResult:
    """Outputs of one audit: the receipt, the files written and the exit code."""

    receipt: Receipt
    out_dir: Path
    files: list[Path]
    exit_code: int
    key_path: Path
    key_created: bool


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _csv_value(metric: MetricValue | None) -> str:
    """Return a metric's value for rounds.csv, empty when it has none."""
    return "" if metric is None or metric.value is None else f"{metric.value:.6g}"


def rounds_csv(runs: list[SelectorRun]) -> bytes:
    """Return a CSV of every selector run's per-round metrics."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([
        "selector", "role", "seed", "round", "tail_retention", "trace_ratio",
        "frechet_distance", "sinkhorn_divergence", *SAMPLE_METRICS, "pool_size",
    ])
    for run in runs:
        for r in run.rounds:
            writer.writerow([
                run.label, run.role, run.seed, r.round, f"{r.tail_retention:.6g}",
                f"{r.trace_ratio:.6g}",
                _csv_value(r.frechet_distance),
                _csv_value(r.sinkhorn_divergence),
                *(_csv_value(getattr(r, name)) for name in SAMPLE_METRICS),
                r.pool_size,
            ])
    return buffer.getvalue().encode("utf-8")


def output_dir(spec: RunSpec, spec_path: Path, override: Path | None) -> Path:
    """Return the output folder: the override, else ``output.dir`` beside the run description."""
    if override is not None:
        return override
    path = Path(spec.output.dir).expanduser()
    return path if path.is_absolute() else spec_path.resolve().parent / path


def check_output_dir(folder: Path) -> None:
    """Raise SpecError now, before any work, when ``folder`` cannot receive the outputs.

    Nothing is created here, so a run that fails on invalid input leaves no folder behind.
    """
    if folder.exists() and not folder.is_dir():
        raise SpecError(f"output folder {folder} is an existing file; choose another --out")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(
            f"output folder {folder} is not writable ({existing} does not accept new files); "
            "choose another --out or output.dir"
        )


def input_files(setup: AuditSetup) -> list[Path]:
    """Return the data files the audit read: the target's, then the replay log's."""
    return [path for path, _, _ in _inputs(setup)]


def input_digests(setup: AuditSetup) -> list[FileDigest]:
    """Return the receipt's digest of every data file the audit read."""
    return [
        FileDigest(path=str(path), sha256=sha256, role=role)
        for path, sha256, role in _inputs(setup)
    ]


def _inputs(setup: AuditSetup) -> list[tuple[Path, str, str]]:
    # The log's digests were taken while its files were validated; write_outputs hashes
    # every input again and stops if any changed since.
    found: dict[Path, tuple[Path, str, str]] = {}
    for path in setup.data.files:
        found.setdefault(path.resolve(), (path, sha256_hex(path.read_bytes()), "target data"))
    if setup.replay is not None:
        for item in setup.replay.log.files:
            found.setdefault(item.path.resolve(), (item.path, item.sha256, item.role))
    return list(found.values())


def prepare_setup(spec: RunSpec, spec_path: Path) -> AuditSetup:
    """Return the shared setup of a re-run or, when ``replay:`` is given, of a replay."""
    if spec.replay is not None:
        from selbias_audit.replay.setup import prepare_replay

        return prepare_replay(spec, spec_path)
    return prepare(spec, spec_path)


def run_all(
    setup: AuditSetup, progress: Callable[[str, int, int], None] | None = None
) -> list[SelectorRun]:
    """Run every planned selector: through re-run loops, or over the logged rounds."""
    planned = plan_runs(setup)
    if setup.replay is not None:
        from selbias_audit.replay.run import run_replay

        return run_replay(setup, planned, progress)
    return [run_selector(setup, p, progress) for p in planned]


def run_audit(
    spec_path: Path,
    *,
    out_dir: Path | None = None,
    key_path: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_plan: Callable[[list[str], int], None] | None = None,
) -> AuditResult:
    """Run the audit described by ``spec_path`` and write the signed outputs.

    The signing key is loaded before any work so that a bad key fails fast.
    """
    from selbias_audit.receipt.keys import key_id, load_or_create_default_key, load_private_key
    from selbias_audit.receipt.outputs import write_outputs

    spec, spec_bytes = load_spec(spec_path)
    target_dir = output_dir(spec, spec_path, out_dir)
    check_output_dir(target_dir)
    if key_path is not None:
        private_key, created = load_private_key(key_path), False
    else:
        private_key, key_path, created = load_or_create_default_key()
    started = _now()
    setup = prepare_setup(spec, spec_path)
    if on_plan is not None:
        on_plan([p.label for p in plan_runs(setup)], setup.rounds)

    runs = run_all(setup, progress)
    audited = runs[0]
    band = random_band([r for r in runs if r.role == "random"])
    verdict = evaluate_gate(spec.gate, audited, band, missing_governance(spec))

    csv_bytes = rounds_csv(runs)
    artifacts = [FileDigest(path="rounds.csv", sha256=sha256_hex(csv_bytes), role="per-round metrics")]
    digests = input_digests(setup)
    receipt = Receipt(
        run_name=spec.name,
        created_at=_now(),
        started_at=started,
        audited_selector=audited.label,
        verdict=verdict,
        governance=governance(setup, runs, artifacts),
        modes=modes_section(setup),
        runs=runs,
        random_band=band,
        metrics=METRICS,
        seeds=Seeds(run=spec.seed, streams=dict(setup.seeds.streams)),
        run_description=FileDigest(
            path=str(spec_path), sha256=sha256_hex(spec_bytes), role="run description"
        ),
        inputs=digests,
        counterfactual_note=counterfactual_note(setup, runs),
        signing_key_id=key_id(private_key.public_key()),
        citations=citations(runs),
    )
    written = write_outputs(
        receipt, target_dir, run_description=spec_path,
        inputs=[Path(item.path) for item in digests],
        private_key=private_key, pdf=spec.output.pdf,
    )
    # The CSV goes last: its digest is already inside the signed receipt.
    csv_path = atomic_write_bytes(target_dir / "rounds.csv", csv_bytes)
    exit_code = EXIT_PASS if verdict.passed else EXIT_GATE_FAILED
    return AuditResult(
        receipt=receipt, out_dir=target_dir, files=[*written.paths(), csv_path],
        exit_code=exit_code, key_path=key_path, key_created=created,
    )


def elapsed(start: float) -> float:
    """Return seconds since ``start`` (a perf_counter reading)."""
    return time.perf_counter() - start
