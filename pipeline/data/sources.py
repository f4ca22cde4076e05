"""Users' tables read as a stream: CSV or Parquet, one file, a glob or a folder of shards.

Nothing here holds more than one chunk of rows, so a table of any length is read in the memory
of one chunk (``CHUNK_BYTES`` of CSV, ``CHUNK_ROWS`` of Parquet) of the files that data/inputs.py
finds where ``data.path`` points:

- ``schema(files, label, declared, dialect)``: each column's type, decided on the first
  ``SAMPLE_ROWS`` rows (declared types win; Parquet's own types are kept);
- ``chunks(files, schema, on_bad_input)``: the rows converted to those types, chunk by
  chunk, each with its count of skipped bad rows. The full pass confirms the sample's
  types: a value that is not a number in a numeric column is a bad row (named by file,
  line and column, or skipped and counted), and a column typed ``int`` on the sample that
  later holds a fraction or a gap stops with the ``data.dtypes`` declaration that fixes it.

Neither TensorFlow nor pandas is needed for the stream itself: pyarrow parses and converts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.data import cells, checks, inputs, lines
from pipeline.data.checks import PLAIN, UNNAMED, Dialect, checked_header, file_columns, same_columns
from pipeline.data.inputs import UNREADABLE, cannot_read, is_parquet, open_bytes
from pipeline.errors import DataError
from pipeline.text import among

CHUNK_BYTES = 8 << 20  # CSV read at a time (pyarrow's block)
CHUNK_ROWS = 65_536  # Parquet rows read at a time
SAMPLE_ROWS = 20_000  # rows of the first file that decide each column's type
SAMPLE_BYTES = 1 << 20  # CSV read at a time for the sample: whole chunks would parse many more rows than it keeps


@dataclass(frozen=True)
class Schema:
    """The columns, in file order, and how each is stored: ``float``, ``int`` or ``string``."""

    types: dict[str, str]
    label: str
    declared: frozenset[str] = frozenset()  # columns whose type the config declared
    dialect: Dialect = PLAIN  # how CSV text is written (data.encoding, data.delimiter, data.decimal)
    dates: frozenset[str] = frozenset()  # ``float`` columns of ISO 8601 text: seconds since 1970 (UTC)
    booleans: frozenset[str] = frozenset()  # Parquet's boolean feature columns: 0 and 1 (or a gap)
    whole: dict[str, str] = field(default_factory=dict)  # ``int`` columns by nature -> what they must hold
    lacking: dict[str, int] = field(default_factory=dict)  # data.merge_columns: columns some files lack -> how many

    @property
    def columns(self) -> list[str]:
        return list(self.types)

    @property
    def classification(self) -> bool:
        return self.types[self.label] == "string"


def schema(files: list[Path], label: str, declared: dict[str, str], dialect: Dialect = PLAIN,
           merge: bool = False) -> Schema:
    """Each column's type: declared, else Parquet's own, else inferred from the first ``SAMPLE_ROWS`` rows (of the
    first file that holds it: with ``merge``, the columns of every file, as ``data.merge_columns`` reads them)."""
    import pyarrow as pa

    sample = _sample(files[0], dialect)
    if dialect.decimal == "auto":  # a grouping mark says which the decimal one is
        mark = {".": ",", ",": "."}.get(dialect.thousands) or _decimal_mark(files[0], sample, dialect)
        dialect = replace(dialect, decimal=mark)
    if label not in sample.column_names:
        raise DataError(f"{files[0]}: missing label column {label!r} (`data.label_key`); "
                        f"columns are {among(label, sample.column_names)}.")
    folders = inputs.folder_columns(files, file_columns(files[0], dialect))  # typed by every folder's value
    samples, lacking = dict(zip(sample.column_names, sample.columns)), {}
    if merge:  # every file's columns, each sampled in the first file that holds it
        owners, lacking = checks.merged_columns(files, label, dialect)
        sampled = functools.cache(lambda path: _sample(path, dialect))
        samples.update({name: sampled(path).column(name) for name, path in owners.items() if name not in samples})
    types, dates, booleans = {}, set(), set()
    for name, column in samples.items():
        if name == UNNAMED:  # a delimiter closing every line: read, but no column (``_convert`` names a value there)
            continue
        column = folders.get(name, column)
        if pa.types.is_nested(column.type):
            raise DataError(f"{files[0]}: column {name!r} holds {column.type} values; a column must hold numbers or "
                            "text (flatten it into columns of its own, or leave it out of the file)")
        if name in declared:
            types[name] = declared[name]
        elif pa.types.is_boolean(column.type) and name == label:
            types[name] = "string"  # a yes/no label is two classes, "false" and "true"
        elif (pa.types.is_integer(column.type) or pa.types.is_boolean(column.type)) and not column.null_count:
            types[name] = "int"
        elif (pa.types.is_integer(column.type) or pa.types.is_boolean(column.type) or pa.types.is_floating(column.type)
              or pa.types.is_decimal(column.type) or pa.types.is_temporal(column.type)):  # missing values: as in a CSV
            types[name] = "float"  # times and dates: seconds (cells.seconds)
            if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
                dates.add(name)  # the export takes them as ISO text too, as a CSV's dates (not durations, hours)
        else:
            types[name] = cells.kind_of(column, dialect.decimal, dialect.thousands)
            if types[name] == "date":  # a date is its time: a category of dates would not know tomorrow's
                types[name] = "float"
                dates.add(name)
        if pa.types.is_boolean(column.type) and name != label and types[name] != "string":  # a yes/no feature,
            booleans.add(name)  # declared or not: 0 and 1, which serving also takes as false and true
        if name in lacking and types[name] == "int":
            types[name] = "float"  # the rows of a file without it have gaps
    return Schema(types, label, frozenset(declared), dialect, frozenset(dates), frozenset(booleans),
                  lacking=lacking)


def _decimal_mark(path: Path, sample, dialect: Dialect) -> str:
    """``data.decimal: auto``: a point between commas (a decimal comma there is quoted, and a quoted "1,234" most
    often counts thousands) and in Parquet; between other delimiters ',' when more of the sample's text values
    are numbers with a decimal comma than with a point."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if dialect.delimiter == "," or is_parquet(path):
        return "."
    texts = [cells.text_and_missing(column)[0] for column in sample.columns if pa.types.is_string(column.type)]

    def count(pattern: str) -> int:
        return sum(int(pc.sum(pc.match_substring_regex(text, pattern)).as_py() or 0) for text in texts)

    return "," if count(r"^[+-]?\d*,\d+$") > count(r"^[+-]?\d*\.\d+$") else "."


