"""Raw features -> model-ready tensors, inside the model so the export takes raw features.

Every statistic (means, variances, vocabularies) comes from the training
split's columns (``Splits.train_columns``) and is frozen into the layers, so
validation and test data never leak into preprocessing.

    image        [augmentation] -> Rescaling(1/255)
    numeric      NaN -> training mean (or 0) [+ is-missing flag] -> Normalization (one for all of them)
                 [+ for the deep part only: piecewise-linear bins at the training quantiles]
                 [+ whole numbers that are codes (models/codes.py): their values one-hot]
    categorical  StringLookup / IntegerLookup with one OOV bucket (and values of under min_count rows) -> one-hot
                 or Embedding
                 (the text columns that enter one-hot share one StringLookup)
    multi_hot    split on a separator -> StringLookup multi-hot
    sequence     a window of a series: [target: relative to its last value] -> NaN -> mean -> Normalization
    calendar     a window of epoch seconds -> sine and cosine of the time of day, week or year

Each column's vector keeps its place in the input order, whether encoded alone or with others.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from pipeline.config import ExperimentConfig
from pipeline.models import codes
from pipeline.models.custom_layers import Flat, OneHotColumns, Relative, SplitStrings


@dataclass
class Encoded:
    images: list = field(default_factory=list)  # (batch, h, w, c) in [0, 1]
    vectors: list = field(default_factory=list)  # (batch, k)
    sequences: dict = field(default_factory=dict)  # name -> (batch, steps, channels), unit scale
    info: dict = field(default_factory=dict)  # per feature: kind, vocabulary size, missing share
    deep: list = field(default_factory=list)  # (batch, k): vectors for a body's deep part only (not its wide part)
    wide: int = 0  # a wide & deep body's encoded features, the first rows of its head (registry.py)

    @property
    def every_vector(self) -> list:
        """``vectors`` and ``deep`` together: what a body without a wide part takes."""
        return [*self.vectors, *self.deep]


def layer_name(feature: str, suffix: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', feature)}_{suffix}"


def inputs_for(spec) -> dict:
    """One ``keras.Input`` per raw feature: images as float32 (augmentation yields floats), others as stored;
    keyed by the column's name, named as the export names it (``Feature.input_name``)."""
    import keras

    return {
        f.name: keras.Input(shape=f.shape, dtype="float32" if f.signal else f.dtype, name=f.input_name)
        for f in spec.features
    }


def functional(inputs: dict, outputs, **kwargs):
    """``keras.Model(inputs, outputs)`` over inputs keyed by column and named as served (``inputs_for``), without
    Keras' warning that a key and its tensor's name differ (as they do for a column named ``Sale Price``)."""
    import warnings

    import keras

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict, all keys in the dict must match")
        return keras.Model(inputs, outputs, **kwargs)


def encode(inputs: dict, spec, cfg: ExperimentConfig, columns: dict, reg=None, augmenter=None) -> Encoded:
    """Encode every input in ``inputs`` by its feature's kind; the numeric features, and the text categoricals
    that enter one-hot, are each encoded all at once, and every column's vectors keep their place."""
    out = Encoded()
    grouped = {**_numbers(inputs, spec, cfg, columns, out), **_text_categoricals(inputs, spec, cfg, columns, out, reg)}
    for name, x in inputs.items():
        if name in grouped:
            out.vectors.extend(grouped[name])
            continue
        feature = spec.feature(name)
        ENCODERS[feature.kind](out, feature, x, cfg, columns.get(name), reg, augmenter)
    return out


