"""Rows written to TFRecord shards in bulk, shuffled on the way, in the memory of two shards.

TFDS's own writer turns one Python dict per example into a ``tf.train.Example``,
which costs hundreds of microseconds for a table row (bench/README.md). Here a whole
column block becomes serialized Examples in one TensorFlow call: ``tf.io.encode_proto``
builds each level of the message (value list, Feature, map entry, Features, Example)
for every row at once, in C++. TFDS reads the shards back as it reads its own.

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

SHARD_ROWS = 50_000  # rows per shard: the memory of preparation is that of WRITERS shards
WRITERS = 2  # shards encoded and written at once
MAX_SHARDS = 1_000  # spill files open at once; past 50M rows the shards grow instead
LISTS = {"float": ("float_list", "FloatList", np.float32), "int": ("int64_list", "Int64List", np.int64),
         "bytes": ("bytes_list", "BytesList", object)}


def shard_count(rows: int) -> int:
    """Shards for about ``rows`` rows: SHARD_ROWS each, at least one, at most MAX_SHARDS."""
    return min(max(1, -(-rows // SHARD_ROWS)), MAX_SHARDS)


def serialize(columns: dict[str, np.ndarray], kinds: dict[str, str]) -> np.ndarray:
    """Serialized ``tf.train.Example`` bytes, one per row, each holding one scalar per column.

    Args:
        columns: Name -> values of equal length (float32, int64, or text as bytes or str).
        kinds: Name -> ``float``, ``int`` or ``bytes``: the value list each column is stored in.
    """
    import tensorflow as tf

    n = len(next(iter(columns.values())))
    one = tf.ones([n, 1], tf.int32)

    def message(kind: str, fields: list[str], values: list) -> tf.Tensor:
        return tf.io.encode_proto(tf.ones([n, len(fields)], tf.int32), [v[:, None] for v in values], fields,
                                  f"tensorflow.{kind}")

    entries = []
    for name, values in columns.items():
        field, kind, dtype = LISTS[kinds[name]]
        value_list = message(kind, ["value"], [tf.constant(np.asarray(values, dtype=dtype))])
        feature = message("Feature", [field], [value_list])
        entries.append(message("Features.FeatureEntry", ["key", "value"], [tf.fill([n], name), feature]))
    features = tf.io.encode_proto(tf.fill([n, 1], len(entries)), [tf.stack(entries, axis=1)], ["feature"],
                                  "tensorflow.Features")
    return tf.io.encode_proto(one, [features[:, None]], ["features"], "tensorflow.Example").numpy()


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
        target = self.rng.integers(self.shards, size=table.num_rows)
        order = np.argsort(target, kind="stable")
        counts = np.bincount(target, minlength=self.shards)
        starts = np.concatenate([[0], np.cumsum(counts)])
        for shard in np.flatnonzero(counts):
            rows = table.take(pa.array(order[starts[shard]:starts[shard + 1]]))
            if shard not in self.writers:
                self.writers[shard] = pa.ipc.new_stream(self.folder / f"{shard}.arrow", rows.schema)
            self.writers[shard].write_table(rows)
            self.rows[shard] += rows.num_rows

    def write(self, paths_for, encode) -> list[int]:
        """Write the non-empty shards to ``paths_for(count)`` (one path each); ``encode(table) -> serialized rows``.

        Shards are encoded and written a few at a time on a pool of threads (TensorFlow's ops release the GIL),
        so memory holds that many shards; each one's permutation is drawn in shard order, whatever the pool.
        """
        for writer in self.writers.values():
            writer.close()
        filled = [int(s) for s in np.flatnonzero(self.rows)]
        jobs = list(zip(filled, paths_for(len(filled))))
        workers = min(WRITERS, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(jobs), workers):
                batch = [(shard, path, self.rng.permutation(int(self.rows[shard])))
                         for shard, path in jobs[start:start + workers]]
                list(pool.map(lambda job: self._write_one(*job, encode), batch))
        return [int(self.rows[shard]) for shard in filled]

    def _write_one(self, shard: int, path, order: np.ndarray, encode) -> None:
        import pyarrow as pa
        import tensorflow as tf

        spill = self.folder / f"{shard}.arrow"
        with pa.ipc.open_stream(spill) as reader:
            table = reader.read_all()
        spill.unlink()
        table = table.take(pa.array(order))
        try:
            with tf.io.TFRecordWriter(str(path)) as out:
                for record in encode(table):
                    out.write(record)
        except tf.errors.OpError as exc:  # TensorFlow's file errors (a full disk among them) are no OSError
            raise OSError(exc.message) from None
