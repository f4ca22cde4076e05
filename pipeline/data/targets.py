"""A series' target transforms: what a forecasting model predicts from future levels, and back.

``forecast.target_transform`` is the level itself, the change from the last input value
(``difference``) or the log return from it (``log_return``). The windows' labels (data/windows.py),
the model's own target input (models/features.py) and the export's levels (tasks.py) all go through
these two functions, on NumPy arrays or TensorFlow tensors alike.
"""

from __future__ import annotations

import numpy as np


def transform(future, last, how: str):
    """Future levels -> what the model predicts (NumPy or TensorFlow): the level, the change, or the log return."""
    if how == "level":
        return future
    if how == "difference":
        return future - last[:, None]
    log = np.log if isinstance(future, np.ndarray) else _tf_log
    return log(future) - log(last[:, None])


def invert(predicted, last, how: str):
    """What the model predicts -> levels (NumPy or TensorFlow): the inverse of ``transform``."""
    if how == "level":
        return predicted
    if how == "difference":
        return predicted + last[:, None]
    exp = np.exp if isinstance(predicted, np.ndarray) else _tf_exp
    return exp(predicted) * last[:, None]


def _tf_log(x):
    import tensorflow as tf

    return tf.math.log(x)


def _tf_exp(x):
    import tensorflow as tf

    return tf.exp(x)
