"""Numbers as people read them in tables, summaries and reports: one format everywhere."""

from __future__ import annotations


def fmt(value) -> str:
    """Four significant digits for numbers (also numbers held as strings, as MLflow tags are); '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, (bool, int)) or not isinstance(value, (float, str)):
        return str(value)  # counts stay whole: 100004, not 1e+05
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def progress(items, total: int, what: str, unit: str, size=lambda item: 1):
    """Yield ``items`` while stderr shows how many ``unit`` are done, at what rate, and the time left.

    ``total`` may be an estimate; ``size(item)`` says how many units an item counts for.
    Nothing is shown when stderr is not a terminal (a cron job's log keeps no bars).
    """
    import sys

    if not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn(f"{{task.speed:,.0f}} {unit}/s"),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total)
        for item in items:
            yield item
            bar.advance(task, size(item))
