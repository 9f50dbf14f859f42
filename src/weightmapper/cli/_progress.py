"""Progress events of the library → rich progress bars on stderr, one row per stage.

The library announces stages through :mod:`weightmapper.progress`; this module draws them:
a spinner and a growing bar while a stage runs (a pulsing bar when its size is unknown),
then a full bar with the stage's wall time. Only on an interactive terminal: scripts and
logs get no control codes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from weightmapper.progress import ProgressEvent, reporting


class StageBars:
    """A rich Progress fed with ProgressEvents: one task per stage, in the order they start."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description:<28}"),
            BarColumn(bar_width=32),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, event: ProgressEvent) -> None:
        """ProgressEvent → the matching row created, advanced or completed."""
        task = self._tasks.get(event.stage)
        if event.kind == "start" or task is None:
            task = self.progress.add_task(event.stage, total=event.total)
            self._tasks[event.stage] = task
        if event.kind == "end":
            total = event.total if event.total is not None else max(event.done, 1)
            self.progress.update(task, total=total, completed=total)
            self.progress.stop_task(task)
            # A stage that runs again (a second mapping) gets a fresh row.
            del self._tasks[event.stage]
        elif event.kind == "advance":
            self.progress.update(task, completed=event.done)


@contextlib.contextmanager
def stage_bars(console: Console | None) -> Iterator[None]:
    """Console (None: draw nothing) → context in which library stages are drawn as bars."""
    if console is None:
        yield
        return
    bars = StageBars(console)
    with bars.progress, reporting(bars):
        yield
