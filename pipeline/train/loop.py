"""``train(cfg)``: the whole experiment as one readable recipe.

strategy -> data -> tracked run -> model -> fit -> evaluate -> curves -> export.
Everything that can be rejected without a run (config, dataset, feature keys)
is rejected before the MLflow run opens, so a bad input leaves no run behind.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import ExperimentConfig
from pipeline.errors import ConfigError


@dataclass
class TrainResult:
    """What a training run produced."""

    run_id: str
    run_dir: Path
    test_metrics: dict[str, float]
    best_epoch: int | None
    epochs_run: int
    history: dict[str, list[float]]
    model: object = None
    export_path: Path | None = None
    checks: dict[str, float] = field(default_factory=dict)
    diagnosis: object = None  # pipeline.diagnose.Diagnosis
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: data, setup, fit, evaluate, log, export


def train(cfg: ExperimentConfig, callbacks: list = (), alias: str | None = "champion",
          run_tags: dict | None = None) -> TrainResult:
    """Train, evaluate, track and export the experiment ``cfg`` describes.

    Args:
        cfg: The validated experiment config.
        callbacks: Extra Keras callbacks, run after the pipeline's own; default none.
        alias: Registry alias moved to the export's model version: ``champion`` (it serves, being the
            newest export), ``challenger`` (retraining stages it), or None.
        run_tags: Extra tags of the MLflow run (e.g. a parent run); default none.
    """
    extra_callbacks = list(callbacks)
    from pipeline import track
    from pipeline.data import dataset, stats
    from pipeline.data.augment import build_augmenter
    from pipeline.export import export
    from pipeline.models import family
    from pipeline.tasks import task_for
    from pipeline.track import plots, registry
    from pipeline.train import cluster, custom_loop, resume
    from pipeline.train.callbacks import build_callbacks
    from pipeline.train.strategy import describe, make_strategy

    clock = _Clock()
    strategy = make_strategy(cfg.train)
    replicas = strategy.num_replicas_in_sync
    _deterministic_ops(cfg)
    _seed(cfg)  # before the data: tf.data's shuffle seeds combine with TensorFlow's global seed
    augmenter = build_augmenter(cfg.augment, cfg.seed)
    in_model = cfg.augment.placement == "model"
    previous = resume.peek(cfg) if cfg.train.resume else resume.State()
    data = dataset.load(cfg, augmenter=None if in_model else augmenter, start_epoch=previous.epoch, replicas=replicas)
    if data.spec.skipped:
        print(f"warning: {data.spec.skipped} bad rows or files of {cfg.data.path or data.spec.name} were skipped "
              "(data.on_bad_input: skip); the count is logged as data.skipped", file=sys.stderr)

    task = task_for(cfg, data.spec)
    clock.lap("data")
    chief = cluster.is_chief()
    # Other workers track nothing and keep their files in a temporary folder (Keras requires it).
    run_cfg = cfg if chief else cfg.model_copy(update={
        "tracking": cfg.tracking.model_copy(update={"enabled": False}), "workdir": tempfile.mkdtemp(prefix="worker-")})

    with track.start_run(run_cfg, tags=run_tags, resume_id=previous.run_id, resume_epoch=previous.epoch) as run:
        run.log_setup(cfg, data.spec, {**describe(strategy), "global_batch": data.global_batch,
                                       "precision": cfg.train.precision})
        steps_per_epoch = data.steps_per_epoch
        _seed(cfg)  # here, after data preparation and tracking, which draw from global RNGs
        model = build_compiled(cfg, data, task, strategy, augmenter if in_model else None)
        callbacks = build_callbacks(cfg, run.dir)
        state = previous
        resume.restore(model, callbacks, state, augmenter)
        saver = resume.checkpointer(cfg, run.id, state, write=cfg.train.resume and chief, augmenter=augmenter)
        saver.set_others(callbacks)
        if state.epoch:
            print(f"Resuming {cfg.name} after epoch {state.epoch} from {state.path}", file=sys.stderr)
            track.log_missing_epochs(run, state.history)
            run.set_tags({"resumed_after_epoch": state.epoch})
        all_callbacks = [*callbacks, saver, track.epoch_logger(run), *extra_callbacks]
        clock.lap("setup")  # run, model, callbacks
        custom = cfg.train.loop == "custom" or (cfg.train.loop == "auto" and _multi_worker(strategy))
        if custom and (cfg.train.jit_compile or cfg.train.steps_per_execution not in ("auto", 1)):
            raise ConfigError("`train.jit_compile` and `train.steps_per_execution` apply to Keras' fit only; the "
                              "custom loop (multi-worker, keras#20585) runs without them: unset them.")
        if custom:
            custom_loop.fit(model, strategy, task, data.train, data.validation, cfg.train.epochs, state.epoch,
                            steps_per_epoch, all_callbacks, verbose=cfg.train.verbose if chief else 0)
        else:
            model.fit(
                data.train,
                validation_data=data.validation,
                epochs=cfg.train.epochs,
                initial_epoch=state.epoch,
                steps_per_epoch=steps_per_epoch,
                callbacks=all_callbacks,
                verbose=cfg.train.verbose,
                shuffle=False,  # the tf.data pipeline shuffles, seeded
            )
        history = saver.history  # every epoch, including those before a resume
        clock.lap("fit")

        best_epoch = _best_epoch(callbacks)
        scores = custom_loop.evaluate(model, task, data.test) if custom else model.evaluate(data.test, return_dict=True, verbose=0)
        test = {f"test_{k}": float(v) for k, v in scores.items()}
        epochs_run = len(history["loss"])
        extras = family(cfg.model.name)
        signatures = extras.serving_signatures(model, cfg, data.spec, data.train_columns, task)
        test.update({f"test_{k}": v for k, v in _task_metrics(model, task, data.test).items()})
        test.update({f"test_{k}": v for k, v in extras.evaluate(signatures, data.test, data.spec, cfg).items()})
        clock.lap("evaluate")
        run.log_metrics({**test, "epochs_run": epochs_run, **({"best_epoch": best_epoch} if best_epoch else {})})
        run.log_text(json.dumps(model.feature_info, indent=2, default=str), "features.json")
        if run.tracked:  # what retraining checks new data against
            run.log_text(json.dumps(stats.statistics(data), indent=1), "data_stats.json")
        curves = plots.learning_curves(history, best_epoch, run.dir / "learning_curves.png")
        run.log_file(curves, "plots")
        diagnosis = _diagnose(cfg, history, task, data)
        if diagnosis is not None:
            run.set_tags(diagnosis.tags())
            run.log_text(diagnosis.to_json(), "diagnosis.json")
            run.log_text(diagnosis.markdown(), "diagnosis.md")

        clock.lap("log")  # statistics, curves, diagnosis
        export_path, checks = None, {}
        if cfg.export.enabled and chief:
            meta = {"run_id": run.id, "data": {"name": data.spec.name, "version": data.spec.version,
                                               "digest": data.spec.digest}, "test_metrics": test}
            export_path, checks = export(model, cfg, data.spec, data.test, metadata=meta, signatures=signatures)
            clock.lap("export")
            run.log_metrics(checks)
            run.set_tags({"export.path": str(export_path.resolve()), "export.version": export_path.name})
            run.log_dir(export_path, "saved_model")
            if run.tracked:
                version = registry.register(cfg, run.id, export_path, alias=alias, tags={
                    "data.name": data.spec.name, "data.version": data.spec.version, "data.digest": data.spec.digest,
                    **{k: round(v, 6) for k, v in test.items()}})
                run.set_tags({"registry.model": cfg.export.model_name, "registry.version": version.version})
        run.log_metrics({f"seconds_{stage}": round(s, 3) for stage, s in clock.laps.items()})
        if chief:
            resume.finish(cfg)
    return TrainResult(run.id, run.dir, test, best_epoch, epochs_run, history, model, export_path, checks, diagnosis,
                       clock.laps)


def build_compiled(cfg: ExperimentConfig, data, task, strategy, augmenter=None):
    """The registry's model for ``cfg``, compiled under ``strategy``: one recipe for runs and tuning trials.

    Args:
        augmenter: Augmentation layers to put inside the model (``augment.placement: model``); else None.
    """
    from pipeline.models import build_model
    from pipeline.train.optim import build_optimizer

    with strategy.scope():
        model = build_model(cfg, data.spec, data.train_columns, augmenter=augmenter)
        model.compile(
            optimizer=build_optimizer(cfg.optimizer, cfg.train.epochs, data.steps_per_epoch,
                                      strategy.num_replicas_in_sync),
            loss=task.loss,
            metrics=task.metrics(),
            steps_per_execution=steps_per_execution(cfg.train.steps_per_execution, data.steps_per_epoch,
                                                    strategy.num_replicas_in_sync),
            jit_compile=cfg.train.jit_compile,
        )
    return model


AUTO_STEPS_PER_EXECUTION = 16


def steps_per_execution(setting: int | str, steps_per_epoch: int, replicas: int = 1) -> int:
    """Steps per compiled call: ``auto`` is the largest divisor of the epoch's steps up to 16 (1 for several replicas).

    Keras runs whole executions: with 37 steps an epoch and 8 per execution it would run 40,
    reading three batches of the next epoch and shifting every later epoch (and a resumed run
    would no longer replay an uninterrupted one). So the value must divide the epoch's steps.
    Keras 3.15's multi-step loop fails to build under MirroredStrategy with several replicas
    ("while/cond/Placeholder"), so ``auto`` is 1 there.
    """
    if setting == "auto" and replicas > 1:
        return 1
    if setting == "auto":
        return max(d for d in range(1, min(AUTO_STEPS_PER_EXECUTION, steps_per_epoch) + 1) if steps_per_epoch % d == 0)
    if steps_per_epoch % setting:
        divisors = [d for d in range(1, steps_per_epoch + 1) if steps_per_epoch % d == 0]
        raise ConfigError(f"Invalid `train.steps_per_execution`: {setting} does not divide the {steps_per_epoch} "
                          f"training steps of an epoch (Keras would read into the next epoch); use one of "
                          f"{', '.join(map(str, divisors[:8]))} or auto")
    return setting


def configure_tensorflow(cfg: ExperimentConfig) -> None:
    """Environment TensorFlow reads once, at import: call before anything imports it.

    oneDNN's CPU kernels are outside TensorFlow's op determinism (the same run gave
    different losses with them on), so a deterministic config turns them off.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if cfg.deterministic:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _deterministic_ops(cfg: ExperimentConfig) -> None:
    """Deterministic kernels when asked (see configure_tensorflow for oneDNN)."""
    import tensorflow as tf

    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


