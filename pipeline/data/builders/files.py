"""Users' own files as TFDS datasets: ``csv`` (a CSV or Parquet table) and ``series``; folders.py has ``image_folder``.

Each prepared copy is a builder config named by a digest of the input (file
contents, or the folder's file list with sizes and times) and of the options,
so editing the input prepares a new copy and an unchanged one is reused.
Bad input stops with an error naming the file, line and column, or, with
``data.on_bad_input: skip``, is skipped and counted: the count is kept in the
dataset's metadata, then logged with every run (``data.skipped``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.dataset_builder import FileReaderBuilder

from pipeline.data import cells, inputs, records, sources
from pipeline.data.builders.local import Local
from pipeline.data.checks import PLAIN, Dialect, required_path
from pipeline.errors import DataError, DiskFullError, disk_full
from pipeline.text import progress


@dataclasses.dataclass(eq=False)
class FileConfig(tfds.core.BuilderConfig):
    path: str = ""
    label: str = ""
    dtypes: dict = dataclasses.field(default_factory=dict)
    on_bad_input: str = "error"
    image_size: tuple = (32, 32)
    channels: int = 3
    time: str = ""  # series: the column that orders the rows
    dialect: Dialect = PLAIN  # of CSV text
    merge_columns: bool = False  # shards of other columns: one table over all of them


def beam_requested(download_config) -> bool:
    """Whether TFDS was asked to prepare with Apache Beam (``pipeline prepare --beam``)."""
    return download_config is not None and (download_config.beam_options is not None
                                            or download_config.beam_runner is not None)


def file_config(cfg, fingerprint: str) -> FileConfig:
    """The builder config of a user's path: named by the input's ``fingerprint`` and the options that shape the copy."""
    d = cfg.data
    options = f"{fingerprint}|{d.label_key}|{sorted(d.dtypes.items())}|{d.on_bad_input}|{d.image_size}|{d.channels}"
    dialect = Dialect.of(d)
    # Options at their defaults are left out: the names of copies prepared before each knob stay.
    options += "".join(f"|{value}" for value, default in zip(dataclasses.astuple(dialect), dataclasses.astuple(PLAIN))
                       if value != default) + ("|merge_columns" if d.merge_columns else "")
    stem = Path(d.path.split("*")[0].rstrip("/")).stem or "table"  # data/*.csv -> data
    name = f"{stem.lower()}-{hashlib.sha256(options.encode()).hexdigest()[:12]}"
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    time = cfg.forecast.time if cfg.forecast else ""
    if time:
        name = f"{name}-{time}"
    return FileConfig(name=name, path=str(Path(d.path).resolve()), label=d.label_key,
                      dtypes=dict(d.dtypes), on_bad_input=d.on_bad_input,
                      image_size=tuple(d.image_size), channels=d.channels, time=time, dialect=dialect,
                      merge_columns=d.merge_columns)


def csv_config(cfg) -> FileConfig:
    return file_config(cfg, inputs.fingerprint(inputs.input_files(required_path(cfg))))


# ---- csv ---------------------------------------------------------------------

STORED = {"float": lambda: tfds.features.Scalar(dtype=np.float32), "int": lambda: tfds.features.Scalar(dtype=np.int64),
          "string": tfds.features.Text}


class Csv(Local, FileReaderBuilder):
    """CSV or Parquet tables: a file, a glob or a folder of shards. A text label makes classification, a number regression.

    Prepared as a stream (``sources.chunks``), written in bulk and shuffled into shards
    (``records``): time and memory grow with one chunk and two shards, not with the table.
    TFDS still owns the result: the copy is written in a temporary folder that becomes the
    dataset only once complete, so a preparation killed half way is never read.
    """

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "2.0.0": "Streamed, written in bulk, rows shuffled into shards."}
    BUILDER_CONFIGS = []

    @functools.cached_property
    def _files(self) -> list[Path]:
        return inputs.input_files(self.builder_config.path)

    @functools.cached_property
    def _schema(self) -> sources.Schema:
        c = self.builder_config
        return sources.schema(self._files, c.label, c.dtypes, c.dialect, merge=c.merge_columns)

    def _stored(self) -> dict[str, str]:
        """How each prepared column is stored: as read (the series builder adds its own)."""
        return dict(self._schema.types)

    def _convert(self, table, first_row: int):
        """A chunk as it is stored; ``first_row`` counts the rows kept before it."""
        return table

    def _info(self) -> tfds.core.DatasetInfo:
        schema = self._schema
        features = {name: STORED[kind]() for name, kind in self._stored().items()}
        if schema.classification:  # its names are the labels seen in preparation, kept with the prepared copy
            features[schema.label] = tfds.features.ClassLabel()
        return self.dataset_info_from_configs(
            description=f"Table {self.builder_config.path}",
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(),
        )

    def _download_and_prepare(self, dl_manager, download_config) -> None:
        import tensorflow as tf

        c = self.builder_config
        rows = inputs.estimate_rows(self._files)
        template = self._get_filename_template("train")
        if lacking := self._schema.lacking:  # said once, where the copy is made
            print(f"note: data.merge_columns: columns some of the {len(self._files)} files lack, missing in their rows: "
                  + ", ".join(f"{name!r} (lacked by {k})" for name, k in lacking.items()), file=sys.stderr)
        try:
            if beam_requested(download_config):
                lengths, skipped = self._prepare_with_beam(download_config, rows, template)
            else:
                lengths, skipped = self._prepare_here(rows, template)
        except OSError as exc:  # a full disk, above all: TFDS removes the half-written copy
            failure = DiskFullError if disk_full(exc) else DataError
            raise failure(f"Preparing {c.path} into {self.data_path} failed: {exc.strerror or exc}") from None
        if not lengths:
            raise DataError(f"{c.path}: no rows left to prepare ({skipped} bad rows skipped).")
        size = sum(tf.io.gfile.stat(str(p)).length for p in template.sharded_filepaths(len(lengths)))
        self.info.set_splits(tfds.core.SplitDict([
            tfds.core.SplitInfo(name="train", shard_lengths=lengths, num_bytes=size, filename_template=template)]))
        self.info.metadata["skipped"] = skipped
        self.info.metadata["dates"] = sorted(self._schema.dates)  # the export also takes them as ISO text
        self.info.metadata["booleans"] = sorted(self._schema.booleans)  # and these as true and false

    def _prepare_here(self, rows: int, template) -> tuple[list[int], int]:
        """Read the files as one stream, spread the rows over spill files, write the shards: (rows per shard, skipped)."""
        import pyarrow.compute as pc

        c, schema, files = self.builder_config, self._schema, self._files
        spill = Path(self.data_path) / "spill"
        out = records.ShuffledShards(spill, records.shard_count(rows), seed=0)
        skipped, classes, kept = 0, set(), 0
        for table, bad in progress(inputs.read_ahead(sources.chunks(files, schema, c.on_bad_input)), rows,
                                   "preparing", "rows", size=lambda item: item[0].num_rows + item[1]):
            out.add(self._convert(table, kept))
            kept += table.num_rows
            skipped += bad
            if schema.classification:
                classes.update(pc.unique(table[schema.label]).to_pylist())
        names = self._name_classes(classes)
        lengths = out.write(template.sharded_filepaths, lambda table: records.serialize_rows(table, self._stored(), schema, names))
        shutil.rmtree(spill, ignore_errors=True)
        return lengths, skipped

    def _prepare_with_beam(self, download_config, rows: int, template) -> tuple[list[int], int]:
        """The same rows prepared by a Beam pipeline (pipeline/data/beam.py): (rows per shard, skipped)."""
        import tensorflow as tf

        from pipeline.data import beam

        folder, shards = str(self.data_path), records.shard_count(rows)
        beam.run(download_config, lambda p: beam.write_table(
            p, self._files, self._schema, self.builder_config.on_bad_input, self._stored(), shards, folder),
            folder, shards)
        written, skipped, names = beam.summary(folder)
        self._name_classes(names)
        paths = template.sharded_filepaths(len(written))
        for (shard, _), path in zip(written, paths):
            tf.io.gfile.rename(beam.shard_path(folder, shard), path, overwrite=True)
        return [n for _, n in written], skipped

    def _name_classes(self, classes) -> list[str]:
        """A classification label's names: the labels seen in preparation, sorted (kept with the prepared copy)."""
        if not self._schema.classification:
            return []
        label = self.info.features[self._schema.label]
        label.names = sorted(classes)
        return label.names


