"""A series read in time order, checked and split by time; data/windows.py cuts it into windows.

The whole series is read once into NumPy columns (8 bytes a value: 10M steps of 5 columns
are 400 MB) and sorted by time.

Several series (``forecast.series_id``) are laid one after the other; no window crosses from
one into the next, and each is split on its own. A series too short for a window in each split
(a store opened last month) is left out with a note, as long as one series remains.

Splits are consecutive stretches (train, validation, test, in this order, test the newest):
a window belongs to the stretch its label falls in wholly; its inputs may reach back into the
stretch before, as they would when forecasting. Statistics come from training windows only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.text import among, listed

SPLITS = ("train", "validation", "test")
ROW = "_row"  # the series builder's row position in the user's files
LAST_SECOND = 32_503_680_000  # 3000-01-01T00:00:00Z in epoch seconds: later "seconds" are milliseconds


@dataclass(frozen=True)
class Segment:
    """One series among the concatenated columns: its steps, and where each split's labels lie."""

    key: Any  # its value of ``forecast.series_id`` (None for a file of one series)
    start: int
    end: int
    bounds: dict[str, tuple[int, int]]  # split -> [first, last) step of its labels, in the concatenated columns


@dataclass
class Series:
    """The columns of one or several series, each in time order, one after the other."""

    time: np.ndarray  # int64 (epoch seconds, or any increasing number)
    columns: dict[str, np.ndarray]  # float64 target and covariates
    segments: list[Segment]
    ids: np.ndarray | None = None  # per step, its series' id (several series)
    short: dict[str, int] = field(default_factory=dict)  # left out as too short for the splits: name -> steps
    filled: int = 0  # steps missing from the file that ``forecast.gaps: fill`` added

    def __len__(self) -> int:
        return len(self.time)

    def owner(self, steps: np.ndarray) -> np.ndarray:
        """The first step of the series each of ``steps`` belongs to."""
        firsts = np.array([seg.start for seg in self.segments])
        return firsts[np.searchsorted(firsts, steps, side="right") - 1]

    def notes(self) -> list[str]:
        """What a run should tell its user about the series it read: the steps it filled in, those it left out."""
        notes = [f"`forecast.gaps: fill` carried the row before each gap forward into {self.filled:,} missing "
                 f"step{'s' if self.filled > 1 else ''}"] if self.filled else []
        if self.short:
            one = len(self.short) == 1
            notes.append(f"{len(self.short)} of {len(self.short) + len(self.segments)} series (`forecast.series_id`) "
                         f"{'is' if one else 'are'} too short for the input window and the horizon in each split and "
                         f"{'was' if one else 'were'} left out: "
                         + listed([f"{name!r} ({steps} steps)" for name, steps in self.short.items()], 5))
        return notes


def read(ds, cfg, dates: bool = False) -> Series:
    """The series in ``ds`` (one TFDS split, any order), checked and cut to ``forecast.end``.

    ``dates``: the time column was dates (stored as epoch seconds); errors show them as dates.

    With ``forecast.series_id``, every series in the file is checked and split on its own (its
    own last ``forecast.test`` is its test window), then they are laid one after the other.

    Raises:
        DataError: a missing column, duplicate timestamps, a time column that goes backwards,
            missing target values, gaps (unless allowed or filled), or too short a series for
            the window, the horizon or the splits, log returns of a target that reaches 0; each
            names the series when there are several.
    """
    fc, target = cfg.forecast, cfg.data.label_key
    names = [target, *fc.past_covariates, *fc.known_covariates]
    keys = [fc.time, *names, *([fc.series_id] if fc.series_id else [])]
    for key, which in [(fc.time, "forecast.time"), (target, "data.label_key"),
                       *((c, "forecast.past_covariates") for c in fc.past_covariates),
                       *((c, "forecast.known_covariates") for c in fc.known_covariates),
                       *([(fc.series_id, "forecast.series_id")] if fc.series_id else [])]:
        if key not in ds.element_spec:
            raise DataError(f"Invalid `{which}`: {key!r} is not a column of the series; it has "
                            f"{among(key, [k for k in ds.element_spec if k != ROW])}")
        if key in names and ds.element_spec[key].dtype.name == "string":
            raise DataError(f"Invalid `{which}`: {key!r} holds text; a series' inputs are numbers (code it as "
                            "numbers, such as 0 and 1, or leave it out)")
    keys += [ROW] if ROW in ds.element_spec else []
    parts: dict[str, list] = {k: [] for k in keys}
    for batch in ds.map(lambda ex: {k: ex[k] for k in keys}).batch(65536).as_numpy_iterator():
        for k in keys:
            parts[k].append(batch[k])
    raw = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    _calendar_check(raw[fc.time], fc, dates)
    ids = raw[fc.series_id] if fc.series_id else np.zeros(len(raw[fc.time]), np.int64)
    ids = ids.astype("S") if ids.dtype == object else ids  # text ids: bytes, which sort
    order = np.lexsort((raw[ROW] if ROW in raw else raw[fc.time], ids))  # by series, then file order (or time)
    ids, keys_sorted = ids[order], np.unique(ids)
    firsts = np.searchsorted(ids, keys_sorted)
    pieces, filled = [], 0
    for key, a, b in zip(keys_sorted, firsts, [*firsts[1:], len(ids)]):
        rows = order[a:b]
        name = _name(key) if fc.series_id else None
        time, columns, added = _one(raw[fc.time][rows].astype(np.int64),
                                    {n: raw[n][rows].astype(np.float64) for n in names}, cfg, name, by_row=ROW in raw,
                                    when=_date if dates else str)
        pieces.append((key, time, columns))
        filled += added
    series = _concatenate(pieces, cfg)
    series.filled = filled
    _log_return_check(series, cfg)
    return series


