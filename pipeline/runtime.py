"""Run-time set-up every job shares: TensorFlow's and MLflow's environment, determinism and seeds.

``configure`` must run before anything imports TensorFlow (it reads these
variables once, at import); ``determinism`` and ``seed`` after. Jobs, tuning
workers and the benchmarks call these three, so a run is set up one way.
"""

from __future__ import annotations

import os


def configure(cfg) -> None:
    """Environment TensorFlow reads at import: quiet logs and, for deterministic configs, no oneDNN.

    oneDNN's CPU kernels are outside TensorFlow's op determinism (the same run gave
    different losses with them on), so a deterministic config turns them off.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if cfg.tracking.telemetry:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "false"
    else:
        quiet_mlflow()
    if cfg.deterministic:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def writable(cfg) -> None:
    """The workdir must be writable before anything runs: found after an hour of training, it costs the hour."""
    import tempfile
    from pathlib import Path

    from pipeline.errors import ConfigError

    try:
        Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=cfg.workdir).close()
    except OSError as exc:
        raise ConfigError(f"Invalid `workdir`: cannot write in {cfg.workdir} ({exc.strerror})") from None


def quiet_mlflow() -> None:
    """MLflow's usage telemetry off (an opt-in: ``tracking.telemetry``), unless the environment says otherwise."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def determinism(cfg) -> None:
    """Deterministic kernels when the config asks for them (see ``configure`` for oneDNN)."""
    import tensorflow as tf

    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


def seed(cfg) -> None:
    """Same seed, same initial weights and tf.data shuffles; augmentation layers carry their own seeds."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
