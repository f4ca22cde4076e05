"""What the pipeline knows of a dataset once read: its features, label, splits and sizes (``DataSpec``),
and the three ``tf.data`` streams with the training columns (``Splits``) that ``dataset.load`` returns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SIGNALS = ("image", "audio")  # kinds stored as a large array per example


def input_name(column: str) -> str:
    """The name a column has as a model input and in the export's signature, so that a file's header is used as
    it is (a table of millions of rows is not rewritten to rename a column): each character other than ASCII
    letters, digits and ``_`` written as ``_``, and ``arg_`` before a name that does not start with a letter.
    TensorFlow renames a signature's arguments so in Python (``function_type.sanitize_arg_name``) but not in
    the SavedModel's signature, where TF Serving reads them: a name it would rename would differ between the two."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", column)
    return name if name[:1].isalpha() else f"arg_{name}"


@dataclass(frozen=True)
class Feature:
    """One raw model input: its name, how it is encoded, and how it is stored."""

    name: str
    kind: str  # image | audio | numeric | categorical | multi_hot
    dtype: str  # as stored: uint8, float32, int64, string, ...
    shape: tuple[int, ...] = ()
    date: bool = False  # numeric: seconds since 1970 (UTC) read from ISO 8601 text, which serving also takes
    boolean: bool = False  # numeric: 0 and 1 from a boolean column, which serving also takes as false and true

    @property
    def input_name(self) -> str:
        return input_name(self.name)

    @property
    def signal(self) -> bool:
        """An image or a waveform: a large array per example, read from the splits, never kept as a column."""
        return self.kind in SIGNALS


@dataclass(frozen=True)
class DataSpec:
    """What the model, the tracker and the export need to know about the data."""

    name: str
    version: str
    splits: dict[str, str]
    sizes: dict[str, int]
    digest: str
    features: tuple[Feature, ...]
    label: str
    task: str  # classification | regression
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    skipped: int = 0  # bad rows or files skipped when the dataset was prepared
    example_bytes: float = 0.0  # average size of a prepared example (what a cache of a split will hold)

    def feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)

    def class_name(self, class_id: int) -> str:
        """A class's name, or its id as text where the dataset names it not."""
        return self.class_names[class_id] if class_id < len(self.class_names) else str(class_id)


@dataclass
class Splits:
    train: Any  # endless: epoch after epoch, each in its own seeded order; use with steps_per_epoch
    validation: Any
    test: Any
    spec: DataSpec
    train_columns: dict[str, Any]  # non-image training features and the (transformed) label, as NumPy
    steps_per_epoch: int = 0
    global_batch: int = 0
    series: Any = None  # forecasting: the whole series in time order (data/series.py), for baselines
    validation_columns: Any = None  # a wide forecast: validation windows as train_columns holds training ones
    train_files: int = 0  # shard files the training split reads: workers can split them by FILE
    train_for: Any = None  # (tf.distribute.InputContext) -> one worker's training stream over its own files

    def train_epoch(self):
        """One epoch of the training stream (finite)."""
        return self.train.take(self.steps_per_epoch)
