"""Fit and evaluate a compiled model: Keras' fit, or the custom loop where fit fails.

The train job (pipeline/jobs/train.py) and tuning trials build their model with
``build_compiled`` and train it with ``fit``, so a run and a trial are the same
model, optimiser and loop.
"""

from __future__ import annotations

from pipeline.errors import ConfigError

AUTO_STEPS_PER_EXECUTION = 16


def build_compiled(cfg, data, task, strategy, augmenter=None):
    """The registry's model for ``cfg``, compiled under ``strategy``: one recipe for runs and tuning trials.

    Args:
        augmenter: Augmentation layers to put inside the model (``augment.placement: model``); default None.
    """
    from pipeline.models import backbone, build_model
    from pipeline.train.optim import build_optimizer

    tune = backbone.phases(cfg)
    with strategy.scope():
        model = build_model(cfg, data.spec, data.train_columns, augmenter=augmenter,
                            steps_per_epoch=data.steps_per_epoch, held_out=data.validation_columns)
        model.compile(
            optimizer=build_optimizer(cfg.optimizer, cfg.train.epochs, data.steps_per_epoch,
                                      strategy.num_replicas_in_sync,
                                      lower=(tune.frozen_epochs, tune.learning_rate_factor) if tune and tune.layers
                                      else None),
            loss=task.loss,
            metrics=task.metrics(),
            steps_per_execution=steps_per_execution(cfg.train.steps_per_execution, data.steps_per_epoch,
                                                    strategy.num_replicas_in_sync),
            jit_compile=cfg.train.jit_compile,
        )
        # The optimizer's variables are made here, under the strategy, for every caller: a first step traced under
        # MirroredStrategy cannot make them, and a resume or a continued trial loads its state into them.
        if tune:
            backbone.prepare(model, cfg)  # on the variables of phase two
        else:
            model.optimizer.build(model.trainable_variables)
    return model


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


def custom(cfg, strategy, model) -> bool:
    """Whether this run trains in the custom loop: asked for, or under auto where Keras 3.15's fit fails:
    MultiWorkerMirroredStrategy (keras#20585), and text inputs on several replicas (fit builds the model
    from the first batch averaged across the replicas, and strings cannot be averaged)."""
    import tensorflow as tf

    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    text_on_replicas = strategy.num_replicas_in_sync > 1 and any(x.dtype == "string" for x in model.inputs)
    chosen = cfg.train.loop == "custom" or (cfg.train.loop == "auto" and (multi_worker or text_on_replicas))
    if chosen and (cfg.train.jit_compile or cfg.train.steps_per_execution not in ("auto", 1)):
        raise ConfigError("`train.jit_compile` and `train.steps_per_execution` apply to Keras' fit only; the "
                          "custom loop (several workers, or text inputs on several replicas) runs without them: "
                          "unset them.")
    return chosen


def fit(cfg, model, strategy, task, data, initial_epoch: int, callbacks: list, verbose: int) -> None:
    """Train ``model`` on ``data`` from ``initial_epoch`` to ``train.epochs``, driving ``callbacks``."""
    from pipeline.train import custom_loop

    if custom(cfg, strategy, model):
        custom_loop.fit(model, strategy, task, data.train, data.validation, cfg.train.epochs, initial_epoch,
                        data.steps_per_epoch, callbacks, verbose=verbose, per_worker=by_file(data, strategy))
        return
    model.fit(data.train, validation_data=data.validation, epochs=cfg.train.epochs, initial_epoch=initial_epoch,
              steps_per_epoch=data.steps_per_epoch, callbacks=callbacks, verbose=verbose,
              shuffle=False)  # the tf.data pipeline shuffles, seeded


FILE_SHARES = 4  # training files per worker, at least, for each to read only its own


def by_file(data, strategy):
    """Each worker's training stream over its own shard files, when the workers can split them (else None).

    Reading by FILE, a worker reads 1/N of the data instead of all of it and keeps 1/N of each
    batch (DATA). The workers' shares differ by up to a file, and each runs the same steps, so
    the smaller share is read a little more often: FILE_SHARES files a worker keep that under a
    quarter. It also needs a global batch the workers can split evenly; otherwise they split batches.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    workers = strategy.num_replicas_in_sync // max(1, len(strategy.extended.worker_devices))
    if (workers > 1 and data.train_for and data.train_files >= FILE_SHARES * workers
            and data.global_batch % workers == 0):
        return data.train_for
    return None


def evaluate(cfg, model, strategy, task, test_ds) -> dict[str, float]:
    """Test metrics, ``test_``-prefixed: the loss and the task's Keras metrics, in one pass over the split."""
    from pipeline.train import custom_loop

    scores = (custom_loop.evaluate(model, task, test_ds) if custom(cfg, strategy, model)
              else model.evaluate(test_ds, return_dict=True, verbose=0))
    return {f"test_{k}": float(v) for k, v in scores.items()}


def best_epoch(callbacks) -> int | None:
    """The 1-based epoch whose weights the model kept (EarlyStopping's choice), if any."""
    import keras

    for cb in callbacks:
        if isinstance(cb, keras.callbacks.EarlyStopping) and cb.restore_best_weights and cb.best_epoch is not None:
            return int(cb.best_epoch) + 1
    return None
