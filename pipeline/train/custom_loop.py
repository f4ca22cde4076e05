"""``model.fit``'s contract with a ``strategy.run`` step, for where Keras' own fit fails.

Keras 3.15's ``model.fit`` under MultiWorkerMirroredStrategy fails at its first
step (keras-team/keras issue 20585: "Attempt to convert a value (PerReplica...)").
This loop trains the same model with the same optimizer and drives the same
Keras callbacks (EarlyStopping, ReduceLROnPlateau, the checkpoints, tracking)
through ``CallbackList``, with the logs fit would give: loss (with the
regularisation penalty, as fit logs it), the task's metrics, and their ``val_``
twins. The task's own Keras metric objects are updated inside ``strategy.run``
(as TF Model Garden's base trainer does) and read once an epoch, summed over
replicas and workers. tests/test_workers.py pins both facts, so a Keras upgrade
that fixes (or breaks) fit shows up.
"""

from __future__ import annotations

import sys
import time


def fit(model, strategy, task, train_ds, val_ds, epochs: int, initial_epoch: int, steps_per_epoch: int,
        callbacks: list, verbose: int = 2, per_worker=None) -> None:
    """Train as ``model.fit`` would; ``per_worker(input_context)``, when given, is each worker's own training
    stream (reading its own files) instead of ``train_ds`` split batch by batch."""
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.get(task.loss)
    with strategy.scope():
        train_metrics, val_metrics = _metrics(task), _metrics(task)

    def train_replica(x, y):
        with tf.GradientTape() as tape:
            prediction = model(x, training=True)
            per_example = _penalised(model, loss_fn(*task.loss_inputs(y, prediction)))
            loss = tf.nn.compute_average_loss(per_example)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        _update(train_metrics, task, per_example, y, prediction)

    def eval_replica(x, y):
        prediction = model(x, training=False)
        _update(val_metrics, task, _penalised(model, loss_fn(*task.loss_inputs(y, prediction))), y, prediction)

    def traced():  # a fresh step whenever a callback changes what trains (fine-tuning's phase two)
        @tf.function
        def train_step(iterator):
            strategy.run(train_replica, args=next(iterator))

        return train_step

    @tf.function
    def eval_step(batch):
        strategy.run(eval_replica, args=batch)

    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    if per_worker is not None:
        iterator = iter(strategy.distribute_datasets_from_function(per_worker))
        if verbose:
            print("Each worker reads its own shard files of the training split (FILE sharding)", flush=True)
    else:
        iterator = iter(strategy.experimental_distribute_dataset(train_ds))
    validation = strategy.experimental_distribute_dataset(val_ds)
    callback_list.on_train_begin()
    logs: dict = {}
    train_step, trained = None, None
    for epoch in range(initial_epoch, epochs):
        start = time.perf_counter()
        callback_list.on_epoch_begin(epoch)
        if trained != len(model.trainable_variables):
            train_step, trained = traced(), len(model.trainable_variables)
        for metric in (*train_metrics, *val_metrics):
            metric.reset_state()
        for step in range(steps_per_epoch):
            train_step(iterator)
            callback_list.on_train_batch_end(step)  # a long epoch's progress line (callbacks.epoch_progress)
        for batch in validation:
            eval_step(batch)
        logs = {**_results(train_metrics), **_results(val_metrics, "val_")}
        callback_list.on_epoch_end(epoch, logs)
        if verbose:
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - start:.0f}s - {shown}", file=sys.stdout, flush=True)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)


def evaluate(model, task, dataset) -> dict[str, float]:
    """Test metrics without Keras' distributed evaluate (the chief alone, calling the model)."""
    import keras

    loss_fn = keras.losses.get(task.loss)
    metrics = _metrics(task)
    for x, y in dataset:
        prediction = model(x, training=False)
        _update(metrics, task, _penalised(model, loss_fn(*task.loss_inputs(y, prediction))), y, prediction)
    return _results(metrics)


def _metrics(task) -> list:
    """The loss tracker, then the task's own metric objects."""
    import keras

    return [keras.metrics.Mean(name="loss"), *task.metrics()]


def _penalised(model, per_example):
    """Per-example losses plus the weights' penalty, as Keras' fit logs its loss."""
    import tensorflow as tf

    return per_example + tf.add_n(model.losses) if model.losses else per_example


def _update(metrics: list, task, per_example, y, prediction) -> None:
    loss, *others = metrics
    loss.update_state(per_example)
    labels, outputs = task.loss_inputs(y, prediction)
    for metric in others:
        metric.update_state(labels, outputs)


def _results(metrics: list, prefix: str = "") -> dict[str, float]:
    return {prefix + m.name: float(m.result()) for m in metrics}
