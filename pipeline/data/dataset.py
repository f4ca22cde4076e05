"""Read a TFDS dataset into train/validation/test ``tf.data`` pipelines of named raw features.

Stages: read (TFDS, parsed in blocks: data/tfds_reader.py) -> [filter by time] -> select features
(data/columns.py; or, for a series, cut windows: data/series.py, data/windows.py) -> then data/feed.py: cache ->
seeded shuffle (train) -> batch -> cast images to float, transform the target -> augment images
(train, batch-level) -> prefetch.

Every example is ``({feature name: raw value}, label)``. Features keep their
stored dtype (uint8 pixels, float or int numbers, strings): the model owns all
preprocessing, so the export takes raw features exactly as the dataset stores
them. The statistics that preprocessing needs come from ``Splits.train_columns``,
read from the training split only.
"""

from __future__ import annotations

import hashlib
import json
import math
from contextlib import nullcontext
from pathlib import Path

from pipeline import runtime
from pipeline.config import ExperimentConfig
from pipeline.data import columns, feed, series, tfds_reader, windows
from pipeline.data.checks import named_columns, unknown_dataset
from pipeline.data.spec import DataSpec, Feature, Splits
from pipeline.errors import DataError, PipelineError
from pipeline.files import cannot_write, exclusive, temporary_root

SPLITS = ("train", "validation", "test")
MAX_STAT_VALUES = 20_000_000  # a series: window values read for them (windows overlap; 160 MB of float64)


