"""Tasks: what the label means, decided by the data (a TFDS ClassLabel is classification).

A task owns the loss, the metrics, the output head, the target transform and
the serving outputs, so data, models, training and export share one code path
for digits, house prices and ratings.
"""

from __future__ import annotations

from pipeline.config import ExperimentConfig


class Classification:
    """Softmax over the classes; serves ``probabilities`` and ``class_id``."""

    name = "classification"
    loss = "sparse_categorical_crossentropy"
    outputs = ("probabilities", "class_id")

    def __init__(self, cfg: ExperimentConfig, spec):
        self.spec = spec

    def metrics(self) -> list:
        return ["accuracy"]

    def head(self, x, reg, target_mean: float):
        from keras import layers

        return layers.Dense(self.spec.num_classes, activation="softmax", dtype="float32",
                            kernel_regularizer=reg, name="probabilities")(x)

    def target(self, y):
        return y

    def target_numpy(self, y):
        return y

    def serve(self, prediction) -> dict:
        import tensorflow as tf

        return {"probabilities": prediction, "class_id": tf.argmax(prediction, axis=-1)}

    def output_specs(self) -> dict:
        return {"probabilities": ("float32", [None, self.spec.num_classes]), "class_id": ("int64", [None])}

    def evaluate(self, predictions, targets) -> dict[str, float]:
        return {}

    # Sums a custom loop adds up across replicas and batches (custom_loop.py), then their logs.
    def loss_inputs(self, y, prediction):
        return y, prediction

    def sums(self, y, prediction) -> dict:
        import tensorflow as tf

        hit = tf.equal(tf.argmax(prediction, axis=-1), tf.cast(y, tf.int64))
        return {"correct": tf.reduce_sum(tf.cast(hit, tf.float32))}

    def logs(self, totals: dict, count: float) -> dict:
        return {"accuracy": totals["correct"] / count}


class Regression:
    """One float32 output; with ``target_transform: log`` it trains on log(y) and serves y."""

    name = "regression"
    loss = "mse"
    outputs = ("prediction",)

    def __init__(self, cfg: ExperimentConfig, spec):
        self.spec = spec
        self.log = cfg.features.target_transform == "log"

    def metrics(self) -> list:
        import keras

        return [keras.metrics.RootMeanSquaredError(name="rmse"), keras.metrics.MeanAbsoluteError(name="mae")]

    def head(self, x, reg, target_mean: float):
        import keras
        from keras import layers

        # Starting at the training mean saves the first epochs from learning an offset.
        return layers.Dense(1, dtype="float32", kernel_regularizer=reg, name="prediction",
                            bias_initializer=keras.initializers.Constant(target_mean))(x)

    def target(self, y):
        import tensorflow as tf

        y = tf.cast(y, tf.float32)
        return tf.math.log(y) if self.log else y

    def target_numpy(self, y):
        import numpy as np

        y = np.asarray(y, dtype=np.float32)
        return np.log(y) if self.log else y

    def invert(self, prediction):
        """Model output (training scale) -> the label's own scale."""
        import tensorflow as tf

        prediction = tf.squeeze(prediction, axis=-1)
        return tf.exp(prediction) if self.log else prediction

    def serve(self, prediction) -> dict:
        return {"prediction": self.invert(prediction)}

    def output_specs(self) -> dict:
        return {"prediction": ("float32", [None])}

    def loss_inputs(self, y, prediction):
        import tensorflow as tf

        return tf.expand_dims(tf.cast(y, tf.float32), -1), prediction

    def sums(self, y, prediction) -> dict:
        import tensorflow as tf

        error = tf.squeeze(prediction, -1) - tf.cast(y, tf.float32)
        return {"sse": tf.reduce_sum(tf.square(error)), "sae": tf.reduce_sum(tf.abs(error))}

    def logs(self, totals: dict, count: float) -> dict:
        return {"rmse": (totals["sse"] / count) ** 0.5, "mae": totals["sae"] / count}

    def evaluate(self, predictions, targets) -> dict[str, float]:
        """Errors on the label's own scale (and on the log scale when training on logs)."""
        import numpy as np

        pred, true = predictions.reshape(-1).astype(np.float64), targets.reshape(-1).astype(np.float64)
        if not self.log:
            return {}
        out = {"rmse_log": float(np.sqrt(np.mean((pred - true) ** 2)))}
        pred, true = np.exp(pred), np.exp(true)
        out.update(rmse_original=float(np.sqrt(np.mean((pred - true) ** 2))),
                   mae_original=float(np.mean(np.abs(pred - true))))
        return out


TASKS = {"classification": Classification, "regression": Regression}


def task_for(cfg: ExperimentConfig, spec):
    return TASKS[spec.task](cfg, spec)