def _calendar_check(time: np.ndarray, fc, dates: bool) -> None:
    """Calendar features read the time column as epoch seconds: milliseconds (as JavaScript and Kafka
    write them) would give every step a meaningless time of day, silently."""
    if fc.calendar and not dates and len(time) and time.max() > LAST_SECOND:
        raise DataError(f"`forecast.calendar` reads `{fc.time}` as epoch seconds, but it holds {int(time.max())}, past the "
                        "year 3000 in seconds: milliseconds? divide them by 1,000, or give ISO 8601 dates")


def _name(key) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


def _date(seconds) -> str:
    """Epoch seconds as the date and time they are (UTC), as the user's file gave them."""
    return str(np.datetime64(int(seconds), "s"))


def _one(time: np.ndarray, columns: dict, cfg, name: str | None, by_row: bool, when=str):
    """One series, checked (order, gaps, missing target values) and cut to ``forecast.end``, and the steps its gaps
    were filled with; ``when`` writes a time in an error."""
    fc, target = cfg.forecast, cfg.data.label_key
    where = f"Series {name!r} (`forecast.series_id`): the" if name is not None else "The"
    _check_order(time, fc.time, by_row, where, when)
    rows = len(time)
    time, columns = _regular(time, columns, fc, where, when)
    missing = np.isnan(columns[target])
    if missing.any():
        first = int(np.argmax(missing))
        raise DataError(f"{where} target `{target}` (`data.label_key`) has {int(missing.sum())} missing values, the "
                        f"first at {fc.time}={when(time[first])} (step {first + 1}): fill or drop them before forecasting")
    end = int(round(len(time) * fc.end))
    return time[:end], {n: v[:end] for n, v in columns.items()}, len(time) - rows


def _concatenate(pieces: list, cfg) -> Series:
    """The pieces one after the other; with several series, those too short for the splits are left out
    (the error of the first is raised when none is long enough)."""
    segments, start, kept, short, first_error = [], 0, [], {}, None
    for key, time, columns in pieces:
        where = f"series {_name(key)!r} (`forecast.series_id`): " if cfg.forecast.series_id else ""
        try:
            bounds = _bounds(len(time), cfg, where)
        except DataError as error:
            if not cfg.forecast.series_id:
                raise
            short[_name(key)] = len(time)
            first_error = first_error or error
            continue
        segments.append(Segment(key if cfg.forecast.series_id else None, start, start + len(time),
                                {split: (start + a, start + b) for split, (a, b) in bounds.items()}))
        kept.append((key, time, columns))
        start += len(time)
    if not kept:
        raise DataError(f"None of the {len(pieces)} series is long enough for the splits; {first_error}"
                        if len(pieces) > 1 else str(first_error))
    pieces = kept
    time = np.concatenate([t for _, t, _ in pieces])
    columns = {n: np.concatenate([c[n] for _, _, c in pieces]) for n in pieces[0][2]}
    ids = np.concatenate([np.repeat(key, len(t)) for key, t, _ in pieces]) if cfg.forecast.series_id else None
    return Series(time, columns, segments, ids, short)


def _check_order(time: np.ndarray, column: str, by_row: bool, where: str = "The", when=str) -> None:
    """Timestamps strictly increase: a duplicate or a step back is named with its position."""
    steps = np.diff(time)
    if (steps == 0).any():
        i = int(np.argmax(steps == 0))
        raise DataError(f"{where} time column `{column}` has duplicate timestamps: {when(time[i])} at steps {i + 1} and "
                        f"{i + 2} (one row per time step; aggregate or drop duplicates)")
    if (steps < 0).any():
        i = int(np.argmax(steps < 0))
        at = f"row {i + 2} of the file" if by_row and where == "The" else f"step {i + 2}"
        raise DataError(f"{where} time column `{column}` is not in time order: {when(time[i + 1])} at {at} comes after "
                        f"{when(time[i])} (sort the file by `{column}`)")


