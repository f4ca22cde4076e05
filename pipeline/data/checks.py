"""What can be said about the data before TensorFlow is imported: a missing file costs a second, not ten.

``check(cfg)`` runs in the Python API before a job imports TensorFlow: a user's
path must exist, and a CSV or Parquet table (its first file, if several) must have
the label column and those ``data.dtypes`` declares; the
command line also checks the dataset's name (``check_name``). The builders
check the same again (they are also reached without this).
"""

from __future__ import annotations

import codecs
import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.inputs import (
    UNREADABLE,
    cannot_read,
    data_columns,
    folder_values,
    is_parquet,
    open_text,
    parquet_metadata,
)
from pipeline.data.spec import input_name
from pipeline.errors import DataError
from pipeline.text import among, listed

MIN_ROWS = 3  # one example per split, at the least
UNNAMED = ""  # the name under a delimiter that closes every line (``a,b,``): no column, if nothing stands under it
BUILT_IN = ("digits", "ames_housing", "movielens_small", "electricity_demand", "sp500_daily", "spoken_digits", "csv",
            "series", "image_folder", "audio_folder")
TABLES, FOLDERS = ("csv", "series"), ("image_folder", "audio_folder")  # the datasets of a user's files (data.path)
READS_PATH = TABLES + FOLDERS


@dataclass(frozen=True)
class Dialect:
    """How a CSV file's text is written (``data.encoding``, ``data.delimiter``, ``data.decimal``, ``data.thousands``,
    ``data.column_names``); Parquet has none."""

    encoding: str = "utf-8"
    delimiter: str = ","
    decimal: str = "auto"  # decided on the file's first rows (sources.schema)
    thousands: str = "none"  # the mark grouping digits, or none
    names: tuple[str, ...] = ()  # the columns of files without a header line; none: the first line names them

    @classmethod
    def of(cls, data) -> Dialect:
        """The dialect ``data`` (a config's data section) describes."""
        return cls(data.encoding, data.delimiter, data.decimal, data.thousands, tuple(data.column_names or ()))

    @property
    def header_lines(self) -> int:
        """Lines above a file's first row: its header, unless ``names`` gives the columns."""
        return 0 if self.names else 1

    @property
    def codec(self) -> str:
        """Python's codec for the text: UTF-8 files may start with a byte-order mark (Excel's do)."""
        return "utf-8-sig" if self.encoding == "utf-8" else self.encoding

    def reader(self, handle):
        """Python's csv reader over an open text ``handle`` of such a file."""
        return csv.reader(handle, delimiter=self.delimiter)


PLAIN = Dialect()  # UTF-8, comma-separated: CSV as most tools write it


def check(cfg) -> None:
    """Raise a one-line DataError for a user's file that cannot be read, or one given to a dataset that reads
    none; return quietly otherwise."""
    if cfg.data.path is not None and cfg.data.dataset not in READS_PATH:
        raise DataError(f"`data.path` ({cfg.data.path}) is read by the {', '.join(READS_PATH[:-1])} and "
                        f"{READS_PATH[-1]} datasets only; `data.dataset` is {cfg.data.dataset!r}, which reads no path: "
                        "set `data.dataset: csv` for a table (series, image_folder or audio_folder for the others), or "
                        "leave `data.path` out")
    if cfg.data.dataset in TABLES:
        from pipeline.data.inputs import input_files

        # Merged shards may declare a column a later shard adds: named_columns asks the prepared table.
        declared = [] if cfg.data.merge_columns else list(cfg.data.dtypes)
        _table(input_files(required_path(cfg))[0], cfg.data.label_key, Dialect.of(cfg.data), declared)
    elif cfg.data.dataset in FOLDERS:
        require_folder(cfg)


def _table(path: Path, label: str, dialect: Dialect, declared: list[str]) -> None:
    """The header names usable columns, the label and those ``declared`` (``data.dtypes``) among them, over at
    least one row per split."""
    if dialect.names and is_parquet(path):
        raise DataError(f"{path}: a Parquet file names its own columns: leave `data.column_names` out")
    columns = checked_header(path, dialect)
    inputs = {}
    for i, column in enumerate(columns):
        if not column.strip():
            pandas = " (pandas writes its index so: to_csv(index=False) leaves it out)" if i == 0 else ""
            raise DataError(f"{path}: column {i + 1} has no name in the header{pandas}; a column becomes a model "
                            "input, which needs one: name it in the file")
        if column in columns[:i]:
            raise DataError(f"{path}: columns {columns.index(column) + 1} and {i + 1} are both named {column!r}")
        name = input_name(column)
        other = inputs.setdefault(name, column)
        if other != column:
            raise DataError(f"{path}: columns {other!r} and {column!r} would both be the model input "
                            f"{name!r} (a character other than ASCII letters, digits and _ is written "
                            "as _ there): rename one in the file")
    if label not in columns:
        raise DataError(f"{path}: missing label column {label!r} (`data.label_key`); columns are {among(label, columns)}"
                        f"{no_header(columns, dialect)}.")
    if unknown := next((name for name in declared if name not in columns), None):
        raise DataError(f"Invalid `data.dtypes`: {unknown!r} is not a column of {path}; it has {among(unknown, columns)}.")
    rows = data_rows(path, dialect, at_most=MIN_ROWS)
    if rows < MIN_ROWS:
        raise DataError(f"{path}: {rows} data row{'s' if rows != 1 else ''} under the header; a table needs at least "
                        f"{MIN_ROWS}, one for each split")


