"""Preparation past one machine: the csv and image_folder builders as Apache Beam pipelines.

``pipeline prepare CONFIG --beam -- RUNNER OPTIONS`` gives TFDS a ``DownloadConfig``
holding Beam's pipeline options; the two builders then prepare on Beam's workers (the
DirectRunner's processes, or Spark, Flink and Dataflow, docs/data.md) and write what the
local path writes: the same examples in TFDS's shard files, read by the same ``tfds.load``.

- Tables: each input file is read by one worker (so a table is read in parallel only when
  it comes in shards), its rows converted as the local path converts them
  (``sources.chunks``) and spread over the output shards by a seeded draw per chunk; each
  output shard is then grouped on one worker, permuted with its own seed and written in
  bulk (``records.serialize_rows``). The class names and the count of skipped rows are combined
  on the way and left in a summary file that the builder reads when the pipeline is done.
  Rows, class names and skipped count equal the local path's; which shard a row lands in
  does not (it depends on the seed and the chunk, not on the reading order).
- Image folders: TFDS's own Beam path (the generator is a ``PTransform``), with the files
  decoded on the workers.

apache-beam is the optional extra ``.[beam]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import threading
import typing
from pathlib import Path

import apache_beam as beam
import numpy as np

from pipeline.errors import DataError

SEED = 0  # the draw of each row's shard and each shard's permutation, as the local path's seed
SUMMARY = "beam-summary.json"


def options(flags: list[str]):
    """Beam's ``PipelineOptions`` from command-line flags (``--runner=FlinkRunner ...``).

    Raises:
        ValueError: a flag Beam does not know (Beam would ignore it with a warning).
    """
    import logging

    from apache_beam.options.pipeline_options import PipelineOptions

    logging.getLogger("apache_beam.options.pipeline_options").setLevel(logging.ERROR)  # unknown flags: said here once
    options = PipelineOptions(flags)
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r}")
    return options


def run(download_config, build, folder: str, shards: int) -> None:
    """Run the pipeline ``build(pipeline)`` lays out, showing the shards written to ``folder`` as they come."""
    from pipeline.text import progress

    failed: list[BaseException] = []
    done = threading.Event()

    def pipeline():
        try:
            with beam.Pipeline(runner=download_config.beam_runner, options=download_config.beam_options) as p:
                build(p)
        except BaseException as exc:  # raised again in the caller's thread
            failed.append(exc)
        finally:
            done.set()

    with running():
        threading.Thread(target=pipeline, daemon=True).start()
        for _ in progress(_written(folder, done), shards, "preparing with Beam", "shards"):
            pass
        if failed:
            raise failed[0]


@contextlib.contextmanager
def running():
    """Around a Beam pipeline: its workers quiet, and a builder's error (a bad row or file) shown as it was raised.

    Beam re-raises a worker's exception wrapped in its own, with the worker's traceback as
    text: the user's one line is the builder's message, found in it. Other failures show
    what the workers printed.
    """
    with _quiet_workers() as logs:
        try:
            yield
        except DataError:
            raise
        except Exception as exc:
            found = re.search(r"(?:pipeline\.errors\.)?DataError: (.+)", str(exc))
            if found:
                raise DataError(found.group(1).strip().strip("'\"")) from None
            if logs:
                logs.seek(0)
                sys.stderr.write(logs.read().decode("utf-8", "replace")[-20_000:])
            raise


def _written(folder: str, done: threading.Event):
    """One item per shard file that appears in ``folder``, until the pipeline is done."""
    import tensorflow as tf

    seen = 0
    while not done.wait(1.0):
        now = len(tf.io.gfile.glob(shard_path(folder, "*")))
        yield from range(now - seen)
        seen = max(seen, now)


@contextlib.contextmanager
def _quiet_workers():
    """Workers started here inherit a scratch file as their stderr (Beam's harness logs at INFO, and
    TensorFlow prints its device probe); it is shown when the pipeline fails, or always with ``-v``."""
    from pipeline import runtime

    if os.environ.get(runtime.VERBOSE):
        yield None
        return
    sys.stderr.flush()
    saved, shown = os.dup(2), sys.stderr
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)  # this process's own lines still show
        try:
            yield sink
        finally:
            sys.stderr.close()
            sys.stderr = shown
            os.dup2(saved, 2)
            os.close(saved)


# ---- tables --------------------------------------------------------------------


def write_table(pipeline, files: list[Path], schema, on_bad_input: str, stored: dict[str, str], shards: int,
                folder: str) -> None:
    """Lay out the table's preparation: files -> converted chunks -> shards written under ``folder``.

    Each written shard is ``folder/shard-NNNNN.tfrecord``; ``summary(folder)`` then gives the
    rows of each, the class names and the skipped count.
    """
    read = (pipeline
            | "Files" >> beam.Create(list(enumerate(str(f) for f in files)))
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_Read(schema, on_bad_input, shards)).with_outputs("skipped", main="rows"))
    rows = read.rows
    if schema.classification:
        names = (rows
                 | "Labels" >> beam.FlatMap(lambda item: _labels(item[1][1], schema.label))
                 | "Distinct" >> beam.Distinct()
                 | "Names" >> beam.combiners.ToList()
                 | "Sorted" >> beam.Map(sorted))
    else:
        names = pipeline | "NoNames" >> beam.Create([[]])
    written = (rows
               | "Shards" >> beam.GroupByKey()
               | "Write" >> beam.Map(_write_shard, names=beam.pvalue.AsSingleton(names), folder=folder,
                                     stored=stored, schema=schema))
    skipped = read.skipped | "Skipped" >> beam.CombineGlobally(sum)
    (pipeline
     | "One" >> beam.Create([None])
     | "Summary" >> beam.Map(_write_summary, folder=folder, lengths=beam.pvalue.AsList(written),
                             skipped=beam.pvalue.AsSingleton(skipped), names=beam.pvalue.AsSingleton(names)))


def summary(folder: str) -> tuple[list[tuple[int, int]], int, list[str]]:
    """(shard, rows) of each written shard in shard order, the skipped count and the class names."""
    import tensorflow as tf

    with tf.io.gfile.GFile(f"{folder}/{SUMMARY}") as f:
        found = json.load(f)
    tf.io.gfile.remove(f"{folder}/{SUMMARY}")
    return sorted((int(s), int(n)) for s, n in found["lengths"]), int(found["skipped"]), list(found["names"])


def shard_path(folder: str, shard: int | str) -> str:
    """Where the pipeline writes output shard ``shard`` (``"*"``: a glob of them all)."""
    return f"{folder}/shard-{shard if isinstance(shard, str) else f'{shard:05d}'}.tfrecord"


@beam.typehints.with_output_types(tuple[int, typing.Any])  # (shard, part): not inferred through records.spread
class _Read(beam.DoFn):
    """One input file -> (shard, ((file, chunk), its rows for that shard)) and, tagged, each chunk's skipped rows."""

    def __init__(self, schema, on_bad_input: str, shards: int):
        self.schema, self.on_bad_input, self.shards = schema, on_bad_input, shards

    def process(self, item):
        from pipeline.data import records, sources

        index, path = item
        for chunk, (table, bad) in enumerate(sources.chunks([Path(path)], self.schema, self.on_bad_input)):
            yield beam.pvalue.TaggedOutput("skipped", bad)
            for shard, rows in records.spread(table, np.random.default_rng([SEED, index, chunk]), self.shards):
                yield shard, ((index, chunk), rows)


