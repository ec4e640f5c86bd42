"""Write a replay log by running the digits loop with a local verifier.

Runs the audited selector of a re-run description through the library's round loop.
The default, ``examples/digits-replay-source.yaml``, is CenterMatch against client 0 on
real handwritten digits with the Accumulate paradigm. The script logs what a real
pipeline would log: each round's candidates, kept indices, labels and scores, the client
references, D_0, and the target in the same feature space. ``examples/digits-replay.yaml``
then audits the log with ``selbias audit``.

Usage::

    python examples/make_digits_replay.py [--source RUN.yaml] [--log FOLDER]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selbias_audit.audit import plan_runs, run_selector
from selbias_audit.loop import RoundRecord
from selbias_audit.receipt.model import SelectorRun
from selbias_audit.replay.writer import ReplayLogWriter
from selbias_audit.setup import prepare
from selbias_audit.spec import load_spec

EXAMPLES = Path(__file__).resolve().parent


def write_replay_log(source: Path, log: Path) -> SelectorRun:
    """Run the audited selector of ``source`` and log its rounds into ``log``.

    Returns the re-run's record of the audited selector, whose per-round metrics a replay
    of the log must reproduce.
    """
    spec, _ = load_spec(source)
    loop = spec.rerun_loop
    setup = prepare(spec, source)
    writer = ReplayLogWriter(
        log,
        dimension=int(setup.target.shape[1]),
        clients=len(setup.references),
        paradigm=loop.paradigm,
        label_names=list(setup.modes.names),
        generator=f"{spec.generator.kind} (re-run of {source.name})",
        description=f"rounds of {source.name}, logged by make_digits_replay.py",
        overwrite=True,
    )

    # The loop works in the run's transformed feature space, so the log and the target
    # are written in that space. The replay then applies no further transform.
    writer.write_target(setup.target.numpy(), _numpy(setup.target_labels))
    writer.write_initial(setup.initial.numpy(), _numpy(setup.initial_labels))
    for k, reference in enumerate(setup.references):
        labels = None if setup.reference_labels is None else setup.reference_labels[k]
        writer.write_client(k, reference.numpy(), _numpy(labels))

    def log_round(record: RoundRecord) -> None:
        scores = record.selection.scores
        writer.write_round(
            candidates=record.candidates.numpy(),
            kept=record.selection.indices.cpu().numpy(),
            labels=_numpy(record.candidate_labels),
            scores=None if scores is None else scores.detach().cpu().double().numpy(),
        )

    audited = plan_runs(setup)[0]
    run = run_selector(setup, audited, on_record=log_round)
    writer.close()
    return run


def _numpy(tensor):  # type: ignore[no-untyped-def]
    return None if tensor is None else tensor.detach().cpu().numpy()


def main() -> None:
    """Parse the command line, write the log and print the re-run's final metrics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=EXAMPLES / "digits-replay-source.yaml",
        help="re-run description whose audited selector is logged",
    )
    parser.add_argument(
        "--log", type=Path, default=EXAMPLES.parent / "out" / "digits-replay-log",
        help="log folder to write; an earlier log there is replaced",
    )
    args = parser.parse_args()
    run = write_replay_log(args.source, args.log)
    last = run.rounds[-1]
    print(f"wrote {len(run.rounds)} rounds of {run.label} to {args.log}")
    print(
        f"re-run, round {last.round}: tail retention {last.tail_retention:.4f}, "
        f"trace ratio {last.trace_ratio:.4f}, pool size {last.pool_size}"
    )


if __name__ == "__main__":
    main()
