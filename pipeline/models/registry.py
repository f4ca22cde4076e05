"""Model registry: ``model.name`` -> a function that builds the body from raw inputs.

Every model is raw inputs -> feature encoders (models/features.py) -> body ->
the task's float32 head (tasks.py). Bodies differ only in how they combine
encoded features; the regularisation knobs live in blocks.py, once.
"""

from __future__ import annotations

from pipeline.config import ExperimentConfig
from pipeline.errors import ConfigError
from pipeline.models.blocks import conv_block, dense_block, regularizer
from pipeline.models.features import encode


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
    x = _concat([pool[cfg.model.pooling](name="pool")(x), *encoded.vectors])
    return (dense_block(x, cfg.model.head_units, cfg.model, reg, name="head") if cfg.model.head_units else x), encoded


def mlp(inputs, cfg: ExperimentConfig, spec, columns, reg, augmenter):
    """``depth`` dense blocks of ``width`` units over every encoded feature (images flattened)."""
    from keras import layers

    encoded = encode(inputs, spec, cfg, columns, reg, augmenter)
    flat = [layers.Flatten(name=f"flatten{i}")(image) for i, image in enumerate(encoded.images)]
    x = _concat([*flat, *encoded.vectors])
    for i in range(cfg.model.depth):
        x = dense_block(x, cfg.model.width, cfg.model, reg, name=f"dense{i + 1}")
    return x, encoded


def _concat(tensors: list):
    from keras import layers

    return tensors[0] if len(tensors) == 1 else layers.Concatenate(name="features")(tensors)


def _recommender(*args):
    from pipeline.models.recommender import recommender

    return recommender(*args)


MODELS = {
    "cnn": cnn,
    "mlp": mlp,
    "tabular_mlp": mlp,  # the same body: the encoders make it tabular
    "recommender": _recommender,
}


class _NoExtras:
    """Families without extra signatures or metrics."""

    @staticmethod
    def serving_signatures(model, cfg, spec, columns, task) -> dict:
        return {}

    @staticmethod
    def evaluate(signatures, test_ds, spec, cfg) -> dict:
        return {}


FAMILIES = {"recommender": "pipeline.models.recommender"}  # families with extra signatures or metrics


def family(name: str):
    """The module (or stand-in) giving a model family's extra signatures and metrics."""
    import importlib

    return importlib.import_module(FAMILIES[name]) if name in FAMILIES else _NoExtras


def build_model(cfg: ExperimentConfig, spec, columns: dict | None = None, augmenter=None):
    """Build the configured model for data described by ``spec`` (a DataSpec).

    Args:
        cfg: The experiment config.
        spec: The DataSpec: features, label and task.
        columns: Training-split columns for preprocessing statistics (Splits.train_columns).
        augmenter: Augmentation layer to place inside the model; default none.

    Returns:
        The uncompiled Keras model; ``model.feature_info`` describes each feature's encoding.
    """
    import keras
    import numpy as np

    from pipeline.models.features import inputs_for
    from pipeline.tasks import task_for

    columns = columns or {}
    inputs = inputs_for(spec)
    reg = regularizer(cfg.regularization)
    x, encoded = MODELS[cfg.model.name](inputs, cfg, spec, columns, reg, augmenter)
    target = columns.get(spec.label)
    target_mean = float(np.mean(target)) if target is not None and spec.task == "regression" and len(target) else 0.0
    outputs = task_for(cfg, spec).head(x, reg, target_mean)
    model = keras.Model(inputs, outputs, name=f"{cfg.name}_{cfg.model.name}")
    model.feature_info = encoded.info
    return model
