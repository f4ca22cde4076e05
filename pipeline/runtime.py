"""Run-time set-up every job shares: TensorFlow's and MLflow's environment, determinism and seeds.

``configure`` must run before anything imports TensorFlow (it reads these
variables once, at import); ``determinism`` and ``seed`` after. Jobs, tuning
workers and the benchmarks call these three, so a run is set up one way.
"""

from __future__ import annotations

import contextlib
import io
import os


def configure(cfg) -> None:
    """Environment TensorFlow reads at import: quiet logs and, for deterministic configs, no oneDNN.

    oneDNN's CPU kernels are outside TensorFlow's op determinism (the same run gave
    different losses with them on), so a deterministic config turns them off.
    """
    quiet_tensorflow()
    if cfg.tracking.telemetry:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "false"
    else:
        quiet_mlflow()
    if cfg.deterministic:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


VERBOSE = "PIPELINE_VERBOSE"  # set by `pipeline -v`: TensorFlow's and the libraries' own logs are shown


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ log lines, its errors included, unless the user set a level (`pipeline -v` sets 0).

    An error that matters raises, with its message; the lines alone are noise a user cannot act on
    (tf.data's "NodeDef mentions attribute use_unbounded_threadpool", at every first epoch).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def library_prints_hidden():
    """Standard output swallowed while a library prints notices past its logger (TFDS' "Downloading and
    preparing dataset Unknown size ...", though nothing downloads); ``pipeline -v`` shows them."""
    if os.environ.get(VERBOSE):
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_tensorflow() -> None:
    """Import TensorFlow and let it find its devices, with the native log lines that prints hidden.

    Before absl's logging is set up, TensorFlow's C++ side writes straight to the process's
    stderr, past TF_CPP_MIN_LOG_LEVEL ("failed call to cuInit" on a machine without a GPU,
    cudart and CPU-feature notices). Those writes go to a scratch file here; if the import fails,
    they are shown with the error. ``pipeline -v`` shows everything. Python's own warnings
    still reach the user: only this import and device discovery are covered, and absl's Python
    and TensorFlow's loggers are set to errors; MLflow's level comes from ``quiet_mlflow``.
    """
    import sys
    import tempfile

    if os.environ.get(VERBOSE):
        return
    quiet_loggers()
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_loggers() -> None:
    """absl's Python logger, where TFDS writes its notices ("Using custom data configuration"), TensorFlow's
    (tf.function's retracing warnings, a search's trials each tracing a step anew) and matplotlib's font lookup
    (a font its cache lacks falls back to another, a line per plot's text) to errors unless ``pipeline -v``.
    absl's through its own flag: TensorFlow's SavedModel walk restores absl's logger to that flag's level when it
    is done (``AutoTrackable._trackable_children``), and would show its warnings again."""
    import logging

    if not os.environ.get(VERBOSE):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
        for name in ("tensorflow", "matplotlib.font_manager"):
            logging.getLogger(name).setLevel(logging.ERROR)


def writable(cfg) -> None:
    """The folders a run writes in must take a file before anything runs: found after an hour of training, a
    read-only export root costs the hour. (``data.data_dir`` is asked where a dataset is prepared: a prepared
    one is only read, and may sit on a team's read-only mount.)"""
    from pipeline.errors import ConfigError
    from pipeline.files import cannot_write

    folders = {"workdir": cfg.workdir, **({"export.root": cfg.export.root} if cfg.export.enabled else {})}
    for key, folder in folders.items():
        if reason := cannot_write(folder):
            raise ConfigError(f"Invalid `{key}`: cannot write in {folder} ({reason})")


def quiet_mlflow() -> None:
    """MLflow's usage telemetry off (an opt-in: ``tracking.telemetry``) and its notices to warnings, unless the
    environment says otherwise (``pipeline -v`` sets INFO). Its SQL store logs a failed write with a traceback
    before raising it: the error is the pipeline's to report, in one line (a full disk: ``errors.disk_full``)."""
    import logging

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.NOTSET if os.environ.get(VERBOSE) else logging.CRITICAL)


def determinism(cfg) -> None:
    """Deterministic kernels when the config asks for them (see ``configure`` for oneDNN)."""
    import tensorflow as tf

    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


def seed(cfg) -> None:
    """Same seed, same initial weights and tf.data shuffles; augmentation layers carry their own seeds."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