def _labels(table, label: str) -> list[str]:
    import pyarrow.compute as pc

    return pc.unique(table[label]).to_pylist()


def _write_shard(item, names: list[str], folder: str, stored: dict[str, str], schema) -> tuple[int, int]:
    """One output shard: its parts in (file, chunk) order, permuted by the shard's seed, written in bulk."""
    import pyarrow as pa

    from pipeline.data import records

    shard, parts = item
    table = pa.concat_tables([rows for _, rows in sorted(parts, key=lambda part: part[0])])
    table = table.take(pa.array(np.random.default_rng([SEED, shard]).permutation(table.num_rows)))
    records.write_shard(table, shard_path(folder, shard), lambda t: records.serialize_rows(t, stored, schema, names))
    return shard, table.num_rows


def _write_summary(_, folder: str, lengths: list, skipped: int, names: list[str]) -> None:
    import tensorflow as tf

    with tf.io.gfile.GFile(f"{folder}/{SUMMARY}", "w") as f:
        json.dump({"lengths": lengths, "skipped": skipped, "names": names}, f)


# ---- image folders -------------------------------------------------------------


def images(files: list[tuple[str, Path]], example):
    """TFDS's Beam generator for an image folder: (key, example) of each readable file, made on the workers."""
    return (beam.Create([(label, str(path)) for label, path in files])
            | "Spread" >> beam.Reshuffle()
            | "Decode" >> beam.FlatMap(lambda item: example(item[0], Path(item[1]))))
