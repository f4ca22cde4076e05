"""Users' own files as TFDS datasets: ``csv`` (a CSV or Parquet table) and ``image_folder``.

Each prepared copy is a builder config named by a digest of the input (file
contents, or the folder's file list with sizes and times) and of the options,
so editing the input prepares a new copy and an unchanged one is reused.
Bad input stops with an error naming the file, line and column, or, with
``data.on_bad_input: skip``, is skipped and counted: the count is kept in the
dataset's metadata, then logged with every run (``data.skipped``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from pipeline.data.builders.tables import features_for, rows
from pipeline.data.checks import require_path
from pipeline.errors import DataError

NUMERIC_SHARE = 0.9  # a text column whose values parse as numbers this often is numeric with bad values


@dataclasses.dataclass(eq=False)
class FileConfig(tfds.core.BuilderConfig):
    path: str = ""
    label: str = ""
    dtypes: dict = dataclasses.field(default_factory=dict)
    on_bad_input: str = "error"
    image_size: tuple = (32, 32)
    channels: int = 3


def _config(cfg, fingerprint: str) -> FileConfig:
    d = cfg.data
    options = f"{fingerprint}|{d.label_key}|{sorted(d.dtypes.items())}|{d.on_bad_input}|{d.image_size}|{d.channels}"
    name = f"{Path(d.path).stem.lower()}-{hashlib.sha256(options.encode()).hexdigest()[:12]}"
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return FileConfig(name=name, path=str(Path(d.path).resolve()), label=d.label_key,
                      dtypes=dict(d.dtypes), on_bad_input=d.on_bad_input,
                      image_size=tuple(d.image_size), channels=d.channels)


def csv_config(cfg) -> FileConfig:
    path = require_path(cfg, is_dir=False)
    return _config(cfg, hashlib.sha256(path.read_bytes()).hexdigest())


def image_folder_config(cfg) -> FileConfig:
    path = require_path(cfg, is_dir=True)
    listing = sorted(f"{p.relative_to(path)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in path.rglob("*") if p.is_file())
    return _config(cfg, hashlib.sha256("\n".join(listing).encode()).hexdigest())


# ---- csv ---------------------------------------------------------------------


def read_table(config: FileConfig):
    """The table with inferred or declared column types, bad rows dropped (or an error), and the drop count."""
    import pandas as pd

    path = Path(config.path)
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise DataError(f"Cannot read {path}: {str(exc).splitlines()[0]}") from None
    if config.label not in frame.columns:
        raise DataError(f"{path}: missing label column {config.label!r} (`data.label_key`); columns are {', '.join(frame.columns)}.")
    bad = pd.Series(False, index=frame.index)
    reasons: dict[int, str] = {}
    for column in frame.columns:
        values = frame[column]
        declared = config.dtypes.get(column)
        if declared == "string" or (declared is None and pd.api.types.is_numeric_dtype(values)):
            continue
        text = values.astype(str).str.strip()
        empty = text.eq("") | text.str.lower().isin(["na", "nan", "null", "none"])
        parsed = pd.to_numeric(text.where(~empty), errors="coerce")
        failed = parsed.isna() & ~empty
        if declared is None and failed.sum() > (1 - NUMERIC_SHARE) * max((~empty).sum(), 1):
            frame[column] = text.where(~empty, "")  # a text column
            continue
        for row in frame.index[failed & ~bad]:
            reasons[row] = f"line {row + 2}, column {column!r}: {values[row]!r} is not a number"
        bad |= failed
        frame[column] = parsed.astype("Int64") if declared == "int" else parsed
    if not pd.api.types.is_numeric_dtype(frame[config.label]):
        missing_label = frame[config.label].eq("")
    else:
        missing_label = frame[config.label].isna()
    for row in frame.index[missing_label & ~bad]:
        reasons[row] = f"line {row + 2}, column {config.label!r}: the label is missing"
    bad |= missing_label
    if bad.any() and config.on_bad_input == "error":
        first = min(reasons)
        raise DataError(f"{path}: {reasons[first]} ({int(bad.sum())} bad rows; `data.on_bad_input: skip` skips them).")
    frame = frame[~bad].reset_index(drop=True)
    for column in frame.columns:
        if str(frame[column].dtype) == "Int64":
            frame[column] = frame[column].astype(np.int64)
    return frame, int(bad.sum())


class Csv(tfds.core.GeneratorBasedBuilder):
    """A local CSV or Parquet file; a text label makes a classification dataset, a number regression."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        import pandas as pd

        frame, _ = read_table(self.builder_config)
        label = self.builder_config.label
        label_feature = None
        if not pd.api.types.is_numeric_dtype(frame[label]):
            label_feature = tfds.features.ClassLabel(names=sorted(frame[label].unique()))
        return self.dataset_info_from_configs(
            description=f"Table {self.builder_config.path}",
            features=tfds.features.FeaturesDict(features_for(frame, label, label_feature)),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        frame, skipped = read_table(self.builder_config)
        self.info.metadata["skipped"] = skipped
        return {"train": self._generate_examples(frame)}

    def _generate_examples(self, frame):
        yield from rows(frame, dict(self.info.features))


# ---- image_folder --------------------------------------------------------------

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _classes(config: FileConfig) -> list[str]:
    classes = sorted(p.name for p in Path(config.path).iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{config.path}: an image folder needs one subfolder per class (at least 2); found {classes}.")
    return classes


class ImageFolder(tfds.core.GeneratorBasedBuilder):
    """One subfolder per class, images of any size and channel count, resized and converted on preparation."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return self.dataset_info_from_configs(
            description=f"Images under {c.path}",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(*c.image_size, c.channels)),
                "label": tfds.features.ClassLabel(names=_classes(c)),
                "file": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        from PIL import Image, UnidentifiedImageError

        c = self.builder_config
        examples, skipped = [], 0
        for label in _classes(c):
            for path in sorted((Path(c.path) / label).rglob("*")):
                if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    with Image.open(path) as img:
                        img = img.convert("L" if c.channels == 1 else "RGB").resize(c.image_size[::-1], Image.BILINEAR)
                        pixels = np.asarray(img, dtype=np.uint8).reshape(*c.image_size, c.channels)
                except (UnidentifiedImageError, OSError) as exc:
                    if c.on_bad_input == "error":
                        raise DataError(f"Unreadable image {path}: {exc} (`data.on_bad_input: skip` skips it).") from None
                    skipped += 1
                    continue
                name = str(path.relative_to(c.path))
                examples.append((name, {"image": pixels, "label": label, "file": name}))
        self.info.metadata["skipped"] = skipped
        return {"train": self._generate_examples(examples)}

    def _generate_examples(self, examples):
        yield from examples


PATH_BUILDERS = {"csv": csv_config, "image_folder": image_folder_config}
