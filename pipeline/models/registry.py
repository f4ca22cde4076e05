"""Model registry: ``model.name`` -> a function that builds the body.

Every model is inputs (raw pixels) -> [augmentation, when placed in the model]
-> rescaling to [0, 1] -> body -> float32 softmax head. The head stays float32
so mixed precision never changes what the exported model returns.
"""

from __future__ import annotations

from pipeline.config import ExperimentConfig, ModelConfig
from pipeline.models.blocks import conv_block, dense_block, regularizer


def cnn(x, cfg: ModelConfig, reg):
    """Conv blocks doubling the filters each block, then an optional dense layer."""
    from keras import layers

    for i in range(cfg.depth):
        x = conv_block(x, cfg.width * 2**i, cfg, reg, name=f"block{i + 1}")
    pool = {"flatten": layers.Flatten, "avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}
    x = pool[cfg.pooling](name="pool")(x)
    return dense_block(x, cfg.head_units, cfg, reg, name="head") if cfg.head_units else x


def mlp(x, cfg: ModelConfig, reg):
    """``depth`` dense blocks of ``width`` units on the flattened input."""
    from keras import layers

    x = layers.Flatten(name="flatten")(x)
    for i in range(cfg.depth):
        x = dense_block(x, cfg.width, cfg, reg, name=f"dense{i + 1}")
    return x


MODELS = {"cnn": cnn, "mlp": mlp}


def build_model(cfg: ExperimentConfig, spec, augmenter=None):
    """Build the configured classifier for data described by ``spec`` (a DataSpec).

    Args:
        cfg: The experiment config.
        spec: The DataSpec: input name, shape and number of classes.
        augmenter: Augmentation layer to place inside the model; default none.
    """
    import keras
    from keras import layers

    inputs = keras.Input(spec.input_shape, name=spec.input_name, dtype="float32")
    x = augmenter(inputs) if augmenter is not None else inputs
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(x)
    reg = regularizer(cfg.regularization)
    x = MODELS[cfg.model.name](x, cfg.model, reg)
    outputs = layers.Dense(
        spec.num_classes, activation="softmax", dtype="float32", kernel_regularizer=reg, name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=f"{cfg.name}_{cfg.model.name}")