def _sample(path: Path, dialect: Dialect):
    """The first SAMPLE_ROWS rows of ``path``: CSV as text, Parquet with its own types."""
    try:
        return _first_rows(path, dialect, min(SAMPLE_BYTES, CHUNK_BYTES))
    except DataError:  # a row longer than the sample's block, perhaps: read as the full pass reads
        return _first_rows(path, dialect, CHUNK_BYTES)


def _first_rows(path: Path, dialect: Dialect, block: int):
    import pyarrow as pa

    # A file of another dialect is named as such here, not later as one without the label.
    columns, batches, rows = checked_header(path, dialect), [], 0
    for batch in _batches(path, columns, _Ragged(path, skip=True), dialect, block=block):
        batches.append(batch)
        rows += batch.num_rows
        if rows >= SAMPLE_ROWS:
            break
    if not batches:
        return pa.table({name: pa.array([], pa.string()) for name in columns})
    return pa.Table.from_batches(batches).slice(0, SAMPLE_ROWS)


def chunks(files: list[Path], schema: Schema, on_bad_input: str) -> Iterator[tuple[object, int]]:
    """(pyarrow Table with the schema's types, bad rows skipped in it), chunk after chunk over every file.

    Raises:
        DataError: a file that cannot be read or has other columns (in any order) or types, a bad row (unless skipped),
            or a value that contradicts the sample's ``int``.
    """
    import pyarrow as pa

    for path in files:
        if not schema.lacking:  # else data.merge_columns: a column a file lacks is missing in its rows
            same_columns(path, schema.dialect, files[0], schema.columns)
        try:
            yield from _file_chunks(path, schema, on_bad_input)
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:  # a Parquet shard's own types
            raise DataError(f"{path}: its values do not convert to the types of {files[0].name}'s columns ({exc}); "
                            "every shard must hold the same types") from None


def _file_chunks(path: Path, schema: Schema, on_bad_input: str) -> Iterator[tuple[object, int]]:
    """One file's chunks: numbers parsed by the reader until a value is not one, then the rest of the file,
    from the row it stopped at, as text (where ``_convert`` names the value at fault, or skips its row)."""
    ragged = _Ragged(path, skip=on_bad_input == "skip", dialect=schema.dialect)
    first, numbers = 0, {name for name, kind in schema.types.items() if kind != "string" and name not in schema.dates}
    if schema.dialect.thousands != "none":  # pyarrow's reader parses no grouped digits: text, for cells.to_float
        numbers = set()
    while True:
        try:
            for batch in _batches(path, schema.columns, ragged, schema.dialect, numbers, skip=first + ragged.skipped,
                                  fill=bool(schema.lacking)):
                table, skipped = _convert(batch, schema, path, first, on_bad_input)
                first += batch.num_rows
                if not ragged.skip:  # a row kept here is the one pyarrow stops at on the next read: keep it to name
                    yield table, skipped
                    continue
                ragged.skipped += len(ragged.rows)
                yield table, skipped + len(ragged.rows)
                ragged.rows.clear()
            return
        except _NotNumbers:
            ragged.rows.clear()
            numbers = set()


