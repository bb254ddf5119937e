"""The one progress bar of long loops (training, the LSTM LM's epochs): rich, on stderr, so that
stdout stays free for results (the benches' JSON lines)."""
from __future__ import annotations


class Bar:
    """`label` [bar] done/total, time left, then a caller-formatted `info` text.

    `restart` starts a fresh bar under a new label (the next epoch); `note` prints a line that
    stays above the bar (an epoch's summary)."""

    def __init__(self, label: str, total: int, done: int = 0):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)
        self.p = Progress(TextColumn("{task.fields[label]}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                          console=Console(stderr=True))
        self.task = self.p.add_task("", total=total, completed=done, label=label, info="")
        self.p.start()

    def update(self, done: int, info: str = "") -> None:
        self.p.update(self.task, completed=done, info=info)

    def restart(self, label: str, total: int | None = None) -> None:
        total = self.p.tasks[0].total if total is None else total
        self.p.remove_task(self.task)
        self.task = self.p.add_task("", total=total, completed=0, label=label, info="")

    def note(self, line: str) -> None:
        self.p.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self.p.stop()
