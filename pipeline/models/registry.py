"""Model registry: ``model.name`` -> a function that builds the body from raw inputs.

Every model is raw inputs -> feature encoders (models/features.py) -> body ->
the task's float32 head (tasks.py). Bodies differ only in how they combine
encoded features; the regularisation knobs live in blocks.py, once.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import ExperimentConfig
from pipeline.errors import ConfigError
from pipeline.models.blocks import (
    batch_norm_momentum,
    batch_norm_on,
    conv_block,
    deep_rows_only,
    dense_block,
    regularizer,
)
from pipeline.models.features import encode, functional, layer_name


def cnn(inputs, cfg: ExperimentConfig, spec, columns, reg, augmenter):
    """Conv blocks over the one image feature (filters double per block), other features joined before the head."""
    from keras import layers

    encoded = encode(inputs, spec, cfg, columns, reg, augmenter)
    if len(encoded.images) != 1:
        raise ConfigError(f"model `cnn` needs exactly one image feature; {spec.name} gives {len(encoded.images)}. Use `mlp`.")
    x = encoded.images[0]
    for i in range(cfg.model.depth):
        x = conv_block(x, cfg.model.width * 2**i, cfg.model, reg, name=f"block{i + 1}")
    pool = {"flatten": layers.Flatten, "avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}
    x = _concat([pool[cfg.model.pooling](name="pool")(x), *encoded.every_vector])
    return (dense_block(x, cfg.model.head_units, cfg.model, reg, name="head") if cfg.model.head_units else x), encoded


def mlp(inputs, cfg: ExperimentConfig, spec, columns, reg, augmenter):
    """``depth`` dense blocks of ``width`` units over every encoded feature (images and windows flattened)."""
    from keras import layers

    encoded = encode(inputs, spec, cfg, columns, reg, augmenter)
    flat = [layers.Flatten(name=f"flatten{i}")(image) for i, image in enumerate(encoded.images)]
    flat += [layers.Flatten(name=layer_name(name, "flat"))(seq) for name, seq in encoded.sequences.items()]
    features = _concat([*flat, *encoded.vectors])
    x = layers.Concatenate(name="deep_inputs")([features, *encoded.deep]) if encoded.deep else features
    for i in range(cfg.model.depth):
        x = dense_block(x, cfg.model.width, cfg.model, reg, name=f"dense{i + 1}")
    if cfg.model.wide:  # the head also sees the encoded features: a linear model plus the deep part
        x = layers.Rescaling(1.0, name="deep_scale")(x)  # a regression's linear start sets it (start_at_linear_fit)
        x = layers.Concatenate(name="wide_and_deep")([features, x])
        encoded.wide = features.shape[-1]
    return x, encoded


def _concat(tensors: list):
    from keras import layers

    return tensors[0] if len(tensors) == 1 else layers.Concatenate(name="features")(tensors)


def _recommender(*args):
    from pipeline.models.recommender import recommender

    return recommender(*args)


def _backbone(*args):
    from pipeline.models.backbone import body

    return body(*args)


def _sequence(name: str):
    def body(*args):
        from pipeline.models import sequence

        return (sequence.conv1d if name == "conv1d" else sequence.recurrent(name))(*args)

    return body


MODELS = {
    "cnn": cnn,
    "mlp": mlp,  # also over the flattened window of a series
    "tabular_mlp": mlp,  # the same body: the encoders make it tabular
    "recommender": _recommender,
    "lstm": _sequence("lstm"),
    "gru": _sequence("gru"),
    "conv1d": _sequence("conv1d"),
    "backbone": _backbone,  # a pretrained Keras application, fine-tuned in two phases
    "audio_cnn": cnn,  # the same body over the log-mel spectrogram the audio encoder makes
}


class NoExtras:
    """Families without extra signatures or test figures of their own."""

    @staticmethod
    def serving_signatures(model, cfg, spec, columns, task) -> dict:
        return {}

    @staticmethod
    def evaluate(signatures, model, data, cfg) -> dict:
        return {}


# Families with extra signatures or metrics: by model name, by task, or by the signal the data holds.
FAMILIES = {"recommender": "pipeline.models.recommender", "forecasting": "pipeline.forecast",
            "audio": "pipeline.models.audio", "image": "pipeline.models.images"}


def family(model: str, spec):
    """A family's ``serving_signatures`` and ``evaluate`` (extra test metrics, named as logged): its module's,
    each one it lacks ``NoExtras``'."""
    import importlib
    from types import SimpleNamespace

    name = next((n for n in (model, spec.task, *(f.kind for f in spec.features if f.signal)) if n in FAMILIES), None)
    module = importlib.import_module(FAMILIES[name]) if name else NoExtras
    return SimpleNamespace(**{f: getattr(module, f, getattr(NoExtras, f)) for f in ("serving_signatures", "evaluate")})


def check(cfg: ExperimentConfig) -> None:
    """Reject what the model cannot be built from (a weights file that does not fit) before a run opens."""
    if cfg.model.name == "backbone":
        from pipeline.models import backbone

        backbone.check(cfg)