def _seed(cfg: ExperimentConfig) -> None:
    """Same seed, same initial weights; augmentation layers carry their own seeds (augment.py)."""
    import keras

    keras.utils.set_random_seed(cfg.seed)


def _multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _task_metrics(model, task, test_ds) -> dict[str, float]:
    """Metrics Keras cannot compute on the training scale (e.g. price errors when training on log price)."""
    import numpy as np

    predictions, targets = [], []
    for features, labels in test_ds:
        predictions.append(model(features, training=False).numpy())
        targets.append(labels.numpy())
    return task.evaluate(np.concatenate(predictions), np.concatenate(targets))


def _diagnose(cfg: ExperimentConfig, history: dict, task, data):
    """The fit diagnosis of this run, against the trivial predictor of its training labels."""
    import numpy as np

    from pipeline.diagnose import diagnose

    metric = "accuracy" if task.name == "classification" else "rmse"
    if not {"loss", "val_loss", metric} <= set(history):
        return None
    labels = np.asarray(data.train_columns[data.spec.label])
    trivial = (np.bincount(labels.astype(np.int64)).max() / len(labels) if metric == "accuracy"
               else float(np.std(labels.astype(np.float64))))
    epochs = len(history["loss"])
    return diagnose(history, metric, metric == "accuracy", float(trivial), cfg.train.epochs, epochs < cfg.train.epochs)


class _Clock:
    """Seconds per stage of a run, logged as ``seconds_<stage>`` metrics (where does the time go?)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = now - self._last
        self._last = now


def _best_epoch(callbacks) -> int | None:
    """The 1-based epoch whose weights the model kept (EarlyStopping's choice), if any."""
    import keras

    for cb in callbacks:
        if isinstance(cb, keras.callbacks.EarlyStopping) and cb.restore_best_weights and cb.best_epoch is not None:
            return int(cb.best_epoch) + 1
    return None
