"""The ``tf.data`` stages after reading: cache, shuffle each epoch, batch, decode, augment, prefetch.

``stages`` turns a split's (features, label) examples into what ``fit`` reads: a split is
cached (in memory, in a file or not at all, by ``data.cache``), the training split is
shuffled anew each epoch with a seed of its own (so a resumed run sees the batches an
uninterrupted one would), images are cast and augmented in chunks, and the target is
transformed by the task.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from pathlib import Path

from pipeline.config import ExperimentConfig
from pipeline.data import columns
from pipeline.files import process_folder

CACHE_BLOCK = 1024  # examples per cached element (bench/README.md, "Tables as they grow")


def stages(ds, cfg: ExperimentConfig, spec, task, split: str, augmenter, start_epoch: int, batch: int, rows: int,
           steps: int | None = None):
    """cache -> (training: per-epoch shuffle, augment) -> batch -> decode -> prefetch, over (features, label) examples.

    ``rows``: the examples ``ds`` holds. ``steps``, for one worker reading its own files (of about
    ``rows`` examples): the batches of each epoch, the same for every worker; tf.distribute then
    leaves its batches whole. Without it, the workers split each batch (DATA).
    """
    import tensorflow as tf

    training = split == "train"
    auto = tf.data.AUTOTUNE
    images = [f.name for f in spec.features if f.kind == "image"]
    mode = cache_mode(cfg, rows * spec.example_bytes, _free_disk(Path(cfg.workdir)), cut=spec.task == "forecasting")
    if mode != "none":
        # Cached in blocks: tf.data spends about as much per cached tensor as a table row holds (and a
        # cache file indexes each one), so one tensor per column per block, not per example.
        where = str(_cache_folder(cfg) / f"{split}-{next(_CACHES)}") if mode == "file" else ""  # never another's
        ds = ds.batch(CACHE_BLOCK).cache(where).unbatch()
        if steps is None:  # one worker's files hold about ``rows``: no exact count to assert
            ds = ds.apply(tf.data.experimental.assert_cardinality(rows))  # which unbatch forgets

    @tf.autograph.experimental.do_not_convert  # plain TensorFlow ops: nothing for autograph to rewrite
    def decode(x, y):
        x = {n: tf.cast(v, tf.float32) if n in images else v for n, v in columns.unpacked(x, spec).items()}
        return x, task.target(y)

    augment, chunk = None, batch
    if training and augmenter is not None and images:
        @tf.autograph.experimental.do_not_convert  # Keras layers run in graphs as they are
        def augment(x, y):
            return {n: augmenter(v, training=True) if n in images else v for n, v in x.items()}, y

        pixels = sum(math.prod(f.shape) for f in spec.features if f.kind == "image")
        chunk = max(batch, cfg.augment.chunk if cfg.augment.chunk != "auto" else min(2048, (8 << 20) // (4 * pixels)))
    if training:
        ds = _epochs(ds, cfg, start_epoch, batch, decode, augment, chunk, steps)
    else:
        ds = ds.batch(batch, num_parallel_calls=auto).map(decode, num_parallel_calls=auto)
    options = tf.data.Options()
    options.deterministic = cfg.deterministic
    options.threading.private_threadpool_size = cfg.data.threads or max(1, (os.cpu_count() or 2) // 2)
    # Workers split batches (DATA), unless each reads its own files (``train_for``, FILE sharding by TFDS).
    options.experimental_distribute.auto_shard_policy = (tf.data.experimental.AutoShardPolicy.DATA if steps is None
                                                         else tf.data.experimental.AutoShardPolicy.OFF)
    return ds.with_options(options).prefetch(auto)


def cache_mode(cfg: ExperimentConfig, split_bytes: float, free_disk: int, cut: bool = False) -> str:
    """Where a split's examples are kept after the first epoch: ``memory``, ``file`` or ``none``.

    ``data.cache: auto`` keeps a split in memory when it fits ``data.cache_memory_mb``, else in a
    file under the workdir when the disk has twice its size free, else reads the prepared
    shards again each epoch (which TFDS streams with bounded memory). Examples ``cut`` from data
    already in memory (a series' windows) are cut again: a cache would hold each step once per
    window that sees it, and save no time (bench/README.md, series at 1M steps).
    """
    mode = {True: "memory", False: "none"}.get(cfg.data.cache, cfg.data.cache)  # older configs: true / false
    if mode != "auto":
        return mode
    if cut:
        return "none"
    if split_bytes <= cfg.data.cache_memory_mb * 2**20:
        return "memory"
    return "file" if 2 * split_bytes < free_disk else "none"


def _cache_folder(cfg: ExperimentConfig) -> Path:
    """This process's cache files: its own folder (tf.data locks a cache being written), removed at exit."""
    global _CACHE
    if _CACHE is None:
        _CACHE = process_folder(f"{os.getpid()}-", Path(cfg.workdir) / "cache")
    return _CACHE


_CACHE: Path | None = None
_CACHES = itertools.count()


def _free_disk(path: Path) -> int:
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _epochs(examples, cfg: ExperimentConfig, start_epoch: int, size: int, decode, augment, chunk: int,
            steps: int | None = None):
    """Endless decoded batches, epoch by epoch, each epoch shuffled with a seed made of (seed, epoch).

    The order of epoch e depends on nothing else, so a run resumed at epoch e sees the same
    batches as one that never stopped (a reshuffling dataset would restart its sequence).
    Batches never straddle two epochs. Augmentation runs on chunks of ``chunk`` images, then
    the chunks are re-batched: one call of the Keras layers costs about the same for 32 small
    images as for 512, so per image it is several times cheaper. With ``steps``, every epoch is
    exactly that many batches, the examples taken again from the start if they run short: each
    worker of a synchronous all-reduce must run the same steps, whatever its files hold.
    """
    import tensorflow as tf

    auto = tf.data.AUTOTUNE
    buffer = cfg.data.shuffle_buffer
    # Random layers carry seed state: parallel calls would draw it in a racy order,
    # so a deterministic run augments chunks one at a time (prefetch still overlaps it).
    parallel = None if cfg.deterministic else auto

    @tf.autograph.experimental.do_not_convert  # Python decides on Python values only
    def epoch(e):
        ordered = examples.shuffle(buffer, seed=cfg.seed * 100_003 + e) if buffer else examples
        if steps is not None:
            ordered = ordered.repeat().take(steps * size)
        if augment is None:
            return ordered.batch(size, drop_remainder=cfg.data.drop_remainder).map(decode, num_parallel_calls=auto)
        chunks = ordered.batch(chunk).map(decode, num_parallel_calls=auto)
        return chunks.map(augment, num_parallel_calls=parallel).rebatch(size, drop_remainder=cfg.data.drop_remainder)

    return tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch)
