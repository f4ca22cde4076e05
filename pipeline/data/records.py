"""Rows written to TFRecord shards in bulk, shuffled on the way, in the memory of two shards.

TFDS's own writer turns one Python dict per example into a ``tf.train.Example``,
which costs hundreds of microseconds for a table row (bench/README.md). Here a whole
column block becomes serialized Examples at once, assembled with NumPy in protobuf's
wire format (``serialize``), already framed as TFRecords: a shard is one write, not a
writer's call per row. TFDS reads the shards back as it reads its own.

Rows are shuffled as they are written, so that TFDS's split slices (``train[:70%]``)
take a random share of a file that may be sorted by time or by label: each row goes to
a random shard (a seeded draw), spilled to a temporary Arrow file, and each shard is
then permuted in memory before it is encoded. A uniform shuffle, in two passes, with
``WRITERS`` shards in memory at a time.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.text import progress

SHARD_ROWS = 50_000  # rows per shard: the memory of preparation is that of WRITERS shards
WRITERS = 2  # shards encoded and written at once
MAX_SHARDS = 1_000  # spill files open at once; past 50M rows the shards grow instead


def shard_count(rows: int) -> int:
    """Shards for about ``rows`` rows: SHARD_ROWS each, at least one, at most MAX_SHARDS."""
    return min(max(1, -(-rows // SHARD_ROWS)), MAX_SHARDS)


def serialize_rows(table, stored: dict[str, str], schema, names: list[str]) -> Records:
    """A converted chunk (``sources.chunks``) as serialized Examples: text as bytes, a class label as its
    index in ``names``; ``stored``: each column's kind (``float``, ``int``, ``string``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns, kinds = {}, {}
    for name, kind in stored.items():
        values = table[name]
        if name == schema.label and schema.classification:
            columns[name], kinds[name] = pc.index_in(values, value_set=pa.array(names, pa.string())).to_numpy(), "int"
        elif kind == "string":
            columns[name], kinds[name] = values, "bytes"
        else:
            columns[name], kinds[name] = values.to_numpy(), kind
    return serialize(columns, kinds)


def serialize(columns: dict[str, object], kinds: dict[str, str]) -> Records:
    """Serialized ``tf.train.Example`` messages, one per row, each holding one scalar per column:
    ``.tfrecord()`` is them as a TFRecord file, ``.messages()`` as bytes.

    An Example of scalars is, in protobuf's wire format, a few tags and lengths around each
    value, in column order: ``Example{features: Features{feature: [{key, Feature{<kind>_list:
    {value: [v]}}}, ...]}}``. So every row's message is assembled for all rows at once, with
    NumPy: the lengths of each level first, then each piece written at every row's cursor.
    The bytes are those protobuf's own encoder gives (tests/test_streaming.py compares them).

    Args:
        columns: Name -> values of equal length (float32, int64, or text as a pyarrow string
            or binary array).
        kinds: Name -> ``float``, ``int`` or ``bytes``: the value list each column is stored in.
    """
    if not len(next(iter(columns.values()))):
        return Records(np.zeros(0, dtype=np.int64))
    parts = [_Column(name, values, kinds[name]) for name, values in columns.items()]
    features = sum(1 + _varint_size(c.entry) + c.entry for c in parts)  # each entry is field 1 of Features
    out = Records(1 + _varint_size(features) + features)
    out.const(b"\x0a")  # Example.features
    out.varint(features)
    for column in parts:
        column.write(out)
    out.finish()
    return out


class _Column:
    """One column's map entry in every row: ``{key: name, value: Feature{<kind>_list: {value: [v]}}}``."""

    TAGS = {"bytes": b"\x0a", "float": b"\x12", "int": b"\x1a"}  # Feature's field of each value list

    def __init__(self, name: str, values, kind: str):
        import pyarrow as pa

        self.kind, key = kind, name.encode()
        self.key = b"\x0a" + _varint_bytes(len(key)) + key + b"\x12"  # entry.key, then entry.value's tag
        if kind == "float":
            self.values = np.asarray(values, dtype="<f4").view(np.uint8).reshape(-1, 4)
            self.payload = np.full(len(self.values), 4, dtype=np.int64)  # packed: one fixed32
        elif kind == "int":
            self.values = np.asarray(values, dtype=np.int64).astype(np.uint64)  # negatives: two's complement
            self.payload = _varint_size(self.values)
        else:
            array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
            array = array.cast(pa.binary()) if not pa.types.is_binary(array.type) else array
            offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset:array.offset + len(array) + 1]
            self.offsets = offsets.astype(np.int64)
            self.data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if len(array) else np.zeros(0, np.uint8)
            self.payload = np.diff(self.offsets)
        # value list = field 1 (tag, then a length for packed numbers and bytes alike) holding the payload
        self.list = 1 + _varint_size(self.payload) + self.payload
        self.feature = 1 + _varint_size(self.list) + self.list
        self.entry = len(self.key) + _varint_size(self.feature) + self.feature

    def write(self, out: Records) -> None:
        out.const(b"\x0a")  # Features.feature: one map entry
        out.varint(self.entry)
        out.const(self.key)
        out.varint(self.feature)
        out.const(self.TAGS[self.kind])
        out.varint(self.list)
        out.const(b"\x0a")  # the list's field 1: packed numbers or one bytes value
        out.varint(self.payload)
        if self.kind == "float":
            out.fixed(self.values)
        elif self.kind == "int":
            out.varint(self.values)
        else:
            out.spans(self.offsets, self.data)


