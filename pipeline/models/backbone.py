"""Pretrained image backbones (Keras applications) under the pipeline's head, fine-tuned in two phases.

The model still takes the pipeline's raw pixels: resizing to the backbone's size,
grey to RGB and the backbone's own preprocessing are layers inside it, so the
export's signature does not change. The backbone is called with
``training=False``, so its BatchNormalization layers stay in inference mode even
once unfrozen, and they are never unfrozen: small batches of new data would
overwrite the statistics pretraining learned (Keras' transfer-learning guide).

Phase one trains the head over the frozen pretrained backbone (``weights: none``
trains it whole from the start instead); from ``fine_tune.frozen_epochs``
on, the ``FineTune`` callback unfreezes the backbone's top layers and the
optimizer's rate drops by ``learning_rate_factor`` (train/optim.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.models.blocks import dense_block
from pipeline.models.features import encode

NAME = "backbone"  # the backbone's layer in the model


@dataclass(frozen=True)
class Backbone:
    application: str  # the keras.applications constructor
    cached: str  # its ImageNet weights without the top, as Keras names the file in its cache
    options: dict = field(default_factory=dict)
    caffe: bool = False  # expects BGR pixels minus ImageNet's channel means (ResNet's preprocess_input)


BACKBONES = {
    "mobilenet_v3_small": Backbone("MobileNetV3Small", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                                   {"include_preprocessing": True}),
    "efficientnet_b0": Backbone("EfficientNetB0", "efficientnetb0_notop.h5"),  # rescales and normalises inside
    "resnet50": Backbone("ResNet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", caffe=True),
}
IMAGENET_MEANS_BGR = (103.939, 116.779, 123.68)
MIN_SIZE = 32  # the smallest input every backbone accepts


def cache_dir() -> Path:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models``, by default ``~/.keras/models``."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser() / "models"


def body(inputs, cfg, spec, columns, reg, augmenter):
    """Registry entry ``backbone``: the one image feature -> preprocessing -> backbone -> pooled features -> head."""
    from keras import layers

    encoded = encode(inputs, spec, cfg, columns, reg, augmenter)
    if len(encoded.images) != 1:
        raise ConfigError(f"model `backbone` needs exactly one image feature; {spec.name} gives "
                          f"{len(encoded.images)}. Use `mlp`.")
    x = encoded.images[0]  # in [0, 1]
    size = cfg.model.image_size or max(MIN_SIZE, x.shape[1], x.shape[2])
    if (x.shape[1], x.shape[2]) != (size, size):
        x = layers.Resizing(size, size, name="backbone_resize")(x)
    if x.shape[-1] == 1:
        x = layers.Concatenate(name="backbone_rgb")([x, x, x])
    x = layers.Rescaling(255.0, name="backbone_pixels")(x)  # every backbone's preprocessing starts from 0-255
    if BACKBONES[cfg.model.backbone].caffe:
        x = _caffe(x)
    net = application(cfg, size)
    if phases(cfg):
        net.trainable = False
        x = net(x, training=False)
    else:  # random weights: the whole backbone learns from the start, its BatchNormalization as usual but with
        for layer in net.layers:  # the config's momentum (Keras applications' 0.999 lags for thousands of steps)
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = cfg.model.batch_norm_momentum
        x = net(x)
    x = layers.GlobalAveragePooling2D(name="backbone_pool")(x)
    if cfg.model.dropout:
        x = layers.Dropout(cfg.model.dropout, name="backbone_dropout")(x)
    return (dense_block(x, cfg.model.head_units, cfg.model, reg, name="head") if cfg.model.head_units else x), encoded


def phases(cfg):
    """The fine-tuning plan (``model.fine_tune``) for a pretrained backbone; None for other models and for
    ``weights: none``, which trains the whole backbone from scratch."""
    return cfg.model.fine_tune if cfg.model.pretrained else None


def application(cfg, size: int = MIN_SIZE):
    """The configured Keras application without its top, named ``backbone``, its weights loaded.

    Raises:
        ConfigError: the weights file is missing or does not fit, or ImageNet weights could not be downloaded.
    """
    import warnings

    import keras

    chosen, weights = BACKBONES[cfg.model.backbone], _weights(cfg)
    build = getattr(keras.applications, chosen.application)
    try:
        with warnings.catch_warnings():  # a size other than 224: the convolutions' weights fit any size, as meant
            warnings.filterwarnings("ignore", message=".*Weights for input shape .* will be loaded as the default")
            return build(include_top=False, weights=weights, input_shape=(size, size, 3), name=NAME, **chosen.options)
    except Exception as exc:  # Keras raises ValueError for a mismatch and plain Exception for a failed download
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if weights == "imagenet":
            raise ConfigError(
                f"ImageNet weights for {cfg.model.backbone} could not be downloaded ({reason}); on a machine without "
                f"internet access put {chosen.cached} in {cache_dir()} (docs/transfer_learning.md)") from exc
        raise ConfigError(f"Invalid `model.weights`: {weights} does not fit backbone {cfg.model.backbone}: "
                          f"{reason}") from exc


def check(cfg) -> None:
    """Reject weights that do not load before a run opens (one line naming the file and the mismatch)."""
    application(cfg)


def _weights(cfg) -> str | None:
    """None (random), a file's path, or ``imagenet`` where Keras' cache lacks the file (Keras downloads it).

    A cached file is loaded by path: Keras would check its hash and, offline, fail on a copy it did not download.
    """
    weights = cfg.model.weights
    if weights == "none":
        return None
    if weights == "imagenet":
        cached = cache_dir() / BACKBONES[cfg.model.backbone].cached
        return str(cached) if cached.is_file() else "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"Invalid `model.weights`: {weights} is not a file (give imagenet, none or the path of a "
                          f"weights file)")
    return str(path)


def _caffe(x):
    """ResNet's ``preprocess_input``: RGB to BGR, minus ImageNet's channel means."""
    from keras import layers, ops

    x = layers.Lambda(lambda pixels: ops.flip(pixels, axis=-1), name="backbone_bgr")(x)
    return layers.Normalization(mean=IMAGENET_MEANS_BGR, variance=(1.0, 1.0, 1.0), name="backbone_means")(x)


def tuned_layers(model, count: int) -> list:
    """The backbone's top ``count`` layers that fine-tuning trains: BatchNormalization layers stay frozen."""
    from keras import layers

    net = model.get_layer(NAME)
    top = net.layers[-count:] if count else []
    return [layer for layer in top if layer.weights and not isinstance(layer, layers.BatchNormalization)]