def named_columns(cfg, features: list[str], dataset: str) -> None:
    """Every key that names a column names one of the dataset's ``features``, and the recommender's ids and
    context name features the model sees: a misspelt name is refused, where it would otherwise be ignored."""
    data, rc = cfg.data, cfg.model.recommender
    named = {"data.label_key": [data.label_key], "data.columns": data.columns or [],
             "data.time_split.column": [data.time_split.column] if data.time_split else [],
             "data.exclude": data.exclude, "data.dtypes": list(data.dtypes), "features.kinds": list(cfg.features.kinds)}
    for key, names in named.items():
        for name in names:
            if name not in features:
                raise DataError(f"Invalid `{key}`: {name!r} is not a feature of {dataset}; it has {among(name, features)}.")
    if cfg.model.name == "recommender":
        seen = [n for n in data.columns or features if n != data.label_key and n not in data.exclude]
        for key, names in {"user": [rc.user], "item": [rc.item], "context": rc.context}.items():
            for name in names:
                if name not in seen:
                    raise DataError(f"Invalid `model.recommender.{key}`: {name!r} is not among the model's features "
                                    f"({among(name, seen)}; `data.columns` and `data.exclude` choose them).")


def check_name(cfg) -> None:
    """The dataset must be built in or prepared under ``data.data_dir``: true on the command line, where no
    other builder can be registered (a Python caller may register its own, which this cannot see)."""
    if cfg.data.dataset not in BUILT_IN and not (Path(cfg.data.data_dir) / cfg.data.dataset).is_dir():
        raise DataError(unknown_dataset(cfg))


def unknown_dataset(cfg) -> str:
    return (f"Unknown dataset `data.dataset`: {cfg.data.dataset!r}. Use a built-in one ({', '.join(BUILT_IN)}) or a "
            f"TFDS dataset prepared under `data.data_dir` ({cfg.data.data_dir}).")


def required_path(cfg) -> str:
    """``data.path``, which must be set and name this machine's files (a mounted bucket's are; a URL is not)."""
    if not cfg.data.path:
        raise DataError(f"`data.path` is required for dataset {cfg.data.dataset!r}.")
    if "://" in cfg.data.path:
        raise DataError(f"Invalid `data.path`: {cfg.data.path} is a URL, and `data.path` is read with this machine's "
                        "file calls: copy the data here first (curl -o, gsutil cp, aws s3 cp) or mount the bucket, "
                        "and give its path")
    return cfg.data.path


def require_folder(cfg) -> Path:
    """``data.path``, which must be set and be a folder."""
    path = Path(required_path(cfg))
    if not path.is_dir():
        raise DataError(f"Invalid `data.path`: folder not found: {path}")
    return path


def data_rows(path: Path, dialect: Dialect, at_most: int) -> int:
    """Rows under the header, counted up to ``at_most`` (Parquet: from its metadata)."""
    if is_parquet(path):
        return min(parquet_metadata(path).num_rows, at_most)
    with open_text(path, dialect.codec) as handle:
        rows = dialect.reader(handle)
        for _ in range(dialect.header_lines):
            next(rows, None)
        return sum(1 for _, row in zip(range(at_most), rows) if any(cell.strip() for cell in row))


def no_header(columns: list[str], dialect: Dialect) -> str:
    """What to add to an error about a header of which a third or more of the names are numbers: a row of data?"""
    numbers = [c for c in columns if _number(c)]
    if dialect.names or len(numbers) * 3 < len(columns):
        return ""
    return (f"; names such as {listed([c.strip() for c in numbers], 3)} say its first line may be a row of data: if "
            "the file has no header line, name its columns in `data.column_names`")


def _number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def checked_header(path: Path, dialect: Dialect) -> list[str]:
    """``header``, unless the file's is one column that another delimiter would split: a file of another dialect."""
    columns = file_columns(path, dialect)
    if not columns:
        raise DataError(f"{path}: the file is empty: no header line naming its columns")
    other = next((c for c in ",;\t|" if c in columns[0]), None) if len(columns) == 1 else None
    if other and not is_parquet(path):
        spelt = "tab" if other == "\t" else repr(other)
        raise DataError(f"{path}: its header is one column, {columns[0][:80]!r}: its fields are separated by "
                        f"{spelt}, not {dialect.delimiter!r} (set `data.delimiter: {spelt}`)")
    return _and_folders(columns, path)


