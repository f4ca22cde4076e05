"""A series as forecasting windows, cut in tf.data (or NumPy, for statistics and baselines).

Windows are never materialised: each is a slice of the series' columns (data/series.py) taken
inside tf.data when it is read, so a window of one week over a year of half-hourly steps costs
what the series costs, not 336 times it.

    window i:  inputs  target, past covariates       steps [i, i + W)
                       known covariates, time         steps [i, i + W + H)
               label   target                         steps [i + W, i + W + H), as the target transform says
"""

from __future__ import annotations

import numpy as np

from pipeline.data.series import Series
from pipeline.data.targets import transform

CUT_BLOCK = 1024  # windows cut in one gather


def label_name(target: str) -> str:
    """The label's name: the target's next ``horizon`` values (the target's own name is its past window)."""
    return f"{target}_ahead"


def starts(series: Series, cfg, split: str) -> np.ndarray:
    """First step of every window of ``split`` (training windows ``forecast.stride`` apart, others every step)."""
    fc = cfg.forecast
    stride = fc.stride if split == "train" else 1
    ranges = [np.arange(max(seg.bounds[split][0] - fc.input_window, seg.start),
                        seg.bounds[split][1] - fc.input_window - fc.horizon + 1, stride) for seg in series.segments]
    return np.concatenate(ranges).astype(np.int64)


def window_arrays(series: Series, cfg, at: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The windows starting at ``at`` as NumPy (features, transformed labels): statistics and baselines read these."""
    fc, target = cfg.forecast, cfg.data.label_key
    w, h = fc.input_window, fc.horizon
    features = {fc.series_id: series.ids[at]} if fc.series_id else {}
    for name, length in inputs(cfg).items():
        column = series.time if name == fc.time else series.columns[name]
        features[name] = column[at[:, None] + np.arange(length)]
    future = series.columns[target][at[:, None] + w + np.arange(h)]
    return features, transform(future, features[target][:, -1], fc.target_transform)


def inputs(cfg) -> dict[str, int]:
    """Each input of a window and its length in steps."""
    fc = cfg.forecast
    w, h = fc.input_window, fc.horizon
    lengths = {cfg.data.label_key: w, **{c: w for c in fc.past_covariates}, **{c: w + h for c in fc.known_covariates}}
    if fc.calendar:
        lengths[fc.time] = w + h
    return lengths


def dataset(series: Series, cfg, split: str):
    """The windows of ``split`` as a tf.data.Dataset of ({input: window}, transformed label), unbatched.

    Cut ``CUT_BLOCK`` at a time, each a gather from the series held as constants: tf.data's cost per
    call, not the slicing, was the work of cutting one window per call (bench/README.md, series at 1M steps).
    """
    import tensorflow as tf

    fc, target = cfg.forecast, cfg.data.label_key
    w, h = fc.input_window, fc.horizon
    lengths = inputs(cfg)
    dtypes = {n: tf.int64 if n == fc.time else tf.float32 for n in lengths}
    columns = {n: tf.constant(series.time if n == fc.time else series.columns[n], dtypes[n]) for n in lengths}
    levels = columns[target]

    ids = tf.constant(series.ids) if fc.series_id else None

    @tf.autograph.experimental.do_not_convert  # plain TensorFlow ops: nothing for autograph to rewrite
    def windows(at):
        features = {n: tf.gather(columns[n], at[:, None] + tf.range(length, dtype=at.dtype))
                    for n, length in lengths.items()}
        if ids is not None:
            features[fc.series_id] = tf.gather(ids, at)
        future = tf.gather(levels, at[:, None] + w + tf.range(h, dtype=at.dtype))
        return features, transform(future, features[target][:, -1], fc.target_transform)

    at = starts(series, cfg, split)
    cut = tf.data.Dataset.from_tensor_slices(at).batch(CUT_BLOCK).map(windows, num_parallel_calls=tf.data.AUTOTUNE)
    # unbatch forgets the count, and Keras' evaluation in steps of several batches then warns of running out of data
    return cut.unbatch().apply(tf.data.experimental.assert_cardinality(len(at))), len(at)