class Records:
    """A buffer of one message per row, each of known length, written piece by piece at every row's cursor.

    Pieces that are the same in every row (tags, a key, a length that does not vary) are
    gathered and written together, and pieces of equal width in every row are written a word
    at a time (``_put``): a float column's whole prefix, then its values, in a few scatters.
    Each message has room around it for its TFRecord frame (``tfrecord``).
    """

    HEAD, TAIL = 12, 4  # TFRecord: length (8 bytes) and its masked CRC32C (4) before the message, the message's after

    def __init__(self, lengths: np.ndarray):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.bounds = np.concatenate([[0], np.cumsum(self.lengths + self.HEAD + self.TAIL)]).astype(np.int64)
        self.at = self.bounds[:-1] + self.HEAD
        self.buffer = np.zeros(int(self.bounds[-1]), dtype=np.uint8)
        # The buffer as unaligned words of 8, 4, 2 and 1 bytes starting at every byte: one scatter of
        # words writes as many bytes per row as one scatter of bytes writes one.
        self.words = {width: np.ndarray(shape=(max(len(self.buffer) - width + 1, 0),), dtype=f"<u{width}",
                                        buffer=self.buffer, strides=(1,)) for width in (8, 4, 2, 1)}
        self.pending = b""

    def __len__(self) -> int:
        return len(self.lengths)

    def const(self, data: bytes) -> None:
        self.pending += data

    def varint(self, values) -> None:
        values = np.asarray(values).astype(np.uint64)
        if values.ndim == 0 or (values == values.flat[0]).all():
            self.const(_varint_bytes(int(values.flat[0])))
            return
        self._flush()
        sizes = _varint_size(values)
        if (sizes == sizes[0]).all():  # as long in every row (the usual case): a block, written a word at a time
            size = int(sizes[0])
            block = np.empty((len(values), size), dtype=np.uint8)
            for i in range(size):
                block[:, i] = ((values >> np.uint64(7 * i)) & np.uint64(0x7F)) | np.uint64(0x80 if i < size - 1 else 0)
            self._put(block)
            return
        for i in range(int(sizes.max())):
            rows = np.flatnonzero(sizes > i) if i else slice(None)
            byte = (values[rows] >> np.uint64(7 * i)) & np.uint64(0x7F)
            more = (sizes[rows] > i + 1).astype(np.uint64) << np.uint64(7)
            self.buffer[self.at[rows] + i] = (byte | more).astype(np.uint8)
        self.at += sizes

    def fixed(self, values: np.ndarray) -> None:
        self._flush()
        self._put(values)

    def spans(self, offsets: np.ndarray, data: np.ndarray) -> None:
        """Row i gets ``data[offsets[i]:offsets[i + 1]]``."""
        self._flush()
        lengths = np.diff(offsets)
        total = int(lengths.sum())
        self.buffer[np.repeat(self.at - offsets[:-1], lengths) + np.arange(offsets[0], offsets[0] + total)] = \
            data[offsets[0]:offsets[0] + total]
        self.at += lengths

    def _flush(self) -> None:
        if self.pending:
            self._put(self.pending)
            self.pending = b""

    def _put(self, data) -> None:
        """``data`` at every row's cursor: ``bytes`` the same in every row, or a (rows, width) uint8 array.

        Word by word through the widest view that fits (a 2D index array instead would cost 8 bytes
        of index per byte written); a last word that does not fit whole overlaps the one before.
        """
        same = isinstance(data, bytes)
        size = len(data) if same else data.shape[1]
        width = next(w for w in (8, 4, 2, 1) if w <= size)
        starts = list(range(0, size - width + 1, width))
        if starts[-1] != size - width:
            starts.append(size - width)
        for start in starts:
            if same:
                word = np.frombuffer(data, dtype=f"<u{width}", count=1, offset=start)[0]
            else:
                word = np.ascontiguousarray(data[:, start:start + width]).view(f"<u{width}")[:, 0]
            self.words[width][self.at + start] = word
        self.at += size

    def finish(self) -> None:
        self._flush()
        assert np.array_equal(self.at, self.bounds[1:] - self.TAIL), "a message was written short or long"

    def _starts(self) -> list[int]:
        return (self.bounds[:-1] + self.HEAD).tolist()

    def messages(self) -> list[bytes]:
        """The rows' messages as bytes."""
        data = self.buffer.tobytes()
        return [data[start:start + n] for start, n in zip(self._starts(), self.lengths.tolist())]

    def tfrecord(self) -> bytes:
        """The rows as a TFRecord file: each message after its length and the length's masked CRC32C, before its own.

        Byte for byte what ``tf.io.TFRecordWriter`` writes (tests/test_streaming.py), without its call per row.
        """
        import google_crc32c

        crc, data, n = google_crc32c.value, self.buffer.tobytes(), len(self)
        body = np.fromiter((crc(data[start:start + size]) for start, size in zip(self._starts(), self.lengths.tolist())),
                           dtype=np.uint32, count=n)
        sizes, which = np.unique(self.lengths, return_inverse=True)  # few distinct lengths: one CRC each
        head = np.array([crc(int(size).to_bytes(8, "little")) for size in sizes], dtype=np.uint32)[which]
        self.at = self.bounds[:-1].copy()
        self.fixed(self.lengths.astype("<u8").view(np.uint8).reshape(n, 8))
        self.fixed(_masked(head).view(np.uint8).reshape(n, 4))
        self.at += self.lengths
        self.fixed(_masked(body).view(np.uint8).reshape(n, 4))
        return self.buffer.tobytes()


