"""Features picked from TFDS examples: the (features, label) pairs that training reads, and the
training split's columns as NumPy arrays, which preprocessing statistics and baselines read (and
``check_labels`` checks the task can learn from).

Both pick a few features out of each example. tf.data spends about 14 microseconds per element
on such a map (bench/README.md, "Tables as they grow"): most of a million-row table's first
pass. ``blockwise`` runs the pick on blocks of ``tfds_reader.BLOCK`` rows instead.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from pipeline.data import stats, tfds_reader
from pipeline.data.spec import DataSpec
from pipeline.errors import DataError

MAX_STAT_ROWS = 200_000  # rows of the training split read for preprocessing statistics
BLOCK_BYTES = 4 << 20  # the largest block of examples blockwise gathers
MAX_SHARED = 100_000  # distinct text values a column shares (shared_text)


def pairs(examples, spec: DataSpec, names: list[str] | None = None):
    """TFDS examples as (features, label) pairs: every feature, or those ``names``.

    A table's one-value columns travel packed, one tensor per dtype, until a batch is made
    (``unpacked``): tf.data's shuffle, cache and batch spend their time per tensor of an element,
    and a table of 300 columns would pay it 300 times a row (bench/README.md, wide tables).
    """
    import tensorflow as tf

    names, label = names or [f.name for f in spec.features], spec.label
    groups = _packed(spec, names)
    packed = {n for group in groups.values() for n in group}

    def pick(ex):
        features = {n: ex[n] for n in names if n not in packed}
        features.update({key: tf.stack([ex[n] for n in group], axis=-1) for key, group in groups.items()})
        return features, ex[label]

    return blockwise(examples, pick)


def unpacked(features: dict, spec: DataSpec, names: list[str] | None = None) -> dict:
    """A batch of ``pairs``' features (TensorFlow or NumPy) with each packed column its own ``[batch]`` again."""
    groups = _packed(spec, names or [f.name for f in spec.features])
    out = {n: v for n, v in features.items() if n not in groups}
    for key, group in groups.items():
        if key in features:
            out.update(zip(group, _columns_of(features[key], len(group))))
    return out


def _columns_of(block, count: int) -> list:
    """A packed block's columns: in TensorFlow by one unstack (a strided slice per column cost several times as
    much a batch, and tf.data runs them all on every batch of a wide table); NumPy's slices are views."""
    import numpy as np

    if isinstance(block, np.ndarray):
        return [block[..., i] for i in range(count)]
    import tensorflow as tf

    return tf.unstack(block, num=count, axis=-1)


def _packed(spec: DataSpec, names: list[str]) -> dict[str, list[str]]:
    """{a packed tensor's key: its columns in order}: the one-value features of each dtype, where there are several."""
    by_name = {f.name: f for f in spec.features}  # not spec.feature: a linear search per name, per batch
    by_dtype: dict[str, list[str]] = {}
    for name in names:
        if by_name[name].shape == ():
            by_dtype.setdefault(by_name[name].dtype, []).append(name)
    groups = {dtype: group for dtype, group in by_dtype.items() if len(group) > 1}
    taken = {f.name for f in spec.features} | {spec.label}
    prefix = next(p for p in itertools.chain(["packed"], (f"packed_{i}" for i in itertools.count()))
                  if not taken & {f"{p}:{dtype}" for dtype in groups})  # a column may be named so
    return {f"{prefix}:{dtype}": group for dtype, group in groups.items()}


def train_columns(train, spec: DataSpec, task) -> dict[str, Any]:
    """Training-split columns (no images) and transformed labels, for preprocessing statistics.

    Raises:
        DataError: a log target transform over labels at or below 0.
    """
    import numpy as np

    names = [f.name for f in spec.features if not f.signal]
    rows = pairs(train, spec, names).take(MAX_STAT_ROWS)  # picked from the reader's blocks (blockwise)
    columns: dict[str, list] = {n: [] for n in [*names, spec.label]}
    seen: dict[str, dict] = {n: {} for n in names}
    for batch in rows.batch(4096).as_numpy_iterator():
        features = unpacked(batch[0], spec, names)
        for n in names:
            columns[n].append(shared_text(features[n], seen[n]))
        columns[spec.label].append(batch[1])
    arrays = {n: np.concatenate(v) if v else np.array([]) for n, v in columns.items()}
    labels = arrays[spec.label]
    if getattr(task, "log", False) and labels.size and labels.min() <= 0:
        hint = stats.classes_hint(labels, spec.label)
        read = ("the training split" if labels.size >= spec.sizes["train"]
                else f"the training split's first {labels.size:,} rows")
        raise DataError(f"`features.target_transform: log` needs labels above 0, but `{spec.label}` has "
                        f"{int((labels <= 0).sum())} at or below 0 in {read} (min {labels.min():g}): "
                        + (f"{hint}, or use target_transform none" if hint else "use target_transform none"))
    arrays[spec.label] = np.asarray(task.target_numpy(labels))
    return arrays


