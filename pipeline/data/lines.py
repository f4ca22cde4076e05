"""Where in a CSV file a bad row is: the lines error messages name, found by reading the file again.

The streaming pass (sources.py) knows a bad row by its count of rows, pyarrow's reason and its
own; a user looks for a line. Only error paths come here, so reading up to the row is affordable.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.checks import Dialect
from pipeline.data.inputs import open_bytes, open_text
from pipeline.errors import DataError


def line_of(path: Path, record: int, dialect: Dialect) -> int:
    """The line of ``path`` its ``record``-th row under the header (from 0) starts on, for an error message.

    One line a row, so record + 2 (+ 1 without a header line), unless a quoted value before it spans lines (free
    text with line breaks): then a csv reader counts them. The bytes are searched for a quote first, which is fast.
    """
    import csv

    top = dialect.header_lines
    with open_bytes(path) as handle:
        counted = 0  # line breaks before the row: the header's and one a row
        while counted <= record and b'"' not in (block := handle.read(1 << 20)) and block:
            counted += block.count(b"\n")
        if counted > record or not block:
            return record + 1 + top
    limit = csv.field_size_limit(2**31 - 1)
    try:
        with open_text(path, dialect.codec) as handle:
            reader = dialect.reader(handle)
            for _ in range(top + record):
                next(reader, None)
            return reader.line_num + 1
    finally:
        csv.field_size_limit(limit)


def long_row(path: Path, dialect: Dialect, block: int) -> DataError:
    """The first line of the row of ``path`` that holds more than the reader's ``block`` of bytes: most often
    a quote opened and never closed, which takes the lines after it into one field."""
    import csv

    limit = csv.field_size_limit(block)
    start = 1
    try:
        with open_text(path, dialect.codec) as handle:
            reader = dialect.reader(handle)
            for _ in reader:
                start = reader.line_num + 1
    except csv.Error:
        return DataError(f"{path}: the row from line {start} on holds a value of more than {block >> 10:,} KB, "
                         "the most a row may hold (a quote opened and not closed takes in the lines after it)")
    finally:
        csv.field_size_limit(limit)
    return DataError(f"{path}: a row holds more than {block >> 10:,} KB, the most a row may hold")


def not_text(path: Path, columns: list[str], dialect: Dialect) -> DataError:
    """The first line of ``path`` that is not text in the dialect's encoding, and its column, found line by line."""
    encoding = dialect.encoding

    with open_bytes(path) as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                cells = next(dialect.reader([line.decode(encoding, errors="replace")]), [])
                at = next((i for i, cell in enumerate(cells) if "\ufffd" in cell), None)
                where = f", column {columns[at]!r}" if at is not None and at < len(columns) else ""
                return DataError(f"{path}: line {number}{where} is not {encoding} text: set data.encoding to the "
                                 "file's encoding (latin-1 or cp1252 for many spreadsheet exports)")
    return DataError(f"{path}: not {encoding} text: set data.encoding to the file's encoding")