def load(cfg: ExperimentConfig, augmenter=None, start_epoch: int = 0, replicas: int = 1) -> Splits:
    """Prepare (if needed) and read the configured dataset.

    Args:
        cfg: The experiment config; ``cfg.data`` names the dataset and the splits.
        augmenter: Keras layer applied to training images only; default none.
        start_epoch: First epoch of the training stream (a resumed run starts after its last epoch).
        replicas: Replicas in sync; with ``data.batch_scope: per_replica`` the global batch grows with them.

    Raises:
        DataError: unknown dataset, bad split spec, a missing feature, or bad input files.
    """
    from pipeline.tasks import task_for
    from pipeline.train.strategy import global_batch

    raw, info, sizes = _read(cfg)
    if cfg.forecast:  # windows of a series, split by time
        spec, examples, (train_columns, validation_columns), values = _series(cfg, info, raw[0])
        task = task_for(cfg, spec)
    else:
        spec = _spec(cfg, info, sizes)
        task = task_for(cfg, spec)
        examples = [columns.pairs(ds, spec) for ds in raw]
        train_columns, validation_columns, values = columns.train_columns(raw[0], spec, task), None, None
    n = spec.sizes["train"]
    batch = global_batch(auto_batch(n) if cfg.data.batch_size == "auto" else cfg.data.batch_size,
                         cfg.data.batch_scope, replicas)
    datasets = {
        name: feed.stages(ds, cfg, spec, task, name, augmenter, start_epoch, batch, spec.sizes[name])
        for name, ds in zip(SPLITS, examples)
    }
    steps = n // batch if cfg.data.drop_remainder else -(-n // batch)
    if steps < 1:
        raise DataError(f"The training split has {n} examples, fewer than one batch of {batch} (`data.batch_size`).")
    columns.check_labels(spec, train_columns[spec.label])
    files, train_for = 0, None
    if not (cfg.forecast or cfg.data.time_split):  # a series or a time cut is one stream, not files to split
        files = len(info.splits[cfg.data.splits.train].file_instructions)

        def train_for(context):
            """One worker's training stream: only its share of the split's files (TFDS splits them by the
            context), ``steps`` batches of its share of the global batch every epoch, whatever its rows."""
            raw, _, _ = _read(cfg, input_context=context)
            return feed.stages(columns.pairs(raw[0], spec), cfg, spec, task, "train", augmenter, start_epoch,
                               batch // context.num_input_pipelines, n // context.num_input_pipelines, steps=steps)

    return Splits(**datasets, spec=spec, train_columns=train_columns, steps_per_epoch=steps, global_batch=batch,
                  series=values, validation_columns=validation_columns, train_files=files, train_for=train_for)


def is_prepared(cfg: ExperimentConfig) -> bool:
    """Whether the configured dataset is prepared under ``data.data_dir``, asked without TensorFlow.

    TFDS moves a prepared dataset into place only once it is whole, so a killed preparation reads
    as not prepared. A dataset that cannot be named (an unknown builder, an unreadable path) is not
    prepared either: preparing it says why, in one line. So is one in a bucket (``gs://``), which only
    TensorFlow's file systems reach: ``prepare`` asks there, with TensorFlow's start-up kept quiet.
    """
    if not _local(cfg):
        return False
    runtime.quiet_loggers()
    try:
        return _builder(cfg).is_prepared()
    except Exception:  # noqa: BLE001 - reported by the preparation that follows
        return False


def _builder(cfg: ExperimentConfig):
    """The configured dataset's TFDS builder (building one needs no TensorFlow)."""
    import tensorflow_datasets as tfds

    from pipeline.data.builders import builder_kwargs

    return tfds.builder(cfg.data.dataset, data_dir=cfg.data.data_dir, **builder_kwargs(cfg))


def _local(cfg: ExperimentConfig) -> bool:
    """Whether ``data.data_dir`` is on this machine (not a bucket that only TensorFlow's file systems reach)."""
    return "://" not in cfg.data.data_dir


def prepare(cfg: ExperimentConfig, beam_options=None) -> None:
    """Prepare the dataset if it is not yet (so that several processes can then read it).

    ``beam_options``: Beam's ``PipelineOptions``; the builder then prepares as a Beam pipeline.
    """
    _read(cfg, beam_options, read=False)


def describe(cfg: ExperimentConfig, beam_options=None) -> DataSpec:
    """Prepare the dataset if needed (``beam_options`` as for ``prepare``) and return its spec (features, split
    sizes, digest), without reading the training split's columns as ``load`` does for preprocessing (a series
    is read: its windows are counted on it)."""
    if cfg.forecast:
        prepare(cfg, beam_options)
        return load(cfg).spec
    _, info, sizes = _read(cfg, beam_options)
    spec = _spec(cfg, info, sizes)
    columns.check_labels(spec)
    return spec


def sample_signals(cfg: ExperimentConfig, n: int):
    """("image" or "audio", the first ``n`` raw training examples of the first such feature) (for previews)."""
    import numpy as np
    import tensorflow_datasets as tfds

    raw, info, _ = _read(cfg)  # no DataSpec: it would hash every record file for nothing
    names = cfg.data.columns or list(info.features)
    name = next((n for n in names if isinstance(info.features[n], (tfds.features.Image, tfds.features.Audio))), None)
    if name is None:
        raise DataError(f"Dataset {info.name} has no image or audio feature to preview.")
    kind = "audio" if isinstance(info.features[name], tfds.features.Audio) else "image"
    return kind, np.stack([ex[name] for ex in raw[0].take(n).as_numpy_iterator()])


def training_images(cfg: ExperimentConfig, names: list[str], n: int) -> dict:
    """The first ``n`` raw training images of each feature in ``names`` (not augmented), for the pixel baseline."""
    import numpy as np

    raw, _, _ = _read(cfg)
    batches = raw[0].map(lambda ex: {k: ex[k] for k in names}).take(n).batch(4096).as_numpy_iterator()
    parts = list(batches)
    return {k: np.concatenate([p[k] for p in parts]) for k in names}


def _read(cfg: ExperimentConfig, beam_options=None, input_context=None, read: bool = True):
    """Prepare the dataset if needed, read the three splits (or the time-ordered thirds of one split), check the keys.

    ``input_context``: one worker's; TFDS then reads only that worker's share of the training split's files.
    ``read``: False to prepare and check only (``pipeline prepare``): no datasets are returned.
    """
    import numpy as np
    import tensorflow_datasets as tfds

    tfds.display_progress_bar(False)
    time_split = cfg.data.time_split
    splits = [time_split.split] * 3 if time_split else [getattr(cfg.data.splits, s) for s in SPLITS]
    if cfg.forecast:
        splits = ["train"]  # the whole series, cut by time (data/series.py)
    if input_context is not None:
        splits = [cfg.data.splits.train]
    # Given Beam's options, the builder prepares as a Beam pipeline (pipeline/data/beam.py).
    beam = None if beam_options is None else {"download_config": tfds.download.DownloadConfig(beam_options=beam_options)}

    def load(builder=None):
        with runtime.library_prints_hidden(), temporary_root("pipeline-beam-") if beam else nullcontext():
            builder = builder or _builder(cfg)
            builder.download_and_prepare(**(beam or {}))
        try:
            infos = [builder.info.splits[split] for split in splits]
        except (ValueError, AssertionError) as exc:  # TFDS's word on a split it cannot parse or does not have
            raise DataError(f"Invalid `data.splits` {splits}: {str(exc).splitlines()[0]}") from None
        if not read:
            return infos, builder.info  # the split specs checked
        for split, info in zip(splits, infos):
            if not info.num_examples:
                total = sum(info.num_examples for info in builder.info.splits.values())
                raise DataError(f"The split {split!r} holds none of the {total} examples: too few to split into "
                                "train, validation and test (`data.splits`)")
        # Not TFDS's cache of a dataset under 250 MiB: one tensor per value, about 3 KB a table row (1.5 GB
        # more at 500k rows, bench/README.md); the feed caches what it keeps, in blocks (data.cache).
        read_config = tfds.ReadConfig(shuffle_seed=cfg.seed, input_context=input_context, try_autocache=False)
        return [tfds_reader.read(builder, split, read_config) for split in splits], builder.info

    # Processes preparing one dataset at once (runs started together, workers, trials) would each write
    # its files and break each other's: one prepares while the others wait, then they read its files.
    # A prepared dataset is whole and never written again (TFDS moves it into place at the end), so it is
    # read without the lock: a team's copy on a read-only mount serves every run.
    try:
        with runtime.library_prints_hidden():
            builder = _builder(cfg)
        if builder.is_prepared():
            datasets, info = load(builder)
        else:
            if _local(cfg) and (reason := cannot_write(cfg.data.data_dir)):
                raise DataError(f"Invalid `data.data_dir`: cannot write in {cfg.data.data_dir} ({reason}) to prepare "
                                f"{cfg.data.path or cfg.data.dataset} there: prepare it with write access there "
                                "(`pipeline prepare`), or set `data.data_dir` to a writable folder")
            with exclusive(Path(cfg.data.data_dir) / f".{cfg.data.dataset}.lock" if _local(cfg) else None):
                try:
                    datasets, info = load()  # a new builder: another process may have prepared it meanwhile
                except FileExistsError:  # prepared first by a process on another machine: read theirs
                    datasets, info = load()
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(unknown_dataset(cfg)) from None
    except PipelineError as exc:  # a builder's own error, which TFDS prefixes with "Failed to construct ...": drop that
        raise type(exc)(exc.message) from None
    named_columns(cfg, [name for name in info.features if name != series.ROW], info.name)  # not the builder's own
    if time_split and np.dtype(info.features[time_split.column].np_dtype).kind not in "iuf":
        raise DataError(f"Invalid `data.time_split.column`: {time_split.column!r} holds text, not times; it must hold "
                        "numbers or ISO 8601 dates (2020-12-31), which are read as seconds")
    sizes = None
    if time_split and read:
        datasets, sizes = _split_by_time(datasets[0], time_split)
    return datasets, info, sizes


def _split_by_time(ds, time_split):
    """Train on the earliest examples: cut one split at quantiles of its time column.

    Returns the three filtered datasets and their sizes (counted on the column, not by reading them).
    """
    import numpy as np
    import tensorflow as tf

    column = time_split.column
    batches = columns.blockwise(ds, lambda ex: ex[column]).batch(8192).as_numpy_iterator()  # one Python step per 8192
    times = np.concatenate([np.zeros(0), *(b.astype(np.float64) for b in batches)])
    if missing := int(np.isnan(times).sum()):  # such a row is neither before nor after a cut: every split came out empty
        raise DataError(f"Invalid `data.time_split.column`: {column!r} is missing in {missing:,} of {len(times):,} rows; "
                        "a split by time needs a time on every row (fill them, or leave those rows out of the file)")
    lo, hi = np.quantile(times, [time_split.validation, time_split.test])

    def between(low, high):
        return lambda ex: tf.logical_and(tf.cast(ex[column], tf.float64) >= low, tf.cast(ex[column], tf.float64) < high)

    bounds = [(-np.inf, lo), (lo, hi), (hi, np.inf)]
    sizes = {name: int(((times >= a) & (times < b)).sum()) for name, (a, b) in zip(SPLITS, bounds)}
    return [ds.filter(between(a, b)) for a, b in bounds], sizes


def _spec(cfg: ExperimentConfig, info, time_split_sizes: dict | None) -> DataSpec:
    import numpy as np
    import tensorflow_datasets as tfds

    label = info.features[cfg.data.label_key]
    names = [n for n in cfg.data.columns or info.features if n != cfg.data.label_key and n not in cfg.data.exclude]
    metadata = info.metadata or {}
    features, dates, booleans = [], set(metadata.get("dates", [])), set(metadata.get("booleans", []))
    for name in names:
        feature = info.features[name]
        np_dtype = np.dtype(feature.np_dtype)
        dtype = "string" if np_dtype.kind in "OSU" else np_dtype.name
        if isinstance(feature, tfds.features.Audio):
            kind = "audio"
        elif isinstance(feature, tfds.features.Image):
            if any(d is None for d in feature.shape):
                raise DataError(f"Feature {name!r} has images of varying size {feature.shape}; prepare them resized.")
            kind = "image"
        else:
            kind = "categorical" if dtype == "string" else "numeric"
        kind = cfg.features.kinds.get(name, kind)
        features.append(Feature(name, kind, dtype, tuple(feature.shape), date=name in dates, boolean=name in booleans))
    classification = isinstance(label, tfds.features.ClassLabel)
    split_specs = {name: getattr(cfg.data.splits, name) for name in SPLITS}
    if cfg.data.time_split:
        t = cfg.data.time_split
        bounds = {"train": f"[0, {t.validation})", "validation": f"[{t.validation}, {t.test})", "test": f"[{t.test}, 1]"}
        split_specs = {name: f"{t.split} by {t.column} quantiles {bounds[name]}" for name in SPLITS}
        sizes = time_split_sizes
    else:
        sizes = {name: info.splits[s].num_examples for name, s in split_specs.items()}
    return DataSpec(
        name=info.name,
        version=str(info.version),
        splits=split_specs,
        sizes=sizes,
        digest=_digest(info, {**split_specs, "time_split": str(cfg.data.time_split)}),
        features=tuple(features),
        label=cfg.data.label_key,
        task="classification" if classification else "regression",
        num_classes=label.num_classes if classification else 0,
        class_names=list(label.names) if classification else [],
        skipped=int((info.metadata or {}).get("skipped", 0)),
        example_bytes=sum(s.num_bytes for s in info.splits.values()) / max(info.splits.total_num_examples, 1),
    )


def _series(cfg: ExperimentConfig, info, ds):
    """(DataSpec, the three splits' windows, (training-window columns, validation-window columns), the series) of a
    series (data/series.py)."""
    import numpy as np

    fc, target, metadata = cfg.forecast, cfg.data.label_key, info.metadata or {}
    dates = bool(metadata.get("time_is_date"))  # then a request's time window may be ISO 8601 text, as the file was
    values = series.read(ds, cfg, dates=dates)
    cut = {split: windows.dataset(values, cfg, split) for split in SPLITS}
    lengths = windows.inputs(cfg)
    features = tuple(Feature(n, "calendar" if n == fc.time else "sequence", "int64" if n == fc.time else "float32",
                             (length,), date=dates and n == fc.time) for n, length in lengths.items())
    if fc.series_id:  # which series a window is of: a categorical input
        stored = "string" if values.ids.dtype.kind in "SUO" else "int64"
        features = (Feature(fc.series_id, "categorical", stored), *features)
    shares = {"train": f"[0, {1 - fc.test - fc.validation:g})", "validation": f"[{1 - fc.test - fc.validation:g}, "
              f"{1 - fc.test:g})", "test": f"[{1 - fc.test:g}, 1]"}
    bounds = {s: f"labels in the shares {shares[s]} of {len(values.segments)} series up to {fc.end:g} of each, "
              f"{len(values)} steps" for s in SPLITS}
    spec = DataSpec(
        name=info.name, version=str(info.version), splits=bounds, sizes={s: n for s, (_, n) in cut.items()},
        digest=_digest(info, {**bounds, "forecast": fc.model_dump_json(exclude={"folds", "bootstrap", "min_skill"})}),
        features=features,
        label=windows.label_name(target), task="forecasting", skipped=int(metadata.get("skipped", 0)),
        example_bytes=4.0 * (sum(lengths.values()) + fc.horizon))
    most = max(1000, min(columns.MAX_STAT_ROWS, MAX_STAT_VALUES // sum(lengths.values())))

    def columns_of(split: str) -> dict:  # evenly spaced windows: the statistics' (training), the linear start's alpha's
        at = windows.starts(values, cfg, split)
        if len(at) > most:
            at = at[np.linspace(0, len(at) - 1, most).astype(int)]
        inputs, labels = windows.window_arrays(values, cfg, at)
        return {**inputs, spec.label: labels}

    held_out = columns_of("validation") if cfg.model.wide else None  # only a wide model's start reads them
    return spec, [ds for ds, _ in cut.values()], (columns_of("train"), held_out), values


def _digest(info, split_specs: dict[str, str]) -> str:
    """SHA-256 of the prepared record files plus the split specs: same digest, same data."""
    import tensorflow as tf

    h = hashlib.sha256(json.dumps(split_specs, sort_keys=True).encode())
    for name in sorted(tf.io.gfile.listdir(info.data_dir)):
        if name.startswith(f"{info.name}-"):
            h.update(name.encode())
            with tf.io.gfile.GFile(f"{info.data_dir}/{name}", "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()


def auto_batch(rows: int) -> int:
    """``data.batch_size: auto``: about 50 steps an epoch. Small tables measured better with more,
    smaller steps than one batch size fits all (bench/README.md, tables)."""
    return min(256, max(8, 2 ** int(math.log2(max(rows // 50, 1)))))
