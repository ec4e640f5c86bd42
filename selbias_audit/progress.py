"""A rich progress display of rounds x selectors, driven by the audit's callbacks."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class AuditProgress:
    """One bar per selector run, advanced once per round; silent when disabled."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description:<32}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rounds"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not enabled,
        )
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> AuditProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def plan(self, labels: list[str], rounds: int) -> None:
        """Create one bar per selector run."""
        for label in labels:
            self._tasks[label] = self._progress.add_task(escape(label), total=rounds)

    def advance(self, label: str, round_index: int, rounds: int) -> None:
        """Mark ``round_index`` of ``label`` as done."""
        task = self._tasks.get(label)
        if task is None:
            task = self._progress.add_task(escape(label), total=rounds)
            self._tasks[label] = task
        self._progress.update(task, completed=round_index)
