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


def listed(texts: list[str], most: int) -> str:
    """The first ``most`` of ``texts`` in one line, and how many more (a table may have hundreds of columns)."""
    more = f" and {len(texts) - most} more" if len(texts) > most else ""
    return ", ".join(texts[:most]) + more


def closest(name: str, options: list[str], most: int = 3) -> list[str]:
    """The ``options`` a misspelt ``name`` most likely meant: those equal but for case, else difflib's closest."""
    import difflib

    return [o for o in options if o.casefold() == name.casefold()][:most] or difflib.get_close_matches(
        name, options, n=most)


def among(name: str, options: list[str], most: int = 20) -> str:
    """``options`` in a message refusing ``name``: every one when few; else the first ``most`` and the closest to
    ``name`` (a misspelling among a thousand columns), not a line of thousands of characters."""
    if len(options) <= most:
        return ", ".join(options)
    close = closest(name, options)
    return listed(options, most) + (f" (the closest to {name!r}: {', '.join(close)})" if close else "")


def progress(items, total: int, what: str, unit: str, size=lambda item: 1, every: float = 10.0):
    """Yield ``items`` while stderr shows how many ``unit`` are done, at what rate, and the time left.

    ``total`` may be an estimate; ``size(item)`` says how many units an item counts for. On a
    terminal, a bar; elsewhere (a cron job's log) a plain line every ``every`` seconds.
    """
    import sys
    import time

    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            """Units a second, once rich has measured any (its ``task.speed`` is None until then)."""

            def render(self, task) -> Text:
                return Text(f"{'?' if task.speed is None else f'{task.speed:,.0f}'} {unit}/s")

        columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(what, total=total)
            for item in items:
                yield item
                bar.advance(task, size(item))
        return
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += size(item)
        now = time.monotonic()
        if now - last >= every:
            last, rate = now, done / (now - start)
            left = f", about {max(total - done, 0) / rate:,.0f} s left" if rate else ""
            print(f"{what}: {done:,} of about {total:,} {unit} ({rate:,.0f} {unit}/s{left})", file=sys.stderr, flush=True)


def ratio(value: float) -> str:
    """An error ratio (the model's over a baseline's) to three decimals; infinite, said in words, where the baseline
    makes no test error and the model does."""
    import math

    return f"{value:.3f}" if math.isfinite(value) else "infinite (the baseline makes no test error)"
