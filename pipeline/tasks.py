"""Tasks: what the label means, decided by the data (a TFDS ClassLabel is classification).

A task owns the loss, the output head, the target transform, the serving
outputs and its metrics: the Keras metric objects training updates, the
direction of every metric it logs, and the same figures computed in NumPy on
exported predictions (scikit-learn's). Data, models, training, tuning,
retraining and reports all ask the task, so digits, house prices and ratings
share one code path, and adding a metric touches ``METRICS`` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """One metric: its direction, its Keras object (for training) and its NumPy form (for exports)."""

    direction: str  # "max" or "min"
    keras: Callable  # name -> a keras.metrics.Metric
    numpy: Callable  # (y_true, y_pred) -> float, on the label's own scale
    share: bool = False  # a share of examples (0 to 1): two of them differ by points, not by a percentage


def _accuracy(name):
    import keras

    return keras.metrics.SparseCategoricalAccuracy(name=name)


def _rmse(name):
    import keras

    return keras.metrics.RootMeanSquaredError(name=name)


def _mae(name):
    import keras

    return keras.metrics.MeanAbsoluteError(name=name)


def _sk(name: str):
    """A scikit-learn metric by name, imported when first used (sklearn takes a second to import)."""
    def score(y_true, y_pred) -> float:
        import sklearn.metrics

        return float(getattr(sklearn.metrics, name)(y_true, y_pred))

    return score


METRICS = {
    "accuracy": Metric("max", _accuracy, _sk("accuracy_score"), share=True),
    "rmse": Metric("min", _rmse, _sk("root_mean_squared_error")),
    "mae": Metric("min", _mae, _sk("mean_absolute_error")),
    # Ranking figures the recommender family computes itself (models/recommender.py): direction only.
    "recall": Metric("max", None, None, share=True),
    "ndcg": Metric("max", None, None, share=True),
    # Forecasting figures (pipeline/forecast.py computes them beside its baselines): direction only.
    "mase": Metric("min", None, None),
    "smape": Metric("min", None, None),
    "directional_accuracy": Metric("max", None, None, share=True),
}
# Names a metric is logged under: val_accuracy, test_rmse, challenger_mae, best_val_accuracy, rmse_log ...
_PREFIXES = ("best_", "challenger_", "champion_", "test_", "val_")


_LOGGED = {"loss": Metric("min", None, None), **METRICS}  # what a logged name can be a figure of


def metric_of(name: str) -> Metric | None:
    """The metric (or loss) a logged name is a figure of: val_accuracy, test_rmse_log, best_val_loss; None if none."""
    base = name
    while base.startswith(_PREFIXES):
        base = base.split("_", 1)[1]
    for known, metric in _LOGGED.items():
        if base == known or base.startswith(known + "_"):
            return metric
    return None


def direction(name: str) -> str:
    """"max" or "min" for a metric as it is logged (losses and errors fall, accuracy rises).

    Raises:
        ConfigError: the name is no loss and no metric of any task.
    """
    if metric := metric_of(name):
        return metric.direction
    raise ConfigError(f"Unknown metric {name!r}: expected loss or one of {', '.join(METRICS)} "
                      "(optionally prefixed val_ or test_)")


class Task:
    """What every task shares: its metric objects, built from ``metric_names``."""

    metric_names: tuple[str, ...] = ()

    def metrics(self) -> list:
        """Fresh Keras metric objects, in the order they are logged."""
        return [METRICS[n].keras(n) for n in self.metric_names]

    def evaluate(self, predictions, targets) -> dict[str, float]:
        """The figures ``metrics`` adds beyond ``metric_names``, in NumPy (for baselines' predictions): none."""
        return {}

    def label_values(self, y):
        """Training labels as ``target_numpy`` made them (as Splits.train_columns holds them) on their own scale."""
        return np.asarray(y)

    @property
    def label_scale(self) -> str:
        """What Splits.train_columns holds of the label when not the label itself ("log"), else ""."""
        return ""

    def head_dense(self, model):
        """(The Dense layer that ``head`` ends in or feeds, the training labels in its output's units): where
        a wide model's linear start goes (models/registry.py)."""
        return model.layers[-1], lambda labels: np.asarray(labels)


class Classification(Task):
    """Softmax over the classes; serves ``probabilities``, ``class_id`` and its ``class_name``: a client of a
    table's ``yes``/``no`` or a folder's ``cat``/``dog`` reads the class, not an index whose names only the
    export's metadata file holds (TF Serving's REST API shows no file)."""

    name = "classification"
    loss = "sparse_categorical_crossentropy"
    outputs = ("probabilities", "class_id", "class_name")
    metric_names = ("accuracy",)
    label_output = "class_id"  # the serving output that compares with the label

    def __init__(self, cfg, spec):
        self.spec = spec

    def head(self, x, reg, labels):
        from keras import layers

        return layers.Dense(self.spec.num_classes, activation="softmax", dtype="float32",
                            kernel_regularizer=reg, name="probabilities")(x)

    def target(self, y):
        return y

    def target_numpy(self, y):
        return y

    def loss_inputs(self, y, prediction):
        """(labels, prediction) in the shapes the loss and the metrics take."""
        return y, prediction

    def serve(self, prediction, features=None) -> dict:
        import tensorflow as tf

        class_id = tf.argmax(prediction, axis=-1)
        names = [self.spec.class_name(i) for i in range(self.spec.num_classes)]
        return {"probabilities": prediction, "class_id": class_id, "class_name": tf.gather(tf.constant(names), class_id)}

    def output_specs(self) -> dict:
        return {"probabilities": ("float32", [None, self.spec.num_classes]), "class_id": ("int64", [None]),
                "class_name": ("string", [None])}

    def score_served(self, served, labels) -> dict[str, float]:
        """The task's metrics on an export's ``label_output`` against the dataset's labels."""
        return {n: METRICS[n].numpy(labels, served) for n in self.metric_names}


class Regression(Task):
    """One float32 output; with ``target_transform: log`` it trains on log(y) and serves y."""

    name = "regression"
    loss = "mse"
    outputs = ("prediction",)
    metric_names = ("rmse", "mae")
    label_output = "prediction"

    def __init__(self, cfg, spec):
        self.spec = spec
        self.log = cfg.features.target_transform == "log"

    def metrics(self) -> list:
        """With a log target, also the errors of log(y) and of y itself, named as such (``evaluate``'s figures).

        Computed in the graph with the others, so evaluation is one compiled pass over the test split.
        """
        import keras

        if not self.log:
            return super().metrics()
        return [*super().metrics(), keras.metrics.RootMeanSquaredError(name="rmse_log"),
                _of_exp(keras.metrics.RootMeanSquaredError, "rmse_original"),
                _of_exp(keras.metrics.MeanAbsoluteError, "mae_original")]

    def head(self, x, reg, labels):
        import keras
        from keras import layers

        # Starting at the training mean saves the first epochs from learning an offset.
        mean = float(np.mean(labels)) if labels is not None and len(labels) else 0.0
        return layers.Dense(1, dtype="float32", kernel_regularizer=reg, name="prediction",
                            bias_initializer=keras.initializers.Constant(mean))(x)

    def target(self, y):
        import tensorflow as tf

        y = tf.cast(y, tf.float32)
        return tf.math.log(y) if self.log else y

    def target_numpy(self, y):
        y = np.asarray(y, dtype=np.float32)
        return np.log(y) if self.log else y

    def original(self, y) -> np.ndarray:
        """Labels or predictions on the training scale -> the label's own scale (NumPy; ``invert`` in the graph)."""
        y = np.asarray(y, np.float64)
        return np.exp(y) if self.log else y

    @property
    def label_scale(self) -> str:
        return "log" if self.log else ""

    def label_values(self, y):
        if not self.log:
            return np.asarray(y)
        return np.round(self.original(y), 3)  # to the float32 log's precision: whole values come back whole

    def loss_inputs(self, y, prediction):
        import tensorflow as tf

        return tf.expand_dims(tf.cast(y, tf.float32), -1), prediction

    def invert(self, prediction):
        """Model output (training scale) -> the label's own scale."""
        import tensorflow as tf

        prediction = tf.squeeze(prediction, axis=-1)
        return tf.exp(prediction) if self.log else prediction

    def serve(self, prediction, features=None) -> dict:
        return {"prediction": self.invert(prediction)}

    def output_specs(self) -> dict:
        return {"prediction": ("float32", [None])}

    def evaluate(self, predictions, targets) -> dict[str, float]:
        """``metrics``' figures beyond rmse and mae, from predictions and targets on the training scale."""
        if not self.log:
            return {}
        pred, true = predictions.reshape(-1).astype(np.float64), targets.reshape(-1).astype(np.float64)
        return {"rmse_log": METRICS["rmse"].numpy(true, pred),
                "rmse_original": METRICS["rmse"].numpy(self.original(true), self.original(pred)),
                "mae_original": METRICS["mae"].numpy(self.original(true), self.original(pred))}

    def score_served(self, served, labels) -> dict[str, float]:
        """Errors of an export's predictions (the label's scale) against the dataset's labels (training scale)."""
        served, labels = np.asarray(served, np.float64), np.asarray(labels, np.float64)
        true = self.original(labels)
        out = {n: METRICS[n].numpy(true, served) for n in self.metric_names}
        if self.log:
            out["rmse_log"] = METRICS["rmse"].numpy(labels, np.log(np.maximum(served, 1e-9)))
        return out


def _of_exp(metric_class, name: str):
    """A Keras metric of exp(labels) and exp(predictions): a log-target model's error in the label's own units."""
    import keras

    class OfExp(metric_class):
        def update_state(self, y_true, y_pred, sample_weight=None):
            return super().update_state(keras.ops.exp(y_true), keras.ops.exp(y_pred), sample_weight)

    return OfExp(name=name)


class Forecasting(Task):
    """``horizon`` float32 outputs at once, trained on the target transform (level, change or log return).

    The head ends in the training labels' scale (per step mean and deviation), so the layers
    before it work on unit-scale numbers whatever the series' units. Serves ``forecast``, the
    levels in the series' own units (the transform inverted from the window's last value), and
    ``target``, what the model predicts (what the labels and the metrics are in).
    """

    name = "forecasting"
    loss = "mse"
    outputs = ("forecast", "target")
    metric_names = ("rmse", "mae")
    label_output = "target"

    def __init__(self, cfg, spec):
        self.spec = spec
        self.target_name, self.fc = cfg.data.label_key, cfg.forecast

    def head(self, x, reg, labels):
        from keras import layers

        labels = np.asarray(labels, np.float64).reshape(-1, self.fc.horizon)
        mean, var = labels.mean(axis=0), np.maximum(labels.var(axis=0), 1e-12)
        x = layers.Dense(self.fc.horizon, dtype="float32", kernel_regularizer=reg, name="forecast_scaled")(x)
        return layers.Normalization(mean=mean, variance=var, invert=True, dtype="float32", name="forecast")(x)

    def head_dense(self, model):
        scale = model.get_layer("forecast")  # the Normalization after the Dense, back to the labels' units
        return model.get_layer("forecast_scaled"), lambda labels: (
            (np.asarray(labels) - np.ravel(scale.mean)) / np.sqrt(np.ravel(scale.variance)))

    def target(self, y):
        return y  # the windows carry transformed labels already (data/windows.py)

    def target_numpy(self, y):
        return y

    def loss_inputs(self, y, prediction):
        return y, prediction

    def serve(self, prediction, features=None) -> dict:
        from pipeline.data.targets import invert

        last = features[self.target_name][:, -1]
        return {"forecast": invert(prediction, last, self.fc.target_transform), "target": prediction}

    def output_specs(self) -> dict:
        return {name: ("float32", [None, self.fc.horizon]) for name in self.outputs}

    def score_served(self, served, labels) -> dict[str, float]:
        served, labels = np.asarray(served, np.float64).reshape(-1), np.asarray(labels, np.float64).reshape(-1)
        return {n: METRICS[n].numpy(labels, served) for n in self.metric_names}


TASKS = {"classification": Classification, "regression": Regression, "forecasting": Forecasting}


def task_for(cfg, spec):
    return TASKS[spec.task](cfg, spec)
