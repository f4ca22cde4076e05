"""MLflow tracking: one ``Run`` per training, ended FINISHED, FAILED or KILLED, never left RUNNING.

Uses ``MlflowClient`` rather than the fluent API: no global active run, so a
tuner can hold a parent run and nested trial runs side by side. With
``tracking.enabled: false`` the same ``Run`` keeps a local id and folder and
logs nothing, so the training code has no tracking branches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.config import ExperimentConfig
from pipeline.files import write_text
from pipeline.track import owners, spool

_PARAM_BATCH = 100  # MLflow's limit per log_batch call
# MLflow 3's UI opens an untagged experiment on its GenAI overview; this tag makes it open on the training runs.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


class Run:
    """A tracked run: its id, a local folder for its files, and logging helpers.

    Every write is one operation (``spool.apply``), handed to the run's courier, which delivers
    them in order from a thread of its own, so training never waits on the server; while the
    server is away it keeps them in the run folder's spool (track/spool.py).
    """

    def __init__(self, cfg: ExperimentConfig, client=None, run_id: str | None = None):
        self.cfg = cfg
        self.client = client
        self.id = run_id or f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.dir = Path(cfg.workdir) / "runs" / self.id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.courier = spool.Courier(lambda op: spool.apply(client, cfg, self.id, op), self.dir, cfg.tracking.uri,
                                     lambda: {"run_id": self.id, "host": socket.gethostname(), "pid": os.getpid(),
                                              "config": cfg.model_dump(mode="json")})

    @property
    def tracked(self) -> bool:
        return self.client is not None

    def log_params(self, params: dict[str, Any]) -> None:
        items = [[k, str(v)[:6000]] for k, v in params.items()]
        for i in range(0, len(items), _PARAM_BATCH):
            self._send({"batch": {"params": items[i : i + _PARAM_BATCH]}})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.log_epochs([(step or 0, metrics)])

    def log_epochs(self, epochs: list[tuple[int, dict[str, float]]]) -> None:
        """Several epochs' metrics in one write."""
        now = int(time.time() * 1000)
        self._send({"batch": {"metrics": [[k, float(v), now, step] for step, metrics in epochs
                                          for k, v in metrics.items()]}})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._send({"batch": {"tags": [[k, str(v)] for k, v in tags.items()]}})

    def log_text(self, text: str, artifact_file: str) -> None:
        """Also kept in the run folder, where a spooled upload finds it."""
        if self.tracked:
            self.log_file(write_text(self.dir / "files" / artifact_file, text), str(Path(artifact_file).parent))

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        artifact_path = None if artifact_path in (None, ".") else artifact_path
        self._send({"file": {"path": str(Path(path).resolve()), "artifact_path": artifact_path}})

    def log_dir(self, path: Path, artifact_path: str) -> None:
        self._send({"folder": {"path": str(Path(path).resolve()), "artifact_path": artifact_path}})

    def register(self, export_path: Path, alias: str | None, tags: dict) -> None:
        """The export as a model version of ``export.model_name`` carrying ``alias``; tags the run with it."""
        self._send({"register": {"export_path": str(Path(export_path).resolve()), "alias": alias, "time": time.time(),
                                 "tags": {k: str(v) for k, v in tags.items()}}})

    def flush(self) -> None:
        """Wait until every write so far is delivered, or kept in the spool."""
        self.courier.wait()

    def end(self, status: str) -> None:
        """Mark the run ended and wait for its writes (raises a write's failure other than the server's absence)."""
        self._send({"end": status})
        self.courier.close()

    def _send(self, op: dict) -> None:
        if self.tracked:
            self.courier.send(op)

    def log_setup(self, cfg: ExperimentConfig, spec, strategy_info: dict[str, str]) -> None:
        """Everything needed to reproduce the run: config, code, libraries, devices, data."""
        self.log_params(cfg.flat())
        self.log_text(cfg.to_yaml(), "config.yaml")
        data = {
            "data.name": spec.name,
            "data.version": spec.version,
            "data.digest": spec.digest,
            **{f"data.size.{k}": v for k, v in spec.sizes.items()},
            "data.task": spec.task,
            "data.skipped": spec.skipped,
        }
        self.log_params({k: v for k, v in data.items() if k not in ("data.name",)})
        self.set_tags({**_environment(), **strategy_info, "data.name": spec.name, "data.digest": spec.digest})
        self.log_text(json.dumps(dataclasses.asdict(spec), indent=2), "data_spec.json")