def _masked(crc: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC: rotated right by 15 bits, plus a constant (little-endian uint32)."""
    crc = crc.astype(np.uint32)
    return (((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)).astype("<u4")


VARINT_LIMITS = np.array([1 << (7 * i) for i in range(1, 10)], dtype=np.uint64)  # the first value of 2..10 bytes


def _varint_size(values) -> np.ndarray:
    """Bytes of each value's varint (7 bits a byte)."""
    values = np.asarray(values).astype(np.uint64)
    if values.size and values.max() < VARINT_LIMITS[0]:  # the common case, one byte each, found in one pass
        return np.ones(values.shape, dtype=np.int64)
    return np.searchsorted(VARINT_LIMITS, values, side="right") + 1


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


class ShuffledShards:
    """Spread rows over ``shards`` temporary Arrow files at random, then write each one permuted.

    ``add`` as many pyarrow tables as the input has chunks; ``write`` then encodes and writes
    the shards, skipping empty ones, and returns each written shard's row count.
    """

    def __init__(self, folder: Path, shards: int, seed: int):
        self.folder, self.shards = Path(folder), shards
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rng = np.random.default_rng(seed)
        self.writers: dict[int, object] = {}
        self.rows = np.zeros(self.shards, dtype=np.int64)

    def add(self, table) -> None:
        import pyarrow as pa

        if not table.num_rows:
            return
        for shard, rows in spread(table, self.rng, self.shards):
            if shard not in self.writers:
                self.writers[shard] = pa.ipc.new_stream(self.folder / f"{shard}.arrow", rows.schema)
            self.writers[shard].write_table(rows)
            self.rows[shard] += rows.num_rows

    def write(self, paths_for, encode) -> list[int]:
        """Write the non-empty shards to ``paths_for(count)`` (one path each); ``encode(table) -> serialized rows``.

        Shards are encoded and written a few at a time on a pool of threads (NumPy's scatters release the GIL),
        so memory holds that many shards; each one's permutation is drawn in shard order, whatever the pool.
        """
        for writer in self.writers.values():
            writer.close()
        filled = [int(s) for s in np.flatnonzero(self.rows)]
        jobs = list(zip(filled, paths_for(len(filled))))
        workers = min(WRITERS, os.cpu_count() or 1)
        parts = [jobs[start:start + workers] for start in range(0, len(jobs), workers)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for part in progress(parts, int(self.rows.sum()), "writing shards", "rows",
                                 size=lambda part: sum(int(self.rows[shard]) for shard, _ in part)):
                batch = [(shard, path, self.rng.permutation(int(self.rows[shard]))) for shard, path in part]
                list(pool.map(lambda job: self._write_one(*job, encode), batch))
        return [int(self.rows[shard]) for shard in filled]

    def _write_one(self, shard: int, path, order: np.ndarray, encode) -> None:
        import pyarrow as pa

        spill = self.folder / f"{shard}.arrow"
        with pa.ipc.open_stream(spill) as reader:
            table = reader.read_all()
        spill.unlink()
        write_shard(table.take(pa.array(order)), path, encode)


def spread(table, rng: np.random.Generator, shards: int):
    """(shard, its rows) for the shards a random draw of ``rng`` sends ``table``'s rows to, in shard order."""
    import pyarrow as pa

    target = rng.integers(shards, size=table.num_rows)
    order = np.argsort(target, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(target, minlength=shards))])
    for shard in np.flatnonzero(np.diff(starts)):
        yield int(shard), table.take(pa.array(order[starts[shard]:starts[shard + 1]]))


def write_shard(table, path, encode) -> None:
    """``encode(table)``'s serialized rows as the TFRecord file ``path``, in one write.

    Raises:
        OSError: the file cannot be written (a full disk among the reasons).
    """
    import tensorflow as tf

    try:
        content = encode(table).tfrecord()
        with tf.io.gfile.GFile(str(path), "wb") as out:
            out.write(content)
    except tf.errors.OpError as exc:  # TensorFlow's file errors are no OSError
        raise OSError(exc.message) from None
