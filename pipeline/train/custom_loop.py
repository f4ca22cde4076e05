"""``model.fit``'s contract with a ``strategy.run`` step, for where Keras' own fit fails.

Keras 3.15's ``model.fit`` under MultiWorkerMirroredStrategy fails at its first
step (keras-team/keras issue 20585: "Attempt to convert a value (PerReplica...)").
This loop trains the same model with the same optimizer and drives the same
Keras callbacks (EarlyStopping, ReduceLROnPlateau, the checkpoints, tracking)
through ``CallbackList``, with the logs fit would give: loss, the task's
metrics, and their ``val_`` twins. tests/test_workers.py pins both facts, so a
Keras upgrade that fixes (or breaks) fit shows up.
"""

from __future__ import annotations

import sys
import time


def fit(model, strategy, task, train_ds, val_ds, epochs: int, initial_epoch: int, steps_per_epoch: int,
        callbacks: list, verbose: int = 2) -> None:
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.get(task.loss)

    def train_replica(x, y):
        with tf.GradientTape() as tape:
            per_example, sums = _batch_sums(model, task, loss_fn, x, y, training=True)
            loss = tf.nn.compute_average_loss(per_example)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return sums

    def eval_replica(x, y):
        return _batch_sums(model, task, loss_fn, x, y, training=False)[1]

    def reduce(per_replica):
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    @tf.function
    def train_step(iterator):
        return reduce(strategy.run(train_replica, args=next(iterator)))

    @tf.function
    def eval_step(batch):
        return reduce(strategy.run(eval_replica, args=batch))

    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    iterator = iter(strategy.experimental_distribute_dataset(train_ds))
    validation = strategy.experimental_distribute_dataset(val_ds)
    callback_list.on_train_begin()
    logs: dict = {}
    for epoch in range(initial_epoch, epochs):
        start = time.perf_counter()
        callback_list.on_epoch_begin(epoch)
        totals: dict = {}
        for _ in range(steps_per_epoch):
            _accumulate(totals, train_step(iterator))
        logs = _logs(task, totals)
        if model.losses:
            logs["loss"] += float(tf.add_n(model.losses))
        val_totals: dict = {}
        for batch in validation:
            _accumulate(val_totals, eval_step(batch))
        logs.update({f"val_{k}": v for k, v in _logs(task, val_totals).items()})
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
    totals: dict = {}
    for x, y in dataset:
        _accumulate(totals, _batch_sums(model, task, loss_fn, x, y, training=False)[1])
    logs = _logs(task, totals)
    logs["loss"] += sum(float(v) for v in model.losses)
    return logs


def _batch_sums(model, task, loss_fn, x, y, training: bool):
    """Per-example losses and the sums an epoch's logs are made of (added up over batches and replicas)."""
    import tensorflow as tf

    prediction = model(x, training=training)
    per_example = loss_fn(*task.loss_inputs(y, prediction))
    sums = {"loss": tf.reduce_sum(per_example), "count": tf.cast(tf.size(per_example), tf.float32),
            **task.sums(y, prediction)}
    return per_example, sums


def _accumulate(totals: dict, sums: dict) -> None:
    for key, value in sums.items():
        totals[key] = totals.get(key, 0.0) + float(value)


def _logs(task, totals: dict) -> dict:
    count = max(totals.pop("count"), 1.0)
    return {"loss": totals.pop("loss") / count, **task.logs(totals, count)}