def _regular(time: np.ndarray, columns: dict, fc, where: str = "The", when=str):
    """Check the series' step (its most common one); gaps are an error, allowed, or filled forward.

    Dates one calendar month or more apart, each at the same place in its month (a day and time, or
    so long before the month's end), step in months: a monthly, quarterly or yearly series is
    regular though its months last 28 to 31 days.
    """
    if len(time) < 3 or fc.gaps == "allow":
        return time, columns
    steps = np.diff(time)
    months = _Months.of(time) if when is _date and (steps != steps[0]).any() else None
    position = months.index if months else time  # where each row lies on the series' grid
    if months:
        steps = np.diff(position)
    values, counts = np.unique(steps, return_counts=True)
    step = int(values[np.argmax(counts)])
    gaps = np.flatnonzero(steps != step)
    if not gaps.size:
        return time, columns
    unit = f" month{'s' if step > 1 else ''}" if months else " s" if when is _date else ""
    if fc.gaps == "error":
        i = int(gaps[0])
        raise DataError(f"{where} series has {gaps.size} gaps in `{fc.time}` (its step is {step}{unit}): the first from "
                        f"{when(time[i])} to {when(time[i + 1])} (step {i + 1}). Set `forecast.gaps: fill` to carry the "
                        "last row forward, or `allow` when rows are consecutive steps (trading days)")
    if (steps % step).any():
        i = int(np.argmax(steps % step != 0))
        raise DataError(f"`forecast.gaps: fill` needs timestamps on a grid of the series' step {step}{unit}, but "
                        f"{when(time[i])} to {when(time[i + 1])} (step {i + 1}) is not a multiple of it")
    grid = np.arange(position[0], position[-1] + step, step)
    source = np.searchsorted(position, grid, side="right") - 1  # the last row at or before each grid step
    return (months.times(grid) if months else grid), {n: v[source] for n, v in columns.items()}


@dataclass(frozen=True)
class _Months:
    """Epoch seconds that all lie at one place in their calendar months: the months they are in."""

    index: np.ndarray  # months since 1970-01 of each time
    offset: int  # seconds after the month's start, or (from_end) before the next month's start
    from_end: bool

    @classmethod
    def of(cls, time: np.ndarray) -> _Months | None:
        """``time``'s months, or None when the times lie at different places in their months (or less than a month apart)."""
        months = time.astype("datetime64[s]").astype("datetime64[M]")
        index = months.astype(np.int64)
        if (np.diff(index) < 1).any():  # two in one month: no monthly series
            return None
        for from_end in (False, True):
            offset = time - _month_start(index + from_end)
            if (offset == offset[0]).all():
                return cls(index, int(offset[0]), from_end)
        return None

    def times(self, index: np.ndarray) -> np.ndarray:
        """The epoch seconds of the same place in the months ``index``."""
        return _month_start(index + self.from_end) + self.offset


def _month_start(index: np.ndarray) -> np.ndarray:
    """Epoch seconds of the first instant of the months ``index`` (months since 1970-01)."""
    return index.astype("datetime64[M]").astype("datetime64[s]").astype(np.int64)


def _bounds(n: int, cfg, where: str = "") -> dict[str, tuple[int, int]]:
    """[first, last) step of each split's labels in a series of ``n`` steps; checks that each holds a window."""
    fc = cfg.forecast
    total = int(round(n / fc.end))  # the validation and test shares are of the whole series
    test, validation = int(round(total * fc.test)), int(round(total * fc.validation))
    train_end = n - test - validation
    window = fc.input_window + fc.horizon
    if test < fc.horizon:
        raise DataError(f"{where}The test window ({test} steps: `forecast.test` {fc.test} of {total}) is shorter "
                        f"than `forecast.horizon` ({fc.horizon}): raise forecast.test or shorten the horizon")
    if validation < fc.horizon:
        raise DataError(f"{where}The validation window ({validation} steps: `forecast.validation` {fc.validation} of "
                        f"{total}) is shorter than `forecast.horizon` ({fc.horizon})")
    if train_end < window:
        raise DataError(f"{where}`forecast.input_window` ({fc.input_window}) plus the horizon ({fc.horizon}) is "
                        f"longer than the training split ({max(train_end, 0)} steps): shorten the window or use more "
                        "data")
    return {"train": (fc.input_window, train_end), "validation": (train_end, train_end + validation),
            "test": (n - test, n)}


def _log_return_check(series: Series, cfg) -> None:
    """Log returns need a target above 0 everywhere."""
    fc, target = cfg.forecast, cfg.data.label_key
    values = series.columns[target]
    if fc.target_transform == "log_return" and (values <= 0).any():
        raise DataError(f"`forecast.target_transform: log_return` needs `{target}` above 0, but it has "
                        f"{int((values <= 0).sum())} values at or below 0: use difference")
