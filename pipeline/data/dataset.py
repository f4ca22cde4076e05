"""Read a TFDS dataset into train/validation/test ``tf.data`` pipelines.

Stages: read (tfds.load) -> select features -> cache -> seeded shuffle (train)
-> batch -> cast to float -> augment (train, batch-level) -> prefetch.
Pixels stay on their stored scale: the model owns normalisation, so the
exported model takes raw pixels exactly as the dataset stores them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import ExperimentConfig
from pipeline.errors import DataError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DataSpec:
    """What the model, the tracker and the export need to know about the data."""

    name: str
    version: str
    splits: dict[str, str]
    sizes: dict[str, int]
    digest: str
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: str
    num_classes: int
    class_names: list[str] = field(default_factory=list)


@dataclass
class Splits:
    train: Any
    validation: Any
    test: Any
    spec: DataSpec


def load(cfg: ExperimentConfig, augmenter=None) -> Splits:
    """Prepare (if needed) and read the configured TFDS dataset.

    Args:
        cfg: The experiment config; ``cfg.data`` names the dataset and the splits.
        augmenter: Keras layer applied to training batches only; default none.

    Raises:
        DataError: unknown dataset, bad split spec, or a feature key it does not have.
    """
    raw, info = _read(cfg)
    spec = _spec(cfg, info)
    datasets = {
        name: _pipeline(ds, cfg, training=name == "train", augmenter=augmenter)
        for name, ds in zip(SPLITS, raw)
    }
    return Splits(**datasets, spec=spec)


def sample_images(cfg: ExperimentConfig, n: int):
    """The first ``n`` raw training images as a NumPy array (for previews)."""
    import numpy as np

    (train, *_), _ = _read(cfg)
    images = [ex[cfg.data.image_key] for ex in train.take(n).as_numpy_iterator()]
    return np.stack(images)


def _read(cfg: ExperimentConfig):
    import tensorflow_datasets as tfds

    import pipeline.data.builders  # noqa: F401  (registers the built-in builders)

    tfds.display_progress_bar(False)

    splits = [getattr(cfg.data.splits, name) for name in SPLITS]
    try:
        datasets, info = tfds.load(
            cfg.data.dataset,
            split=splits,
            data_dir=cfg.data.data_dir,
            with_info=True,
            shuffle_files=False,
            read_config=tfds.ReadConfig(shuffle_seed=cfg.seed, add_tfds_id=False),
        )
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(
            f"Unknown dataset `data.dataset`: {cfg.data.dataset!r}. Use a TFDS catalogue name or a "
            f"built-in one (digits), prepared under `data.data_dir` ({cfg.data.data_dir})."
        ) from None
    except (ValueError, AssertionError) as exc:
        raise DataError(f"Invalid `data.splits` {splits}: {str(exc).splitlines()[0]}") from None
    for key in ("image_key", "label_key"):
        name = getattr(cfg.data, key)
        if name not in info.features:
            raise DataError(
                f"Invalid `data.{key}`: {name!r} is not a feature of {info.name}; "
                f"it has {', '.join(info.features)}."
            )
    return datasets, info


def _spec(cfg: ExperimentConfig, info) -> DataSpec:
    import numpy as np

    image = info.features[cfg.data.image_key]
    label = info.features[cfg.data.label_key]
    if any(d is None for d in image.shape):
        raise DataError(f"`data.image_key` {cfg.data.image_key!r} has images of varying size {image.shape}.")
    split_specs = {name: getattr(cfg.data.splits, name) for name in SPLITS}
    return DataSpec(
        name=info.name,
        version=str(info.version),
        splits=split_specs,
        sizes={name: info.splits[s].num_examples for name, s in split_specs.items()},
        digest=_digest(info, split_specs),
        input_name=cfg.data.image_key,
        input_shape=tuple(image.shape),
        input_dtype=np.dtype(image.np_dtype).name,
        num_classes=label.num_classes,
        class_names=list(label.names),
    )


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


def _pipeline(ds, cfg: ExperimentConfig, training: bool, augmenter):
    import tensorflow as tf

    auto = tf.data.AUTOTUNE
    image_key, label_key = cfg.data.image_key, cfg.data.label_key
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key]), num_parallel_calls=auto)
    if cfg.data.cache:
        ds = ds.cache()
    if training and cfg.data.shuffle_buffer:
        ds = ds.shuffle(cfg.data.shuffle_buffer, seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.data.batch_size, num_parallel_calls=auto)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=auto)
    if training and augmenter is not None:
        # Random layers carry seed state: parallel calls would draw it in a racy order,
        # so a deterministic run augments batches one at a time (prefetch still overlaps it).
        parallel = None if cfg.deterministic else auto
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=parallel)
    options = tf.data.Options()
    options.deterministic = cfg.deterministic
    return ds.with_options(options).prefetch(auto)
