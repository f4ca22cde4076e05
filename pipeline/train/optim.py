"""Optimisers and learning-rate schedules by name.

Schedules are expressed per epoch in the config and converted to steps here,
so the same YAML means the same thing at any batch size.
"""

from __future__ import annotations

from pipeline.config import OptimizerConfig

# name -> (Keras optimiser class, its arguments from the config beyond the shared ones)
OPTIMIZERS = {
    "sgd": ("SGD", lambda cfg: {}),
    "momentum": ("SGD", lambda cfg: {"momentum": cfg.momentum}),
    "nesterov": ("SGD", lambda cfg: {"momentum": cfg.momentum, "nesterov": True}),
    "adam": ("Adam", lambda cfg: {}),
    "adamw": ("AdamW", lambda cfg: {"weight_decay": 1e-4}),  # the default when weight_decay is 0
    "rmsprop": ("RMSprop", lambda cfg: {}),
    "adagrad": ("Adagrad", lambda cfg: {}),
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


def lowered(rate, from_step: int, factor: float):
    """``rate`` (a number or a schedule) times ``factor`` from step ``from_step`` on: fine-tuning's phase two."""
    import keras

    class Lowered(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            base = keras.ops.cast(rate(step) if callable(rate) else rate, "float32")
            return keras.ops.where(step >= from_step, base * factor, base)

        def get_config(self):
            return {"from_step": from_step, "factor": factor}

    return Lowered()


def build_optimizer(cfg: OptimizerConfig, epochs: int, steps_per_epoch: int, replicas: int = 1,
                    lower: tuple[int, float] | None = None):
    """The configured Keras optimiser with its schedule, clipping and weight decay.

    With ``scale_lr`` the learning rate follows the replica count (Goyal et al.'s linear rule
    for a global batch that grows with the replicas, or the square-root rule). ``lower``
    (epoch, factor) multiplies the rate by ``factor`` from that epoch on.
    """
    cfg = cfg.model_copy(update={"learning_rate": cfg.learning_rate * LR_SCALING[cfg.scale_lr](replicas)})
    kw = {"learning_rate": SCHEDULES[cfg.schedule.name](cfg, epochs * steps_per_epoch, steps_per_epoch)}
    if lower is not None:
        kw["learning_rate"] = lowered(kw["learning_rate"], lower[0] * steps_per_epoch, lower[1])
    if cfg.clipnorm:
        kw["clipnorm"] = cfg.clipnorm
    if cfg.clipvalue:
        kw["clipvalue"] = cfg.clipvalue
    if cfg.weight_decay:
        kw["weight_decay"] = cfg.weight_decay
    from keras import optimizers

    class_name, own = OPTIMIZERS[cfg.name]
    return getattr(optimizers, class_name)(**{**own(cfg), **kw})