def unfreeze(model, count: int) -> None:
    """Make the backbone's top ``count`` layers trainable (phase two); the rest stays frozen."""
    net = model.get_layer(NAME)
    net.trainable = True  # Keras sets every inner layer; freeze all but the chosen ones again
    for layer in net.layers:
        layer.trainable = False
    for layer in tuned_layers(model, count):
        layer.trainable = True


def prepare(model, cfg) -> None:
    """Build the optimizer's slots for every variable phase two trains, then freeze the backbone for phase one.

    Keras optimizers refuse variables they were not built with; building on the phase-two set up front keeps
    one optimizer (and one checkpoint layout) for the whole run, so a run resumed in either phase restores it.
    """
    unfreeze(model, cfg.model.fine_tune.layers)
    model.optimizer.build(model.trainable_variables)
    model.get_layer(NAME).trainable = False


def fine_tuning(cfg):
    """The callback that starts phase two at epoch ``fine_tune.frozen_epochs`` (also after a resume), or None."""
    import keras

    tune = phases(cfg)
    if tune is None:
        return None

    class FineTune(keras.callbacks.Callback):
        started = False

        def on_epoch_begin(self, epoch, logs=None):
            if self.started or epoch < tune.frozen_epochs or not tune.layers:
                return
            unfreeze(self.model, tune.layers)
            self.model.make_train_function(force=True)  # the compiled step trains the variables it was traced with
            self.started = True

    return FineTune()