def _numbers(inputs: dict, spec, cfg: ExperimentConfig, columns: dict, out: Encoded) -> dict:
    """The numeric features, each as [its normalised values, its is-missing flags if it had NaN in training],
    through one concatenation, one NaN fill and one Normalization for them all: five graph nodes per column
    were most of a table's model (Ames: 33 numbers), traced at every export and run at every step. Features
    next to each other in the input order without flags stay one slice (the first of them holds it), which
    the model's concatenation would only join again: a table of a thousand numbers is one block."""
    from keras import layers, ops

    names = [n for n in inputs if spec.feature(n).kind == "numeric"]
    if not names:
        return {}
    stats = [_statistics(columns[n], cfg) for n in names]
    fill, mean, var = (np.concatenate([s[key] for s in stats]) for key in ("fill", "mean", "var"))
    x = Flat(name="numbers")([inputs[n] for n in names])  # (batch, values of all features)
    is_nan = ops.isnan(x)
    x = ops.where(is_nan, fill.astype("float32"), x)
    x = layers.Normalization(mean=mean, variance=var, name="numbers_normalize")(x)
    flagged = [bool(cfg.features.missing_indicator and s["missing_share"]) for s in stats]
    order = {name: i for i, name in enumerate(inputs)}
    # A run: features next in the input order, neither flagged; each run (and each flagged feature) is one piece.
    starts = [i for i in range(len(names))
              if i == 0 or flagged[i] or flagged[i - 1] or order[names[i]] != order[names[i - 1]] + 1]
    widths = np.cumsum([0] + [len(s["mean"]) for s in stats])
    ends = [int(widths[i]) for i in starts[1:]]
    values, flags = ([x], [is_nan]) if not ends else (ops.split(x, ends, axis=-1), ops.split(is_nan, ends, axis=-1))
    grouped = {name: [] for name in names}
    for start, value, flag in zip(starts, values, flags):
        grouped[names[start]] = [value, ops.cast(flag, "float32")] if flagged[start] else [value]
    if cfg.features.piecewise_bins:
        out.deep.extend(_piecewise(x, [edges for s in stats for edges in s["edges"]], mean, var))
    for name, s in zip(names, stats):
        out.info[name] = {"kind": "numeric", "mean": s["mean"].tolist(), "std": np.sqrt(s["var"]).tolist(),
                          "missing_share": s["missing_share"]}
        if values := codes.code_values(spec.feature(name), columns[name], columns.get(spec.label), spec.task, cfg):
            grouped[name].append(codes.one_hot(inputs[name], values, layer_name(name, "codes")))
            out.info[name]["codes"] = len(values)
    return grouped


PIECEWISE_ROWS = 100_000  # training rows whose quantiles place the bins: a sample of more moves them little