class Series(Csv):
    """A user's series: a CSV or Parquet table whose ``forecast.time`` column orders the rows.

    Stored as the csv builder stores a table, plus ``_row`` (the row's position in the files, so
    that the reader can tell a time column going backwards from the hashed order TFDS keeps);
    a time column of date strings (ISO 8601, a zone if any converted to UTC) is stored as epoch seconds.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = []

    @functools.cached_property
    def _schema(self) -> sources.Schema:
        """The table's schema, but a time column of dates stays text (``_convert`` reads it to the second), and
        one of numbers holds whole seconds: truncating decimal years (as R's ``time()`` writes them) made duplicates."""
        schema, time = Csv._schema.func(self), self.builder_config.time
        if schema.classification:
            raise DataError(f"{self.builder_config.path}: the target {schema.label!r} (`data.label_key`) holds text; a "
                            "series forecasts a number (for classes, train a table: `data.dataset: csv`)")
        if time in schema.dates and not inputs.is_parquet(self._files[0]):  # Parquet's own times are seconds already
            return dataclasses.replace(schema, types={**schema.types, time: "string"}, dates=schema.dates - {time})
        if schema.types.get(time) in ("int", "float"):
            return dataclasses.replace(schema, types={**schema.types, time: "int"}, whole={time: (
                "a series' time (`forecast.time`): whole epoch seconds, or ISO 8601 dates (convert decimal years to "
                "dates)")})
        return schema

    def _download_and_prepare(self, dl_manager, download_config) -> None:
        super()._download_and_prepare(dl_manager, download_config)
        # A time column of text holds dates: errors about it then show dates (data/series.py).
        self.info.metadata["time_is_date"] = self._schema.types[self.builder_config.time] == "string"

    def _prepare_with_beam(self, download_config, rows: int, template):
        raise DataError("`pipeline prepare --beam` prepares csv and image_folder datasets; a series is prepared "
                        "here (`pipeline prepare` without --beam): its rows keep their order in the files.")

    def _stored(self) -> dict[str, str]:
        time = self.builder_config.time
        if time not in self._schema.types:
            raise DataError(f"{self.builder_config.path}: no time column {time!r} (`forecast.time`); columns are "
                            f"{', '.join(self._schema.types)}")
        return {**self._schema.types, time: "int", "_row": "int"}

    def _convert(self, table, first_row: int):
        import pyarrow as pa

        time = self.builder_config.time
        column = table[time]
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column = _epoch_seconds(column)
            except pa.ArrowInvalid:
                raise DataError(f"{self.builder_config.path}: time column {time!r} (`forecast.time`) "
                                f"{_not_iso(column)}") from None
        table = table.set_column(table.schema.get_field_index(time), time, column)
        rows = pa.array(np.arange(first_row, first_row + table.num_rows, dtype=np.int64))
        return table.append_column("_row", rows)


def _epoch_seconds(column):
    """ISO 8601 strings (``cells.iso_timestamps``: databases and JSON logs write the zone) as whole epoch
    seconds: to the second, as a series' steps are checked; fractions of a second are dropped.

    Raises:
        pyarrow.ArrowInvalid: a value is no date, or zones are given for some values only.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.divide(pc.cast(cells.iso_timestamps(column), pa.int64()), 10**9)


def _not_iso(column) -> str:
    """What keeps a text time column from being ISO 8601 times: its first value that is none (``03/15/2020``) or
    empty, else its zones, given for some values and not for others."""
    import pyarrow.compute as pc

    failed = pc.and_(pc.is_null(cells.iso_seconds(column)), pc.is_valid(column))
    first = pc.index(failed, True).as_py()
    value = column[first].as_py() if first >= 0 else None
    if value == "":
        return "has an empty cell, but every step of a series needs its time"
    if value is not None:
        return (f"holds {value!r}, which is no ISO 8601 date or time (2024-01-05, 2024-01-05T13:00:00): write its times "
                "so, or as whole epoch seconds")
    return "gives a zone (Z, +01:00) for some of its ISO 8601 times and none for others: give every one or none"


PATH_BUILDERS = {"csv": csv_config, "series": csv_config}