def build_model(cfg: ExperimentConfig, spec, columns: dict | None = None, augmenter=None,
                steps_per_epoch: int | None = None, held_out: dict | None = None):
    """Build the configured model for data described by ``spec`` (a DataSpec).

    Args:
        cfg: The experiment config.
        spec: The DataSpec: features, label and task.
        columns: Training-split columns for preprocessing statistics (Splits.train_columns).
        augmenter: Augmentation layer to place inside the model; default none.
        steps_per_epoch: The training feed's (Splits.steps_per_epoch), for ``model.batch_norm`` and
            ``model.batch_norm_momentum``: auto.
        held_out: A forecast's validation windows as ``columns`` holds training ones (Splits.validation_columns):
            a wide model's linear start chooses its penalty on them.

    Returns:
        The uncompiled Keras model; ``model.feature_info`` describes each feature's encoding.
    """
    from pipeline.models.features import inputs_for
    from pipeline.tasks import task_for

    columns = columns or {}
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(
        update={"batch_norm": batch_norm_on(cfg.model, steps_per_epoch),
                "batch_norm_momentum": batch_norm_momentum(cfg.model, steps_per_epoch)})})
    inputs = inputs_for(spec)
    reg = regularizer(cfg.regularization)
    x, encoded = MODELS[cfg.model.name](inputs, cfg, spec, columns, reg, augmenter)
    task = task_for(cfg, spec)
    # A wide head's rows for the encoded features hold the linear start, which chose its own penalty: the
    # config's (for the deep part) would pull that fit away from where its penalty left it.
    head_reg = deep_rows_only(reg, encoded.wide) if reg is not None and encoded.wide else reg
    outputs = task.head(x, head_reg, columns.get(spec.label))
    model = functional(inputs, outputs, name=f"{cfg.name}_{cfg.model.name}")
    model.feature_info = encoded.info
    if cfg.model.wide and task.name in ("classification", "regression", "forecasting") and {*inputs, spec.label} <= set(columns):
        start_at_linear_fit(model, task, {n: columns[n] for n in inputs}, columns[spec.label],
                            ({n: held_out[n] for n in inputs}, held_out[spec.label])
                            if held_out and len(held_out[spec.label]) else None)  # no windows: leave-one-out
    return model


LINEAR_START_ROWS = 100_000  # training rows the wide part's starting fit sees...
LINEAR_START_VALUES = 20_000_000  # ...at most this many encoded values (one-hot columns of large vocabularies)


def start_at_linear_fit(model, task, features: dict, labels, held_out: tuple | None = None) -> None:
    """Start a wide & deep model as the regularised linear model fitted on the training split's encoded features
    (a forecast: one ridge fit of the window per step ahead).

    The head's weights on those features are the fit's, on the deep part zero: the model begins where
    the linear baseline ends, and early stopping keeps the epoch the validation split prefers (on a small,
    linear table, one that has moved little from the start). Every worker fits the same rows alike. A forecast's
    penalty is the one its validation windows (``held_out``: features, labels) prefer, as the ridge baseline's.

    A regression's deep part then speaks in units of the fit's residual (its ``deep_scale``: the
    residual's deviation on the training rows), which is what it has left to learn: in the label's raw
    units, steps of about the learning rate would take a price's residual of hundreds of dollars
    thousands of steps to reach, and a rating's would be reached at once (bench/README.md, tables).
    A forecast's head is in its labels' standard units already; classes' logits have no units.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from pipeline.design import linear_model, ridge_chosen_on, row_blocks, stacked

    wide = model.get_layer("wide_and_deep").input[0]
    encoder = functional(model.input, wide)
    rows = max(1, min(len(labels), LINEAR_START_ROWS, LINEAR_START_VALUES // wide.shape[-1]))
    head, in_its_units = task.head_dense(model)

    def design_of(features: dict, labels):  # the wide part's encoded inputs, and the labels in the head's units
        return (stacked(np.asarray(encoder(block, training=False), dtype="float32")  # float16 or bfloat16 under
                        for block in row_blocks({n: v[:rows] for n, v in features.items()}, 4096)),  # mixed precision
                in_its_units(np.asarray(labels)[:rows]))  # the training scale, standardised for a forecast's head

    design, target = design_of(features, labels)
    with warnings.catch_warnings():  # a starting point need not have converged
        warnings.simplefilter("ignore", ConvergenceWarning)
        if held_out is not None:  # a forecast's windows: they overlap, so no leave-one-out
            fit = ridge_chosen_on(design, target, *design_of(*held_out))
        else:
            fit = linear_model(task.name, design.shape, target).fit(design, target)  # ridge for all but classes
    kernel, bias = (np.zeros_like(w) for w in head.get_weights())
    d = design.shape[1]
    if task.name != "classification":  # one output (a price) or one per step ahead (a forecast)
        kernel[:d, :], bias[:] = np.reshape(fit.coef_, (len(bias), d)).T, fit.intercept_
    elif len(fit.classes_) == 2:  # one logit, for the second class; the first's stays 0
        kernel[:d, fit.classes_[1]], bias[fit.classes_[1]] = fit.coef_[0], fit.intercept_[0]
    else:
        kernel[:d, fit.classes_], bias[fit.classes_] = fit.coef_.T, fit.intercept_
    head.set_weights([kernel, bias])
    if task.name == "regression":
        residual = float(np.std(target - fit.predict(design)))
        model.get_layer("deep_scale").scale = residual if residual > 0 else 1.0