def same_columns(path: Path, dialect: Dialect, first: Path, columns: list[str]) -> None:
    """A later shard holds the first one's ``columns``, in any order: matched by name, as the jobs that wrote the
    shards may have ordered them otherwise; else one line that says what it adds, lacks or repeats."""
    own = header(path, dialect)
    if sorted(own) == sorted(columns):
        return
    extra, missing = [c for c in own if c not in columns], [c for c in columns if c not in own]
    repeated = sorted({c for c in own if c in columns and own.count(c) > columns.count(c)})
    differ = "; ".join(f"{which} {listed(names, 5)}" for which, names in (
        ("it adds", extra), ("it lacks", missing), ("it repeats", repeated)) if names)
    raise DataError(f"{path}: its columns differ from those of {first.name} ({differ}); every shard must have the "
                    "same columns, unless `data.merge_columns: true` reads them as one table (a column a shard "
                    "lacks missing in its rows)")


def merged_columns(files: list[Path], label: str, dialect: Dialect) -> tuple[dict[str, Path], dict[str, int]]:
    """``data.merge_columns``: every file's columns, in the order they first appear, each with the first file
    that holds it, and the columns some files lack, with how many. Each file holds the label and names each of its
    columns once."""
    owners, headers = {}, [(path, header(path, dialect)) for path in files]
    for path, names in headers:
        odd = next((n for n in names if not n.strip() or names.count(n) > 1), None)
        if odd is not None or label not in names:
            why = (f"has no label column {label!r} (`data.label_key`)" if odd is None
                   else f"names column {odd!r} twice" if odd.strip() else "has a column with no name")
            raise DataError(f"{path}: its header {why}; with `data.merge_columns` every shard holds the label once, "
                            "and names each of its columns once")
        owners.update({name: path for name in names if name not in owners})
    lacking = {name: sum(name not in names for _, names in headers) for name in owners}
    return owners, {name: k for name, k in lacking.items() if k}


# Files that are no text, by their first bytes, and what to do with each (a CSV is read by its contents, whatever
# its name: .txt and .dat exports are CSV too, so these are told apart by content).
# Each signature long enough that no CSV begins so (a header of PAR1,PAR2 is text: Parquet's is followed by binary).
NOT_TEXT = {
    rb"PK\x03\x04": "a zip archive (an Excel workbook is one): save the sheet as CSV, or take the CSV out of the archive",
    rb"PAR1[\x00-\x08\x0e-\x1f]": "a Parquet file: name it .parquet",
    rb"\x1f\x8b": "gzip-compressed: name it .gz (a CSV is decompressed as it is read)",
    rb"BZh[1-9]1AY&SY": "bzip2-compressed: name it .bz2 (a CSV is decompressed as it is read)",
    rb"\xfd7zXZ\x00": "xz-compressed: name it .xz (a CSV is decompressed as it is read)",
}


def header(path: Path, dialect: Dialect = PLAIN) -> list[str]:
    """A table's column names: the file's own, then those its folders name (``day=2024-01-01/``:
    ``inputs.partitions``) that the file does not hold."""
    return _and_folders(file_columns(path, dialect), path)


def _and_folders(columns: list[str], path: Path) -> list[str]:
    return columns + list(folder_values(path, columns)) if columns else columns


UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")  # the byte-order marks that open UTF-16 text, little- and big-endian


def file_columns(path: Path, dialect: Dialect = PLAIN) -> list[str]:
    """A table file's column names, from its first line (CSV; a delimiter that closes it names no column:
    ``UNNAMED``) or its schema (Parquet: ``inputs.data_columns``), without reading the rows."""
    if is_parquet(path):
        return data_columns(parquet_metadata(path).schema.to_arrow_schema().names)
    try:
        with open_text(path, dialect.codec) as handle:
            start = handle.buffer.peek(10)[:10]  # the bytes under the text, not read past: one opening
            if what := next((why for magic, why in NOT_TEXT.items() if re.match(magic, start)), None):
                raise DataError(f"{path}: no CSV but {what}")
            if start.startswith(UTF16_MARKS) and not codecs.lookup(dialect.codec).name.startswith(("utf-16", "utf-32")):
                tab = "" if dialect.delimiter == "\t" else ", and most often `data.delimiter: tab`"
                raise DataError(f"{path}: its text is UTF-16 (it opens with that byte-order mark, as Excel's \"Unicode "
                                f"Text\" export writes it), not {dialect.encoding}: set `data.encoding: utf-16`{tab}")
            names = list(dialect.names) or next(dialect.reader(handle), [])
            return names[:-1] if len(names) > 1 and names[-1] == UNNAMED else names
    except UNREADABLE as exc:
        raise cannot_read(path, exc) from None
