"""``train.strategy`` -> a tf.distribute strategy.

Create it before any other TensorFlow work: MultiWorkerMirroredStrategy must
exist before the runtime initialises, and one process should hold one strategy
(two MirroredStrategy objects can clash in collective ops).
"""

from __future__ import annotations

import os


def _default():
    import tensorflow as tf

    return tf.distribute.get_strategy()


def _one_device():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _mirrored():
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()


def _multi_worker():
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def _auto():
    """TF_CONFIG -> multi-worker; several GPUs -> mirrored; one GPU -> one device; else default."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return _multi_worker()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return _mirrored()
    return _one_device() if gpus else _default()


STRATEGIES = {
    "auto": _auto,
    "default": _default,
    "one_device": _one_device,
    "mirrored": _mirrored,
    "multi_worker": _multi_worker,
}


def make_strategy(name: str):
    return STRATEGIES[name]()


def describe(strategy) -> dict[str, str]:
    """Strategy name, replica count and devices, for tracking."""
    try:
        devices = ",".join(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy places ops wherever TensorFlow does
        devices = "default placement"
    return {"strategy": type(strategy).__name__, "replicas": str(strategy.num_replicas_in_sync), "devices": devices}
