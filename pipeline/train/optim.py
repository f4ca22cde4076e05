"""Optimisers and learning-rate schedules by name.

Schedules are expressed per epoch in the config and converted to steps here,
so the same YAML means the same thing at any batch size.
"""

from __future__ import annotations

from pipeline.config import OptimizerConfig


def _sgd(cfg, kw):
    from keras import optimizers

    return optimizers.SGD(**kw)


def _momentum(cfg, kw):
    from keras import optimizers

    return optimizers.SGD(momentum=cfg.momentum, **kw)


def _nesterov(cfg, kw):
    from keras import optimizers

    return optimizers.SGD(momentum=cfg.momentum, nesterov=True, **kw)


def _adam(cfg, kw):
    from keras import optimizers

    return optimizers.Adam(**kw)


def _adamw(cfg, kw):
    from keras import optimizers

    return optimizers.AdamW(**{"weight_decay": 1e-4, **kw})


def _rmsprop(cfg, kw):
    from keras import optimizers

    return optimizers.RMSprop(**kw)


def _adagrad(cfg, kw):
    from keras import optimizers

    return optimizers.Adagrad(**kw)


OPTIMIZERS = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov": _nesterov,
    "adam": _adam,
    "adamw": _adamw,
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
}


def _cosine(cfg, total_steps, steps_per_epoch):
    from keras.optimizers.schedules import CosineDecay

    return CosineDecay(cfg.learning_rate, decay_steps=max(total_steps, 1), alpha=cfg.schedule.alpha)


def _exponential(cfg, total_steps, steps_per_epoch):
    from keras.optimizers.schedules import ExponentialDecay

    return ExponentialDecay(cfg.learning_rate, decay_steps=steps_per_epoch, decay_rate=cfg.schedule.decay_rate)


SCHEDULES = {
    "constant": lambda cfg, total, per_epoch: cfg.learning_rate,
    "cosine": _cosine,
    "exponential": _exponential,
    # A callback (ReduceLROnPlateau) lowers it; the optimiser starts constant.
    "plateau": lambda cfg, total, per_epoch: cfg.learning_rate,
}


LR_SCALING = {"none": lambda replicas: 1.0, "linear": float, "sqrt": lambda replicas: replicas**0.5}


def build_optimizer(cfg: OptimizerConfig, epochs: int, steps_per_epoch: int, replicas: int = 1):
    """The configured Keras optimiser with its schedule, clipping and weight decay.

    With ``scale_lr`` the learning rate follows the replica count (Goyal et al.'s linear rule
    for a global batch that grows with the replicas, or the square-root rule).
    """
    cfg = cfg.model_copy(update={"learning_rate": cfg.learning_rate * LR_SCALING[cfg.scale_lr](replicas)})
    kw = {"learning_rate": SCHEDULES[cfg.schedule.name](cfg, epochs * steps_per_epoch, steps_per_epoch)}
    if cfg.clipnorm:
        kw["clipnorm"] = cfg.clipnorm
    if cfg.clipvalue:
        kw["clipvalue"] = cfg.clipvalue
    if cfg.weight_decay:
        kw["weight_decay"] = cfg.weight_decay
    return OPTIMIZERS[cfg.name](cfg, kw)