def log_missing_epochs(run: Run, history: dict[str, list[float]]) -> None:
    """Log the epochs of ``history`` that the run lacks (a kill can fall between saving and logging)."""
    if not run.tracked or not history:
        return
    logged = {m.step for m in run.client.get_metric_history(run.id, "loss")}
    for i in range(len(history.get("loss", []))):
        if i + 1 not in logged:
            run.log_metrics({k: v[i] for k, v in history.items() if i < len(v)}, step=i + 1)


def epoch_logger(run: Run, prefix: str = ""):
    """A Keras callback that logs every epoch's metrics and learning rate to the run, names prefixed.

    Batched, because a write per epoch is a measurable share of a short epoch (bench/README.md,
    tracking overhead). So epochs are written together every ``tracking.write_every`` seconds
    (the first at once, to show the run is alive; the rest when training ends). A run killed
    before a write loses its latest epochs' metrics, which a resume logs again
    (``log_missing_epochs``). A schedule's learning rate is computed at write time for all
    pending epochs in one compiled call, since evaluating it eagerly every epoch costs as much.
    """
    import keras
    import tensorflow as tf

    every = run.cfg.tracking.write_every

    class EpochLogger(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.pending: list[tuple[int, dict, int]] = []  # (epoch, metrics, optimizer step)
            self.written = -float("inf")
            self.schedule = None

        def on_train_begin(self, logs=None):
            schedule = getattr(self.model.optimizer, "_learning_rate", None)  # a schedule, or a variable
            if self.schedule is None and isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
                # one trace for any number of pending epochs (a shape per count warned of retracing)
                self.schedule = tf.function(schedule, input_signature=[tf.TensorSpec([None], tf.int64)])

        def on_epoch_end(self, epoch, logs=None):
            metrics = {prefix + k: v for k, v in (logs or {}).items()}
            if self.schedule is None and prefix + "learning_rate" not in metrics:  # a variable: cheap to read
                metrics[prefix + "learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.pending.append((epoch + 1, metrics, int(self.model.optimizer.iterations.numpy())))
            if time.monotonic() - self.written >= every:
                self.write()

        def on_train_end(self, logs=None):
            self.write()

        def write(self):
            if self.pending:
                if self.schedule is not None:  # every pending epoch's learning rate in one call
                    rates = self.schedule(tf.constant([step for _, _, step in self.pending], tf.int64)).numpy()
                    for (_, metrics, _), rate in zip(self.pending, rates):
                        metrics.setdefault(prefix + "learning_rate", float(rate))
                run.log_epochs([(epoch, metrics) for epoch, metrics, _ in self.pending])
                self.pending = []
            self.written = time.monotonic()

    return EpochLogger()


@contextmanager
def _unseeded():
    """Python's global generator drawn from the OS within the block, and put back as it was after it: MLflow names a
    run (``bustling-seal-758``) from that generator, so every run of one ``seed`` had the same name, and the
    draws it took moved the training's."""
    state = random.getstate()
    random.seed()
    try:
        yield
    finally:
        random.setstate(state)


@contextmanager
def start_run(cfg: ExperimentConfig, run_name: str | None = None, tags: dict[str, str] | None = None,
              resume_id: str | None = None, resume_epoch: int = 0):
    """Open a run for ``cfg``; end it FINISHED, FAILED on an exception or KILLED on Ctrl-C/SIGTERM.

    With ``resume_id`` (an interrupted run of the same config, resumed after ``resume_epoch``)
    that run continues: its status goes back to RUNNING and its metric history goes on. If it
    already logged epochs past ``resume_epoch`` (its newest state was unreadable), it is marked
    KILLED instead and a new run, tagged ``resumed_from``, takes over: no step is logged twice.
    """
    if not cfg.tracking.enabled:
        yield Run(cfg, run_id=resume_id)
        return
    client, experiment_id = tracking_client(cfg)
    owners.close_orphans(client, experiment_id, keep=resume_id)
    owner = owners.tags()
    run_id = _reopen(client, resume_id, resume_epoch) if resume_id else None
    if run_id is None:
        link = {"resumed_from": resume_id} if resume_id else {}
        with _unseeded():  # an unnamed run is named by MLflow from Python's generator, which the run's seed has set
            run_id = client.create_run(experiment_id, run_name=run_name,
                                       tags={**(tags or {}), **link, **owner}).info.run_id
    else:  # this process owns it now, under the parent it is resumed for (a new retraining decision, say)
        for key, value in {**(tags or {}), **owner}.items():
            client.set_tag(run_id, key, str(value))
    status = "FAILED"
    run = Run(cfg, client, run_id)
    with spool.impatient():
        try:
            yield run
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            try:
                run.end(status)
            except Exception as exc:
                if status == "FINISHED":
                    raise
                # The run's own failure is what the user must read (a full disk often fails both): this one is a
                # warning, and the run, left RUNNING, is ended KILLED by the next run here (close_orphans).
                while exc.__cause__ is not None:  # the store's own words, not its client's wrappers
                    exc = exc.__cause__
                print(f"warning: the run's end was not recorded ({exc}); the next run here ends it as KILLED",
                      file=sys.stderr)
            finally:
                _report_delay(run)


def _report_delay(run: Run) -> None:
    """One line on what the run could not deliver at once: delivered late, or waiting for ``pipeline sync``."""
    from pipeline.track.server import public

    delay, server = run.courier.delay, public(run.cfg.tracking.uri)
    if delay is None:
        return
    what = f"{delay.metrics} metric values and {delay.files} files"
    if run.courier.pending:
        print(f"warning: the tracking server {server} did not come back: the run's end, {what} are kept in "
              f"{run.courier.spool.path}; `pipeline sync {run.dir}` delivers them", file=sys.stderr)
    else:
        print(f"Tracking: the server {server} did not answer for {delay.seconds:.0f} s; the {what} "
              "written meanwhile were delivered when it returned", file=sys.stderr)


def _reopen(client, run_id: str, epoch: int) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        return None
    if max((m.step for m in client.get_metric_history(run_id, "loss")), default=0) > epoch:
        client.set_terminated(run_id, "KILLED")
        return None
    client.update_run(run_id, status="RUNNING")
    return run_id


def tracking_client(cfg: ExperimentConfig):
    """The MLflow client for ``tracking.uri`` and the experiment id, created if missing.

    For the embedded SQLite store, artifacts go to ``<workdir>/mlartifacts`` beside
    the database, so the whole store lives in one folder.
    """
    from mlflow.tracking import MlflowClient

    from pipeline.files import exclusive
    from pipeline.track.server import public, sqlite_file

    uri, store = cfg.tracking.uri, sqlite_file(cfg.tracking.uri)
    # Several runs' first use of a new SQLite store would each create its tables and collide ("table
    # experiments already exists"): one creates them while the others wait.
    lock = Path(f"{store}.lock") if store else None
    with spool.answered(f"open a run on the tracking server {public(uri)}"), exclusive(lock):
        return _experiment(cfg, MlflowClient(tracking_uri=uri))


def _experiment(cfg: ExperimentConfig, client) -> tuple:
    uri = cfg.tracking.uri
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND[0]) is None:  # made before the tag, or by someone else
            client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
        return client, experiment.experiment_id
    location = None
    if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        location = (Path(cfg.workdir) / "mlartifacts").resolve().as_uri()
    try:
        return client, client.create_experiment(cfg.tracking.experiment, artifact_location=location,
                                                tags=dict([EXPERIMENT_KIND]))
    except Exception:  # created concurrently by another process
        return client, client.get_experiment_by_name(cfg.tracking.experiment).experiment_id


def _environment() -> dict[str, str]:
    import keras
    import mlflow
    import numpy
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tags = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tensorflow_datasets": tfds.__version__,
        "mlflow.version": mlflow.__version__,
        "numpy": numpy.__version__,
        "host.devices": ",".join(d.name for d in tf.config.list_logical_devices()),
    }
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git.dirty"] = str(bool(_git("status", "--porcelain")))
    return tags


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