class _Ragged:
    """pyarrow's handler for a row with too many or too few fields: skip and count it, or stop at it.

    It must not raise (pyarrow prints and ignores what a handler raises): it answers "error"
    and keeps the row, which ``_batches`` names when pyarrow stops.
    """

    def __init__(self, path: Path, skip: bool, dialect: Dialect = PLAIN):
        self.path, self.skip, self.rows, self.dialect = path, skip, [], dialect
        self.skipped = 0  # rows skipped in the chunks already read

    def __call__(self, row) -> str:
        self.rows.append(row)
        return "skip" if self.skip else "error"

    def error(self) -> DataError:
        row = self.rows[0]
        record = row.number - 1 - self.dialect.header_lines  # pyarrow counts lines from 1
        where = f"line {lines.line_of(self.path, record, self.dialect)}" if row.number else "a line"
        names = "`data.column_names` names" if self.dialect.names else "the header"
        return DataError(f"{self.path}: {where} has {row.actual_columns} fields, {names} {row.expected_columns} "
                         "(`data.on_bad_input: skip` skips bad rows and counts them).")


class _NotNumbers(Exception):
    """A CSV value that pyarrow's reader could not parse as the number its column holds."""


def _batches(path: Path, columns: list[str], ragged: _Ragged, dialect: Dialect, numbers=frozenset(), skip: int = 0,
             block: int | None = None, fill: bool = False) -> Iterator:
    """Record batches of ``path`` (``block`` bytes of CSV each, CHUNK_BYTES unless given), from its
    ``skip``-th row on: Parquet as stored, CSV parsed by pyarrow as text (types are ours to decide)
    except the columns in ``numbers``, parsed as float64 (missing values as null).

    Parsing numbers in the reader is the fast path; the first value that is not a number raises
    ``_NotNumbers``, and the caller reads the rest as text, where ``_convert`` judges each value.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    # The columns its folders name, and (data.merge_columns) those it lacks, missing in each of its rows
    with_folders = functools.partial(inputs.with_partitions, path=path, columns=columns if fill else None)
    try:
        if is_parquet(path):
            parquet = pq.ParquetFile(path)  # its footer read once, for its columns and its rows
            own = inputs.data_columns(parquet.schema_arrow.names)
            yield from map(with_folders, parquet.iter_batches(batch_size=CHUNK_ROWS, columns=own))
            return
        # A Python file, read block by block: given a path, pyarrow reads the whole file ahead of the parser.
        with open_bytes(path) as handle:
            yield from map(with_folders, pacsv.open_csv(
                handle,
                read_options=pacsv.ReadOptions(block_size=block or CHUNK_BYTES, use_threads=False,
                                              skip_rows_after_names=skip, encoding=dialect.encoding,
                                              column_names=list(dialect.names) or None),
                # Quoted values may hold line breaks (free text from a database or a spreadsheet): without this,
                # a block that ends inside one throws the parser out of step. One reader thread: it costs nothing.
                parse_options=pacsv.ParseOptions(delimiter=dialect.delimiter, invalid_row_handler=ragged,
                                                 newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={UNNAMED: pa.string(),
                                  **{c: pa.float64() if c in numbers else pa.string() for c in columns}},
                    null_values=cells.NULL_SPELLINGS, strings_can_be_null=False, quoted_strings_can_be_null=False,
                    decimal_point="," if dialect.decimal == "," else "."),  # auto: the sample reads text only
            ))
    except UnicodeDecodeError:  # by the codec of data.encoding, converting to UTF-8 for pyarrow
        raise lines.not_text(path, columns, dialect) from None
    except (pa.ArrowInvalid, *UNREADABLE) as exc:
        if ragged.rows and not ragged.skip:
            raise ragged.error() from None
        if "invalid UTF8" in str(exc):
            raise lines.not_text(path, columns, dialect) from None
        if numbers and "conversion error" in str(exc):
            raise _NotNumbers() from None
        if "straddling object" in str(exc):  # pyarrow's advice (a larger block) is no knob of ours
            raise lines.long_row(path, dialect, CHUNK_BYTES) from None
        raise cannot_read(path, exc) from None


def _convert(batch, schema: Schema, path: Path, first: int, on_bad_input: str):
    """One batch in the schema's types; bad rows dropped (or the first one raised)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    parquet = is_parquet(path)
    bad = np.zeros(batch.num_rows, dtype=bool)
    reasons: dict[int, str] = {}
    out = {}
    for name, column in zip(batch.schema.names, batch.columns):
        if name == UNNAMED:  # nothing may stand under a delimiter that closes the lines
            held = np.asarray(pc.invert(cells.text_and_missing(column)[1]))
            _flag(bad, reasons, held, name, "stands under no column name: name the column in the header", column)
            continue
        kind = schema.types[name]
        is_text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        if kind == "string":
            if not is_text or name in schema.declared:
                out[name] = pc.fill_null(pc.cast(column, pa.string()), "")
            else:
                text, missing = cells.text_and_missing(column)
                out[name] = pc.if_else(missing, "", text)
            if name == schema.label:
                _flag(bad, reasons, np.asarray(pc.equal(out[name], "")), name, "the label is missing", None)
            continue
        if is_text:
            text, missing = cells.text_and_missing(column)
            text = pc.if_else(missing, pa.scalar(None, pa.string()), text)
            numbers = (cells.iso_seconds(text) if name in schema.dates
                       else cells.to_float(text, schema.dialect.decimal, schema.dialect.thousands))
            failed = np.asarray(pc.and_(pc.is_null(numbers), pc.invert(missing)))
            _flag(bad, reasons, failed, name, "is not a date" if name in schema.dates else "is not a number", column)
        else:
            try:
                numbers = cells.seconds(column) if pa.types.is_temporal(column.type) else pc.cast(column, pa.float64())
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
                raise DataError(f"{path}: column {name!r} holds {column.type} values, which are no {kind} numbers "
                                f"(declare it with `data.dtypes: {{{name}: string}}`)") from None
            missing = pc.is_null(column)
        values = np.asarray(pc.fill_null(numbers, math.nan), dtype=np.float64)
        gaps = np.asarray(missing) & ~bad
        if name == schema.label:
            _flag(bad, reasons, gaps, name, "the label is missing", None)
        if kind == "int":
            if not is_text and pa.types.is_temporal(column.type):
                values = np.floor(values)  # a time kept in whole seconds drops fractions, as dates in text do
            _whole(values, gaps & ~bad, name, path, first, parquet, column, schema)
            out[name] = np.nan_to_num(values).astype(np.int64)
        else:
            out[name] = values.astype(np.float32)
    if bad.any() and on_bad_input == "error":
        row = min(reasons)
        where = f"row {first + row + 1}" if parquet else f"line {lines.line_of(path, first + row, schema.dialect)}"
        raise DataError(f"{path}: {where}, {reasons[row]} (`data.on_bad_input: skip` skips bad rows and counts them).")
    keep = pa.array(~bad)
    table = pa.table({n: out[n] if isinstance(out[n], (pa.Array, pa.ChunkedArray)) else pa.array(out[n])
                      for n in schema.columns})
    return (table.filter(keep) if bad.any() else table), int(bad.sum())


