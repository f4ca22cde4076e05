"""Whole numbers that are codes: a commune, a school or a person written as a number.

A network reads a number by its size, and the size of a code means nothing: it can learn little more
from one than a trend over its arbitrary order, where gradient boosting cuts the values into groups
and wins (bench/README.md, codes). A code is found on the training split alone: the label's mean at
each of the column's values predicts the label, out of fold, clearly better than its mean over
neighbourhoods of values does (groups of neighbouring values, of about equal rows: a stand-in for any
trend of the number). Ages, years, counts and prices vary smoothly and stay numbers; a code's values
then also enter the model one-hot (``features.codes``), beside the number itself.
"""

from __future__ import annotations

import numpy as np

GAIN = 0.9  # a code's error out of fold, per value, is at most this share of its error per neighbourhood
NEIGHBOURHOODS = 16  # and it has more values than this (with fewer, each value is its own neighbourhood)
ROWS = 100_000  # training rows that decide (the vocabulary counts them all)
FOLDS = 5
SHRINK = 2.0  # a value's mean counts the overall mean as this many rows: a value of one row is mostly overall


def code_values(feature, column, labels, task: str, cfg) -> list[int]:
    """The values to one-hot of a numeric feature's training column, each in ``features.min_count`` rows, if
    they are codes of what predicts the label; else none. A date's days are never codes: those to come are
    all unseen."""
    f = cfg.features
    raw = np.asarray(column)
    if (f.codes == "none" or feature.date or labels is None or task not in ("classification", "regression")
            or raw.ndim != 1):
        return []
    step = -(-len(raw) // ROWS)
    sample, y = raw[::step].astype(np.float64), np.asarray(labels)[::step]  # the whole column only for a code's values
    present = ~np.isnan(sample)
    sample, y = sample[present], y[present]
    if not len(sample) or np.any(sample != np.round(sample)):
        return []
    values, groups, counts = np.unique(sample, return_inverse=True, return_counts=True)
    if not NEIGHBOURHOODS < len(values) <= min(f.one_hot_max - 1, len(sample) / 5):
        return []
    target = _one_hot(y) if task == "classification" else ((y - y.mean()) / (y.std() or 1.0))[:, None]
    middle = (np.cumsum(counts) - counts / 2) / len(sample)  # each value's place among the rows, in [0, 1]
    near = np.minimum((middle * NEIGHBOURHOODS).astype(int), NEIGHBOURHOODS - 1)[groups]
    if _error_out_of_fold(groups, target) > GAIN * _error_out_of_fold(near, target):
        return []
    values, counts = np.unique(raw if raw.dtype.kind in "iu" else raw[~np.isnan(raw)], return_counts=True)
    return [int(v) for v, n in zip(values, counts) if n >= f.min_count]


def one_hot(x, values: list[int], name: str):
    """A code column's values one-hot, in an out-of-vocabulary bucket for an unseen value or NaN."""
    from keras import layers, ops

    outside = min(values) - 1
    x = ops.reshape(x, (-1,))
    if "float" in str(x.dtype):
        x = ops.round(ops.where(ops.isnan(x), float(outside), x))
    return layers.IntegerLookup(vocabulary=values, num_oov_indices=1, oov_token=outside, output_mode="one_hot",
                                name=name)(ops.cast(x, "int64"))


def notes(feature_info: dict) -> list[str]:
    """One line per column read as codes, for the run's notes."""
    return [f"column {name!r} holds whole numbers whose {info['codes']} values predict the label apart from their "
            "order (codes, such as ids written as numbers): they also enter the model one-hot; "
            "features.codes: none keeps numbers as numbers only"
            for name, info in feature_info.items() if info.get("codes")]


def _one_hot(labels) -> np.ndarray:
    _, index = np.unique(labels, return_inverse=True)
    return np.eye(index.max() + 1)[index]


def _error_out_of_fold(groups, target) -> float:
    """The squared error of each group's training mean (shrunk to the overall one) on the rows of each fold."""
    fold, size, error = np.arange(len(groups)) % FOLDS, groups.max() + 1, 0.0
    for k in range(FOLDS):
        fit, held = fold != k, fold == k
        overall = target[fit].mean(axis=0)
        rows = np.bincount(groups[fit], minlength=size)
        sums = np.stack([np.bincount(groups[fit], weights=t, minlength=size) for t in target[fit].T], axis=1)
        means = (sums + SHRINK * overall) / (rows + SHRINK)[:, None]
        error += float(((target[held] - means[groups[held]]) ** 2).sum())
    return error
