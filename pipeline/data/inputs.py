"""A user's table files: the ones ``data.path`` names, a fingerprint that names the prepared copy, and a row estimate.

- ``input_files(path)``: a file, a glob (``data/*.csv``) or a folder of shards, in a stable order;
- ``partitions(path)``: the columns a partitioned table's folders name (``day=2024-01-01/``) for a file;
- ``fingerprint(files)``: a digest that changes when the input does, read as a stream;
- ``estimate_rows(files)``: for the progress bar and the count of shards, before the stream is read;
- ``read_ahead(items)``: the stream of chunks (data/sources.py) produced on a thread ahead of its reader;
- ``open_bytes(path)``, ``open_text(path, codec)``: a CSV's contents, decompressed when its name ends ``.gz``,
  ``.bz2`` or ``.xz`` (databases and buckets export tables so).
"""

from __future__ import annotations

import bz2
import contextlib
import glob
import gzip
import hashlib
import io
import lzma
import math
import re
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.errors import DataError

FULL_HASH_BYTES = 1 << 30  # larger inputs are fingerprinted by size, time and sampled blocks
SAMPLED_BLOCKS, BLOCK = 16, 1 << 16
HEAD_BYTES = 8 << 20  # CSV read to estimate the bytes per row
TABLES = (".csv", ".tsv", ".parquet")
# A CSV's compression by its name's end (data.csv.gz), each read as a stream over the open file.
DECOMPRESSORS = {".gz": lambda raw: gzip.GzipFile(fileobj=raw), ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile}
UNREADABLE = (OSError, EOFError, lzma.LZMAError, zlib.error)  # a file gone, or compressed and damaged or cut short


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def cannot_read(path: Path, exc: Exception) -> DataError:
    """One line for an error reading ``path``: the system's reason, or the first line of the reader's."""
    return DataError(f"Cannot read {path}: {getattr(exc, 'strerror', None) or str(exc).splitlines()[0]}")


