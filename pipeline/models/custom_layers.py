"""The pipeline's own Keras layers, where Keras has none that does the work in one step.

Each is a factory used like a class (``Flat(name=...)``): the class is defined on the first call, so that
importing this module imports neither Keras nor TensorFlow (config validation and ``--help`` stay fast).
"""

from __future__ import annotations

import functools

import numpy as np


def Flat(name: str):  # noqa: N802
    return _flat()(name=name)


def OneHotColumns(vocabularies: list[list[str]], name: str):  # noqa: N802
    return _one_hot_columns()(vocabularies, name=name)


def SplitStrings(separator: str, name: str):  # noqa: N802
    return _split_strings()(separator, name=name)


def Relative(how: str, name: str):  # noqa: N802
    return _relative()(how, name=name)


@functools.cache
def _flat():
    import keras
    import tensorflow as tf

    class Flat(keras.layers.Layer):
        """Features of any numeric dtype and shape -> one float32 matrix (batch, their values side by side)."""

        def call(self, features):
            flat = [tf.reshape(tf.cast(x, tf.float32), (-1, int(np.prod(x.shape[1:])))) for x in features]
            return tf.concat(flat, axis=-1)

    return Flat


@functools.cache
def _one_hot_columns():
    import keras
    import tensorflow as tf
    from keras import layers

    class OneHotColumns(keras.layers.Layer):
        """Text columns -> one one-hot vector each (index 0: out of vocabulary, then the column's vocabulary, as
        StringLookup's one-hot gives), through one StringLookup whose keys are each column's position, a unit
        separator and the value."""

        def __init__(self, vocabularies: list[list[str]], **kwargs):
            super().__init__(**kwargs)
            self.vocabularies = [list(v) for v in vocabularies]
            keys = [f"{i}\x1f{v}" for i, vocabulary in enumerate(self.vocabularies) for v in vocabulary]
            self.lookup = layers.StringLookup(vocabulary=keys, num_oov_indices=1, output_mode="int",
                                              name=f"{self.name}_table")
            self.prefixes = np.array([f"{i}\x1f" for i in range(len(self.vocabularies))], dtype=object)
            # Column i's block of the joined vector: its out-of-vocabulary slot, then its values. The lookup
            # numbers all keys from 1 (0: out of vocabulary), so a value's slot is its id + i.
            self.widths = [len(v) + 1 for v in self.vocabularies]
            self.columns = np.arange(len(self.vocabularies), dtype="int64")
            self.oov_slots = np.cumsum([0] + self.widths)[:-1].astype("int64")

        def call(self, columns):
            x = tf.stack(columns, axis=-1)  # (batch, columns)
            ids = self.lookup(tf.strings.join([tf.broadcast_to(self.prefixes, tf.shape(x)), x]))
            slots = tf.where(ids == 0, self.oov_slots, ids + self.columns)
            # Every column's one-hot vector by one scatter of ones into the joined vector, split per column: a
            # graph of a few nodes, not a slice and a one-hot per column (bincount would be fewer still, but
            # its GPU kernel refuses deterministic ops).
            batch = tf.shape(slots, out_type=tf.int64)[0]
            rows = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(slots))
            joined = tf.scatter_nd(tf.stack([rows, slots], axis=-1), tf.ones(tf.shape(slots)),
                                   tf.stack([batch, sum(self.widths)]))
            return tf.split(joined, self.widths, axis=1)

        def get_config(self):
            return {**super().get_config(), "vocabularies": self.vocabularies}

    return OneHotColumns


@functools.cache
def _split_strings():
    import keras
    import tensorflow as tf

    class SplitStrings(keras.layers.Layer):
        """'Action|Comedy' -> ['Action', 'Comedy', ''] (padded with the mask token '')."""

        def __init__(self, separator: str, **kwargs):
            super().__init__(**kwargs)
            self.separator = separator

        def call(self, x):
            return tf.strings.split(x, self.separator).to_tensor(default_value="")

        def compute_output_shape(self, shape):
            return (*shape, None)

    return SplitStrings


@functools.cache
def _relative():
    import keras
    from keras import ops

    class Relative(keras.layers.Layer):
        """A window relative to its last value: its change (difference) or its log return (log_return)."""

        def __init__(self, how: str, **kwargs):
            super().__init__(**kwargs)
            self.how = how

        def call(self, x):
            last = x[:, -1:]
            return x - last if self.how == "difference" else ops.log(x) - ops.log(last)

    return Relative
