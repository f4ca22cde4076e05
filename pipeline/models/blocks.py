"""Building blocks shared by every model: the regularisation knobs live here, once.

A block is (conv or dense) -> [BatchNormalization] -> activation -> [Dropout].
With BatchNormalization the preceding layer has no bias (BN's beta replaces it).
Dropout and BatchNormalization layers exist only when configured, so a model
summary shows exactly what the config asked for.
"""

from __future__ import annotations

from pipeline.config import ModelConfig, RegularizationConfig


def regularizer(cfg: RegularizationConfig):
    """The Keras kernel regulariser for the config, or None for 'none'."""
    from keras import regularizers

    factories = {
        "none": lambda: None,
        "l1": lambda: regularizers.L1(cfg.l1),
        "l2": lambda: regularizers.L2(cfg.l2),
        "l1_l2": lambda: regularizers.L1L2(l1=cfg.l1, l2=cfg.l2),
    }
    return factories[cfg.kernel]()


def deep_rows_only(reg, skip: int):
    """``reg`` over a kernel's rows from ``skip`` on: a wide & deep head's penalty on its deep part alone."""
    from keras import regularizers

    class DeepRows(regularizers.Regularizer):
        def __init__(self, reg, skip: int):  # ``reg`` a regulariser or its config: from_config round-trips
            self.reg, self.skip = regularizers.get(reg), skip

        def __call__(self, kernel):
            return self.reg(kernel[self.skip:])

        def get_config(self):
            return {"reg": regularizers.serialize(self.reg), "skip": self.skip}

    return DeepRows(reg, skip)


BN_STEPS = 10  # steps an epoch below which ``model.batch_norm: auto`` leaves BatchNormalization out


def batch_norm_on(cfg: ModelConfig, steps_per_epoch: int | None) -> bool:
    """``model.batch_norm``, with auto resolved for epochs of ``steps_per_epoch`` (on if unknown).

    A folder of a few dozen files is a handful of batches of eight an epoch: the batches' statistics
    are noisy and the moving ones, which inference uses, trail a network that changes within few
    updates, even at the momentum below. Models without the layers matched or beat those with them
    on every small folder measured (bench/README.md, small folders), so auto leaves them out there.
    """
    if cfg.batch_norm != "auto":
        return cfg.batch_norm
    return steps_per_epoch is None or steps_per_epoch >= BN_STEPS


def batch_norm_momentum(cfg: ModelConfig, steps_per_epoch: int | None) -> float:
    """``model.batch_norm_momentum``, with auto resolved for epochs of ``steps_per_epoch`` (0.9 if unknown).

    The moving statistics are what inference uses. At momentum m they average about 1 / (1 - m)
    steps: at 0.9, ten. A few hundred examples in batches of 32 are four steps an epoch, so the
    statistics then span epochs of a network that changes fast at the start, and the validation
    loss of a model that fits its training batches rises (one class of tones everywhere, with a
    diagnosis of overfitting). Auto keeps them to about one epoch: 1 - 1 / steps when that is below 0.9.
    """
    if cfg.batch_norm_momentum != "auto":
        return cfg.batch_norm_momentum
    return min(0.9, 1.0 - 1.0 / steps_per_epoch) if steps_per_epoch else 0.9


def conv_block(x, filters: int, cfg: ModelConfig, reg, name: str):
    from keras import layers

    x = layers.Conv2D(
        filters, cfg.kernel_size, padding="same", use_bias=not cfg.batch_norm,
        kernel_regularizer=reg, name=f"{name}_conv",
    )(x)
    x = _normalise_activate(x, cfg, name)
    if min(x.shape[1], x.shape[2]) >= 2:
        x = layers.MaxPooling2D(name=f"{name}_pool")(x)
    return _dropout(x, cfg, name)


def dense_block(x, units: int, cfg: ModelConfig, reg, name: str):
    from keras import layers

    x = layers.Dense(units, use_bias=not cfg.batch_norm, kernel_regularizer=reg, name=f"{name}_dense")(x)
    x = _normalise_activate(x, cfg, name)
    return _dropout(x, cfg, name)


def _normalise_activate(x, cfg: ModelConfig, name: str):
    from keras import layers

    if cfg.batch_norm:
        x = layers.BatchNormalization(momentum=cfg.batch_norm_momentum, name=f"{name}_bn")(x)
    return layers.Activation(cfg.activation, name=f"{name}_act")(x)


def _dropout(x, cfg: ModelConfig, name: str):
    from keras import layers

    return layers.Dropout(cfg.dropout, name=f"{name}_dropout")(x) if cfg.dropout > 0 else x
