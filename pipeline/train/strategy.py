"""``train.strategy`` -> a tf.distribute strategy, plus the device-wide settings made with it.

Create it before any other TensorFlow work: logical CPU devices and
MultiWorkerMirroredStrategy must exist before the runtime initialises, and one
process should hold one strategy (two MirroredStrategy objects can clash in
collective ops). The precision policy is set here too: it is process-wide.
"""

from __future__ import annotations

import functools
import os

from pipeline.config import TrainConfig
from pipeline.errors import ConfigError


def _default(devices: tuple):
    import tensorflow as tf

    return tf.distribute.get_strategy()


def _one_device(devices: tuple):
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _mirrored(devices: tuple):
    """Every GPU, or every logical CPU when there is no GPU (how strategies are tested on a CPU)."""
    import tensorflow as tf

    devices = list(devices) or [d.name for d in tf.config.list_logical_devices("GPU")]
    devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def _multi_worker(devices: tuple):
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def _auto(devices: tuple):
    """TF_CONFIG -> multi-worker; several GPUs -> mirrored; one GPU -> one device; else default."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return _multi_worker(devices)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return _mirrored(devices)
    return _one_device(devices) if gpus else _default(devices)


STRATEGIES = {
    "auto": _auto,
    "default": _default,
    "one_device": _one_device,
    "mirrored": _mirrored,
    "multi_worker": _multi_worker,
}


def check_workers(strategy: str, workers: int) -> None:
    """Several workers train one model only under MultiWorkerMirroredStrategy: under any other strategy each
    would train alone on all the data, and only the chief's run would be tracked."""
    if workers > 1 and strategy not in ("auto", "multi_worker"):
        raise ConfigError(f"Invalid `train.strategy`: {strategy!r} would train each of the {workers} workers alone; "
                          "several workers train one model under 'multi_worker' (or 'auto').")


def make_strategy(cfg: TrainConfig):
    """Split the CPU if asked, set the precision policy, and build the strategy (once per process and setting).

    A search and the training of its best config (``tune --then-train``), a study's variants and a
    backtest's folds train in one process: a second MirroredStrategy there reused collective instance
    keys that the first had used for tensors of other shapes ("Shape mismatch in the collective instance").
    """
    strategy = _made(cfg.strategy, tuple(cfg.devices or ()), cfg.virtual_cpus)
    _precision(cfg.precision)
    return strategy


@functools.cache
def _made(name: str, devices: tuple, virtual_cpus: int):
    check_workers(name, _cluster_workers())
    _virtual_cpus(virtual_cpus)
    return STRATEGIES[name](devices)


def _cluster_workers() -> int:
    """The chief and workers in TF_CONFIG's cluster (1 without one)."""
    import tensorflow as tf

    if not os.environ.get("TF_CONFIG"):
        return 1
    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker"))


def _virtual_cpus(count: int) -> None:
    import tensorflow as tf

    if not count:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # TensorFlow already initialised in this process
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise ConfigError(
                f"Invalid `train.virtual_cpus`: {count} needs a fresh process (TensorFlow has already "
                f"initialised {len(tf.config.list_logical_devices('CPU'))} CPU device(s))."
            ) from None


def _precision(policy: str) -> None:
    """float32, or mixed precision where it is right: float16 needs a GPU, bfloat16 runs anywhere."""
    import keras
    import tensorflow as tf

    if policy == "mixed_float16" and not tf.config.list_logical_devices("GPU"):
        raise ConfigError(
            "Invalid `train.precision`: 'mixed_float16' needs a GPU (on a CPU float16 is slow and loses "
            "precision). Use 'mixed_bfloat16' or 'float32'."
        )
    keras.mixed_precision.set_global_policy(policy)


def describe(strategy) -> dict[str, str]:
    """Strategy name, replica count and devices, for tracking."""
    try:
        devices = ",".join(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy places ops wherever TensorFlow does
        devices = "default placement"
    name = type(strategy).__name__
    public = {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy"}  # the API name users configure
    return {"strategy": public.get(name, name), "replicas": str(strategy.num_replicas_in_sync), "devices": devices}


def global_batch(batch_size: int, scope: str, replicas: int) -> int:
    return batch_size * replicas if scope == "per_replica" else batch_size