def _flag(bad, reasons: dict, rows, name: str, why: str, column) -> None:
    """Mark ``rows`` bad, remembering the first reason for each."""
    import numpy as np

    for i in np.flatnonzero(rows & ~bad)[:1]:  # the first is all an error message needs
        shown = f"{column[int(i)].as_py()!r} " if column is not None else ""
        where = f"column {name!r}" if name != UNNAMED else "after the last column"
        reasons.setdefault(int(i), f"{where}: {shown}{why}")
    bad |= rows


def _whole(values, gaps, name: str, path: Path, first: int, parquet: bool, column, schema: Schema) -> None:
    """An int column holds whole numbers and no gaps; otherwise stop with the declaration that fixes it."""
    import numpy as np

    fraction = ~np.isnan(values) & (np.floor(values) != values)
    wrong = np.flatnonzero(gaps | fraction)
    if not wrong.size:
        return
    i = int(wrong[0])
    where = f"row {first + i + 1}" if parquet else f"line {lines.line_of(path, first + i, schema.dialect)}"
    what = "is empty" if gaps[i] else f"is {str(column[i].as_py())!r}"  # as text, whichever way it was read
    if name in schema.whole:
        raise DataError(f"{path}: {where}, column {name!r} {what}, but it holds {schema.whole[name]}")
    origin = "declared int (`data.dtypes`)" if name in schema.declared else f"whole numbers in the first {SAMPLE_ROWS:,} rows"
    raise DataError(f"{path}: {where}, column {name!r} {what}, but the column holds {origin}: "
                    f"declare it with `data.dtypes: {{{name}: float}}`")