def parquet_metadata(path: Path):
    """The footer of the Parquet file ``path`` (its row count and schema), read without its rows.

    Raises:
        DataError: the file is no Parquet file, or a damaged one (a shard cut short by a failed copy).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path)
    except (pa.ArrowException, OSError) as exc:
        raise cannot_read(path, exc) from None


def _is_table(path: Path) -> bool:
    name = path.name.lower()
    name = name.removesuffix(path.suffix.lower()) if path.suffix.lower() in DECOMPRESSORS else name
    return name.endswith(TABLES)


@contextlib.contextmanager
def open_bytes(path: Path, raw=None):
    """``path``'s bytes, decompressed as its name's end says (``.gz``, ``.bz2``, ``.xz``); ``raw``: the file,
    opened already (the caller's to close), where the caller also asks how far into it the stream has read."""
    with contextlib.ExitStack() as stack:
        raw = raw or stack.enter_context(open(path, "rb"))
        decompress = DECOMPRESSORS.get(path.suffix.lower())
        yield stack.enter_context(decompress(raw)) if decompress else raw


@contextlib.contextmanager
def open_text(path: Path, codec: str):
    """``path`` as text in ``codec`` (decompressed as ``open_bytes``), for Python's csv reader: undecodable bytes
    replaced, line breaks inside quoted values kept as they are."""
    with open_bytes(path) as stream, io.TextIOWrapper(stream, encoding=codec, errors="replace", newline="") as text:
        yield text


def input_files(path: str) -> list[Path]:
    """The tables ``data.path`` names: a file, a glob (``data/*.csv``) or a folder of shards, sorted by name. In a
    folder, what starts with ``.`` or ``_`` is no shard, as pyarrow and Spark see it: hidden files, a writer's
    ``_temporary`` folder of a job that died, ``_SUCCESS``.

    Raises:
        DataError: nothing found, or CSV and Parquet mixed.
    """
    given = Path(path)
    if given.is_dir():
        files = sorted(p for p in given.rglob("*") if p.is_file() and _is_table(p)
                       and not any(part.startswith(("_", ".")) for part in p.relative_to(given).parts))
        where = f"folder {path} holds no .csv, .tsv or .parquet files (a CSV may be compressed: .csv.gz, .bz2, .xz)"
    elif any(c in path for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(path, recursive=True) if Path(p).is_file())
        where = f"no file matches {path}"
    elif given.is_file():
        return [given]
    else:
        raise DataError(f"Invalid `data.path`: file not found: {path}")
    if not files:
        raise DataError(f"Invalid `data.path`: {where}")
    if len({is_parquet(f) for f in files}) > 1:
        raise DataError(f"Invalid `data.path`: {path} mixes CSV and Parquet files; keep one format")
    return files


HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # Hive's and Spark's folder for the rows whose partition value is missing


def partitions(path: Path) -> dict[str, str | None]:
    """The ``key=value`` folders right above a table file, outermost first: a table partitioned as Hive and
    Spark write one (``sales/day=2024-01-01/part-0.parquet``) holds those columns in its folders' names, not in
    its files, and pandas and pyarrow read them as columns. Values are unescaped (``%2F``); Hive's folder of
    missing values gives None."""
    from urllib.parse import unquote

    found = []
    for folder in reversed(path.parent.parts):  # the nearest first, up to the first folder of another name
        key, equals, value = folder.partition("=")
        if not equals or not key:
            break
        found.append((unquote(key), None if value == HIVE_NULL else unquote(value)))
    return dict(reversed(found))


def folder_values(path: Path, own) -> dict[str, str | None]:
    """``partitions(path)`` but the columns the file holds itself (``own``), whose values are the file's."""
    return {key: value for key, value in partitions(path).items() if key not in own}


def folder_columns(files: list[Path], own: list[str]) -> dict:
    """The columns the first file's folders name that it does not hold (``own``), each as every file's value
    (pyarrow text): what their types are inferred from, not the first file's one value."""
    import pyarrow as pa

    return {key: pa.array([partitions(f).get(key) for f in files], pa.string()) for key in folder_values(files[0], own)}


def with_partitions(batch, path: Path, columns: list[str] | None = None):
    """A pyarrow record batch of ``path`` with the columns its folders name (``partitions``) that it lacks, as text,
    and a column of nulls for each of ``columns`` it still lacks (``data.merge_columns``: read as any gap is)."""
    import pyarrow as pa

    named = folder_values(path, batch.schema.names)
    arrays, names = [*batch.columns, *(pa.repeat(pa.scalar(v, pa.string()), batch.num_rows)
                                       for v in named.values())], [*batch.schema.names, *named]
    absent = [c for c in columns or () if c not in names]
    return pa.RecordBatch.from_arrays([*arrays, *(pa.nulls(batch.num_rows) for _ in absent)], [*names, *absent])


PANDAS_INDEX = re.compile(r"__index_level_\d+__")  # the index pandas writes into Parquet beside the columns


def data_columns(names: list[str]) -> list[str]:
    """A Parquet schema's column names but pandas' unnamed index (``__index_level_0__``, written by ``to_parquet``
    of a filtered frame): pandas reads it back as the index, and as a column it would be a row number the export
    asks for."""
    return [name for name in names if not PANDAS_INDEX.fullmatch(name)]


def fingerprint(files: list[Path]) -> str:
    """SHA-256 of the input's names, sizes and bytes, read 1 MiB at a time.

    Inputs over ``FULL_HASH_BYTES`` in all are fingerprinted by each file's size, modification
    time and ``SAMPLED_BLOCKS`` blocks spread over it instead: reading 100 GB at every run would
    cost minutes, and a changed file almost always changes its size or time.
    """
    h = hashlib.sha256()
    full = sum(f.stat().st_size for f in files) <= FULL_HASH_BYTES
    for f in files:
        stat = f.stat()
        h.update(f"{f.name}:{stat.st_size}".encode())
        if values := partitions(f):  # the rows' values of its folders' columns
            h.update(repr(sorted(values.items())).encode())
        with open(f, "rb") as handle:
            if full:
                while block := handle.read(1 << 20):
                    h.update(block)
                continue
            h.update(str(stat.st_mtime_ns).encode())
            for i in range(SAMPLED_BLOCKS):
                handle.seek(stat.st_size * i // SAMPLED_BLOCKS)
                h.update(handle.read(BLOCK))
    return h.hexdigest()


def estimate_rows(files: list[Path]) -> int:
    """Rows in the input: Parquet's metadata, or the CSV bytes over the first chunk's bytes per row."""
    if is_parquet(files[0]):
        return sum(parquet_metadata(f).num_rows for f in files)
    size = sum(f.stat().st_size for f in files)
    with open(files[0], "rb") as raw, open_bytes(files[0], raw) as handle:
        head = handle.read(HEAD_BYTES)
        stored = raw.tell() if files[0].suffix.lower() in DECOMPRESSORS else len(head)  # compressed: bytes read so far
    lines = max(head.count(b"\n"), 1)
    return math.ceil(size / (max(stored, 1) / lines))


def read_ahead(items: Iterator, depth: int = 2) -> Iterator:
    """``items``, produced on a thread of their own up to ``depth`` ahead of the caller.

    The next chunk is parsed and converted (pyarrow works without the GIL) while the caller
    spills this one: the streaming pass and the spill overlap. The producer's error is raised
    here; a caller that stops early leaves at most the one chunk under way to finish.
    """
    end = object()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")  # one thread: next() in order
    try:
        ahead = deque(pool.submit(next, items, end) for _ in range(depth))
        while (item := ahead.popleft().result()) is not end:
            ahead.append(pool.submit(next, items, end))
            yield item
    finally:
        pool.shutdown(cancel_futures=True)
