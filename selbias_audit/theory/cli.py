"""Drive the Gaussian theory run from the command line with a rich progress bar."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from selbias_audit.theory.report import write_theory_outputs
from selbias_audit.theory.run import TheoryProgress, run_theory
from selbias_audit.theory.spec import load_theory_spec, resolve_output_dir


def run_theory_command(
    path: Path, out: Path | None, console: Console, *, quiet: bool = False
) -> list[Path]:
    """Load the theory description, run every setting and write the outputs."""
    spec = load_theory_spec(path)
    out_dir = out if out is not None else resolve_output_dir(spec, path)
    progress = Progress(
        TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("rounds"), TimeElapsedColumn(), console=console, disable=quiet,
    )
    tasks: dict[str, int] = {}

    def advance(event: TheoryProgress) -> None:
        if event.setting not in tasks:
            tasks[event.setting] = progress.add_task(event.setting, total=event.rounds)
        progress.update(tasks[event.setting], completed=event.round)

    with progress:
        result = run_theory(spec, progress=advance)
    return write_theory_outputs(result, out_dir)