def shared_text(values, seen: dict):
    """``values`` with each repeated text cell one shared object (the first of its value in ``seen``).

    NumPy holds a text column as a Python bytes object per cell, about 40 bytes each beyond the
    pointer; a category column repeats a few values, so sharing them is most of its memory
    (bench/README.md, memory). Past MAX_SHARED distinct values (a column of ids) no more are added.
    """
    import numpy as np

    if values.dtype != object:
        return values
    if len(seen) < MAX_SHARED:
        cells = [seen.setdefault(v, v) for v in values.reshape(-1)]
    else:
        cells = [seen.get(v, v) for v in values.reshape(-1)]
    out = np.empty(values.size, dtype=object)
    out[:] = cells
    return out.reshape(values.shape)


def blockwise(examples, fn):
    """``examples.map(fn)`` for a ``fn`` that only picks features, called on blocks of examples where they are small.

    Examples of varying shapes, or too large to gather a block of (images), stay one per call.
    """
    import tensorflow as tf

    auto = tf.data.AUTOTUNE
    fn = tf.autograph.experimental.do_not_convert(fn)  # it picks: nothing for autograph to rewrite
    specs = tf.nest.flatten(examples.element_spec)
    blocks = tfds_reader.blocks_of(examples)  # the reader's own, not split into examples and gathered again
    if blocks is None:
        if not all(s.shape.is_fully_defined() for s in specs) or tfds_reader.BLOCK * sum(
                math.prod(s.shape) * (32 if s.dtype == tf.string else s.dtype.size) for s in specs) > BLOCK_BYTES:
            return examples.map(fn, num_parallel_calls=auto)
        blocks = examples.batch(tfds_reader.BLOCK)
    out = blocks.map(fn, num_parallel_calls=auto).unbatch()
    rows = int(examples.cardinality())
    return out.apply(tf.data.experimental.assert_cardinality(rows)) if rows >= 0 else out  # unbatch forgets it


def check_labels(spec: DataSpec, labels=None) -> None:
    """Refuse a label the task cannot learn from: too few rows per class, one class, one value throughout.

    ``labels``: the training split's (``train_columns``); without them, only the rows per class are
    counted (from the split sizes). A series' task, forecasting, has checks of its own.

    Raises:
        DataError: naming the label, the numbers and what to check.
    """
    if spec.task == "classification":
        _enough_rows(spec)
        if labels is not None:
            _two_classes(spec, labels)
    elif spec.task == "regression" and labels is not None:
        _label_varies(spec, labels)


def _enough_rows(spec: DataSpec) -> None:
    """Fewer rows than three per class cannot give every split an example of each: refuse with the numbers."""
    rows = sum(spec.sizes.values())
    if rows < 3 * spec.num_classes:
        example = stats.written_numbers(spec)
        raise DataError(f"The data has {rows} rows for {spec.num_classes} classes of `{spec.label}`: too few to split "
                        f"into train, validation and test (at least 3 per class, {3 * spec.num_classes})"
                        + (f"; its values are numbers written as {example}: {stats.PLAIN_LABEL}" if example else ""))


def _two_classes(spec: DataSpec, labels) -> None:
    """A classifier of one class learns nothing and scores a meaningless accuracy: refuse it."""
    import numpy as np

    seen = np.unique(np.asarray(labels))
    if len(seen) < 2:
        names = [spec.class_name(i) for i in seen.tolist()]
        raise DataError(f"The training split's label `{spec.label}` has {len(seen)} class{'es' if len(seen) != 1 else ''}"
                        f" ({', '.join(map(repr, names)) or 'none'}): classification needs at least two "
                        "(check `data.label_key` and the split)")


def _label_varies(spec: DataSpec, labels) -> None:
    """A regression of one value throughout scores a perfect, meaningless error (often the wrong column was named
    as the label): refuse it, as a classifier of one class is refused."""
    import numpy as np

    labels = np.asarray(labels, np.float64)
    if len(np.unique(labels[~np.isnan(labels)])) < 2:
        raise DataError(f"The training split's label `{spec.label}` has the same value in all "
                        f"{stats.training_rows(len(labels), spec)}: regression has nothing to learn (check "
                        "`data.label_key` and the split)")