def _statistics(column, cfg: ExperimentConfig) -> dict:
    """A numeric feature's training mean, variance and NaN fill per value, and its share of NaN."""
    values = np.asarray(column, dtype=np.float64).reshape(len(column), -1)
    missing = np.isnan(values)
    present = np.where(missing, np.nan, values)
    mean = np.nan_to_num(np.nanmean(present, axis=0)) if (~missing).any() else np.zeros(values.shape[1])
    var = np.nan_to_num(np.nanvar(present, axis=0)) if (~missing).any() else np.ones(values.shape[1])
    var[var == 0] = 1.0  # a value constant in training: any other one later must not be divided by Keras' epsilon
    fill = mean if cfg.features.missing == "mean" else np.zeros_like(mean)
    stats = {"mean": mean, "var": var, "fill": fill, "missing_share": float(missing.mean())}
    if cfg.features.piecewise_bins:  # each value's bin edges: quantiles of (at most PIECEWISE_ROWS) training rows
        levels = np.linspace(0, 1, cfg.features.piecewise_bins + 1)
        sample = values[:: -(-len(values) // PIECEWISE_ROWS)].T  # (values, rows)
        stats["edges"] = [np.unique(np.quantile(v[~np.isnan(v)], levels)) if (~np.isnan(v)).any()
                          else np.zeros(1) for v in sample]  # a value never present: no bins
    return stats


def _piecewise(x, edges: list, mean, var) -> list:
    """The normalised numbers ``x``, each piecewise-linearly encoded over the bins between its ``edges`` (training
    quantiles, in its raw units; Gorishniy et al., 2022, "On Embeddings for Numerical Features in Tabular Deep
    Learning"): per bin 0 below it, 1 above it, the fraction of the bin inside, so that a threshold is one weight
    of the next layer. A column of few distinct values gets fewer bins, a constant one none; NaN is encoded as
    its fill is."""
    from keras import ops

    index, left, width = [], [], []  # per bin: its value's place in x, its left edge and its width
    for i, raw in enumerate(edges):
        normalised = (raw - mean[i]) / np.sqrt(var[i])  # in the units of x
        index += [i] * (len(raw) - 1)
        left += list(normalised[:-1])
        width += list(np.diff(normalised))
    if not index:
        return []
    taken = ops.take(x, np.asarray(index, dtype="int32"), axis=1)
    # A product, not a division: a graph (the export) computes a division by a constant as this product, and its
    # roundings, in a price of thousands, broke the export's parity with the model in eager calls.
    scale = (1 / np.asarray(width)).astype("float32")
    return [ops.clip((taken - np.asarray(left, "float32")) * scale, 0.0, 1.0)]


def _text_categoricals(inputs: dict, spec, cfg: ExperimentConfig, columns: dict, out: Encoded, reg) -> dict:
    """The scalar text categoricals, each counted once: those that enter one-hot as their one-hot vectors, all
    looked up in one table; the rest embedded as ``_categorical`` embeds them.

    A lookup table is a resource that a SavedModel saves, restores and traces functions for, one
    set per table: a table of 40 text columns (Ames) spent most of its export on them (bench/README.md).
    """
    f = cfg.features
    one_hot, grouped = {}, {}
    for name in inputs:
        feature = spec.feature(name)
        if feature.kind != "categorical" or feature.dtype != "string" or feature.shape:
            continue
        vocabulary = _vocabulary(feature, columns.get(name), f.max_vocabulary, least=f.min_count)
        if not vocabulary:
            grouped[name] = _unseen(out, feature)
            continue
        if _one_hot(f, vocabulary):
            one_hot[name] = vocabulary
            continue
        part = Encoded()
        _categorical(part, feature, inputs[name], cfg, columns.get(name), reg, None, vocabulary=vocabulary)
        grouped[name], out.info[name] = part.vectors, part.info[name]
    if one_hot:
        vectors = OneHotColumns(list(one_hot.values()), name="categorical_lookup")(
            [inputs[name] for name in one_hot])
        for (name, vocabulary), vector in zip(one_hot.items(), vectors):
            grouped[name] = [vector]
            out.info[name] = {"kind": "categorical", "encoding": "one_hot", "vocabulary": ["[UNK]", *vocabulary]}
    return grouped


def _one_hot(f, vocabulary: list) -> bool:
    """Whether a categorical enters one-hot: asked for, or (``auto``) up to ``one_hot_max`` values with its OOV bucket."""
    return f.encoding == "one_hot" or (f.encoding == "auto" and len(vocabulary) + 1 <= f.one_hot_max)


def _image(out, feature, x, cfg, column, reg, augmenter):
    from keras import layers

    if augmenter is not None:
        x = augmenter(x)
    out.images.append(layers.Rescaling(1.0 / 255.0, name=layer_name(feature.name, "rescale"))(x))
    out.info[feature.name] = {"kind": "image", "shape": list(feature.shape)}


def _audio(out, feature, x, cfg, column, reg, augmenter):
    """Waveform -> [time shift, noise] -> log-mel spectrogram -> [SpecAugment masks]: an image for the conv body."""
    from pipeline.data.augment import audio_layers, through_audio
    from pipeline.models.audio import log_mel

    on_wave, on_spectrogram = audio_layers(cfg.augment, cfg.seed)
    front = log_mel(cfg.data.sample_rate, cfg.model.audio, name=layer_name(feature.name, "log_mel"))
    x = through_audio(x, on_wave, front, on_spectrogram)
    out.images.append(x)
    out.info[feature.name] = {"kind": "audio", "samples": feature.shape[0], "sample_rate": cfg.data.sample_rate,
                              "spectrogram": list(x.shape[1:])}


def lookup(feature, column, output_mode: str, limit: int, mask_token=None, vocabulary: list | None = None):
    """A StringLookup / IntegerLookup over the training split's ``limit`` most frequent values, plus one OOV bucket
    (``vocabulary``, when the caller counted them already).

    The rest share the OOV bucket: a column of a million ids must not become a million-wide layer.
    """
    from keras import layers

    if vocabulary is None:
        vocabulary = _vocabulary(feature, column, limit, mask_token)
    if feature.dtype == "string":
        return layers.StringLookup(vocabulary=vocabulary, num_oov_indices=1, mask_token=mask_token,
                                   output_mode=output_mode, name=layer_name(feature.name, "lookup"))
    return layers.IntegerLookup(vocabulary=vocabulary, num_oov_indices=1, output_mode=output_mode,
                                name=layer_name(feature.name, "lookup"))


def _vocabulary(feature, column, limit: int, mask_token=None, separator: str | None = None, least: int = 1) -> list:
    """The training split's ``limit`` most frequent values of a feature (the parts, with a ``separator``), each
    in at least ``least`` rows."""
    values = np.asarray(column).reshape(-1)
    if feature.dtype == "string":
        strings = (v.decode() if isinstance(v, bytes) else str(v) for v in values)
        if separator is not None:
            strings = (part for s in strings for part in s.split(separator))
        return _most_frequent((s for s in strings if s != mask_token), limit, least)
    return _most_frequent((int(v) for v in values), limit, least)


def _most_frequent(values, limit: int, least: int = 1) -> list:
    """The ``limit`` most frequent values of those counted at least ``least`` times (ties: the smaller first), sorted."""
    counts = {v: n for v, n in Counter(values).items() if n >= least}
    if len(counts) <= limit:
        return sorted(counts)
    return sorted(sorted(counts, key=lambda v: (-counts[v], v))[:limit])


def _categorical(out, feature, x, cfg, column, reg, augmenter, vocabulary: list | None = None):
    from keras import layers

    f = cfg.features
    if vocabulary is None:
        vocabulary = _vocabulary(feature, column, f.max_vocabulary, least=f.min_count)
    if not vocabulary:
        return _unseen(out, feature)
    encoding = "one_hot" if _one_hot(f, vocabulary) else "embedding"
    if encoding == "one_hot":
        table = lookup(feature, column, "one_hot", f.max_vocabulary, vocabulary=vocabulary)
        out.vectors.append(table(x))
    else:
        table = lookup(feature, column, "int", f.max_vocabulary, vocabulary=vocabulary)
        embedded = layers.Embedding(table.vocabulary_size(), f.embedding_dim, embeddings_regularizer=reg,
                                    name=layer_name(feature.name, "embedding"))(table(x))
        out.vectors.append(embedded)
    out.info[feature.name] = {"kind": "categorical", "encoding": encoding, "vocabulary": table.get_vocabulary()}


def _unseen(out, feature) -> list:
    """A categorical none of whose values is in ``features.min_count`` training rows: every value would fall in the
    out-of-vocabulary bucket, a constant, so the model leaves the column out (the export still takes it)."""
    out.info[feature.name] = {"kind": feature.kind, "encoding": "none", "vocabulary": []}
    return []


def _multi_hot(out, feature, x, cfg, column, reg, augmenter):
    f = cfg.features
    vocabulary = _vocabulary(feature, column, f.max_vocabulary, "", f.separator, f.min_count)
    if not vocabulary:
        return _unseen(out, feature)
    table = lookup(feature, column, "multi_hot", f.max_vocabulary, mask_token="", vocabulary=vocabulary)
    out.vectors.append(table(SplitStrings(f.separator, name=layer_name(feature.name, "split"))(x)))
    out.info[feature.name] = {"kind": "multi_hot", "vocabulary": table.get_vocabulary()}


def _sequence(out, feature, x, cfg, column, reg, augmenter):
    """A window of the target or a covariate; the target's is taken relative to its last value, as its label is."""
    from keras import layers, ops

    from pipeline.data.targets import transform

    values = np.asarray(column, dtype=np.float64)
    how = cfg.forecast.target_transform if feature.name == cfg.data.label_key else "level"
    if how != "level":
        values = transform(values, values[:, -1], how)
        x = Relative(how, name=layer_name(feature.name, how))(x)
    mean, var = float(np.nanmean(values)), float(np.nanvar(values)) or 1.0
    x = ops.where(ops.isnan(x), mean, x)
    x = layers.Normalization(axis=None, mean=mean, variance=var, name=layer_name(feature.name, "normalize"))(x)
    out.sequences[feature.name] = ops.expand_dims(x, -1)
    out.info[feature.name] = {"kind": "sequence", "steps": feature.shape[0], "relative": how, "mean": mean,
                              "std": float(np.sqrt(var))}


PERIODS = {"time_of_day": 86_400, "day_of_week": 7 * 86_400, "day_of_year": 31_557_600}  # seconds


def _calendar(out, feature, x, cfg, column, reg, augmenter):
    """Epoch seconds -> sin and cos of each ``forecast.calendar`` cycle (the remainder in int64: exact)."""
    from keras import ops

    waves = []
    for name in cfg.forecast.calendar:
        phase = ops.cast(ops.mod(x, PERIODS[name]), "float32") * (2 * np.pi / PERIODS[name])
        waves += [ops.sin(phase), ops.cos(phase)]
    out.sequences[feature.name] = ops.stack(waves, axis=-1)
    out.info[feature.name] = {"kind": "calendar", "cycles": list(cfg.forecast.calendar)}


# Numeric features and scalar text categoricals go through ``encode``'s grouped encoders.
ENCODERS = {"image": _image, "audio": _audio, "categorical": _categorical, "multi_hot": _multi_hot,
            "sequence": _sequence, "calendar": _calendar}
