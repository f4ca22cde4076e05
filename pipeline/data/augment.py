"""Augmentation: config entries -> Keras preprocessing layers, and a preview grid.

Layers see raw pixel values (floats in ``VALUE_RANGE``), before the model's
own rescaling, so the same augmenter works in the tf.data pipeline and inside
the model. Each layer gets its own seed derived from the experiment seed:
a run replays exactly, while every epoch still draws fresh transformations
(Keras' seed generators advance per call; tensorflow issue 35682 does not bite).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import AugmentConfig, ExperimentConfig

VALUE_RANGE = (0.0, 255.0)


def _gaussian_noise(c, seed, fill):
    import keras
    from keras import layers

    # stddev is a fraction of the pixel range, and Keras caps it at 1: add the noise on [0, 1].
    scale = VALUE_RANGE[1] - VALUE_RANGE[0]
    return keras.Sequential(
        [layers.Rescaling(1.0 / scale), layers.GaussianNoise(c.stddev, seed=seed), layers.Rescaling(scale)],
        name=f"gaussian_noise_{seed}",
    )


# type -> (Keras preprocessing layer, its arguments from the config entry ``c`` and the fill mode)
LAYERS = {
    "rotation": ("RandomRotation", lambda c, fill: {"factor": c.degrees / 360.0, "fill_mode": fill}),
    "flip": ("RandomFlip", lambda c, fill: {"mode": c.mode}),
    "brightness": ("RandomBrightness", lambda c, fill: {"factor": c.factor, "value_range": VALUE_RANGE}),
    "contrast": ("RandomContrast", lambda c, fill: {"factor": c.factor, "value_range": VALUE_RANGE}),
    "zoom": ("RandomZoom", lambda c, fill: {"height_factor": c.factor, "fill_mode": fill}),
    "translation": ("RandomTranslation",
                    lambda c, fill: {"height_factor": c.factor, "width_factor": c.factor, "fill_mode": fill}),
    "gaussian_noise": (_gaussian_noise, None),  # no single Keras layer: noise on the [0, 1] scale
}


def _layer(c, seed: int, fill: str):
    from keras import layers

    built, arguments = LAYERS[c.type]
    if arguments is None:
        return built(c, seed, fill)
    return getattr(layers, built)(**arguments(c, fill), seed=seed)


def build_layers(cfg: AugmentConfig, seed: int) -> list:
    """One Keras layer per configured entry, in config order."""
    return [_layer(c, seed + i, cfg.fill_mode) for i, c in enumerate(cfg.layers)]


def build_augmenter(cfg: AugmentConfig, seed: int):
    """A ``keras.Sequential`` of the configured layers, or None when there are none.

    Call it with ``training=True``: GaussianNoise (and every random layer) is the
    identity otherwise.
    """
    import keras

    layers = build_layers(cfg, seed)
    return keras.Sequential(layers, name="augment") if layers else None


def preview(cfg: ExperimentConfig, out: str | Path, n_images: int = 6) -> Path:
    """Write a PNG grid: each sample image, then each augmentation alone, then all together."""
    import numpy as np

    from pipeline.data.dataset import sample_images
    from pipeline.files import pyplot, save_figure

    plt = pyplot()

    images = sample_images(cfg, n_images).astype("float32")
    layers = build_layers(cfg.augment, cfg.seed)
    columns = [("original", images)]
    columns += [(c.type, np.asarray(layer(images, training=True))) for c, layer in zip(cfg.augment.layers, layers)]
    if len(layers) > 1:
        combined = build_augmenter(cfg.augment, cfg.seed)
        columns.append(("all", np.asarray(combined(images, training=True))))

    fig, axes = plt.subplots(n_images, len(columns), figsize=(1.6 * len(columns), 1.6 * n_images), squeeze=False)
    for col, (title, batch) in enumerate(columns):
        axes[0, col].set_title(title, fontsize=8)
        for row in range(n_images):
            img = np.clip(batch[row], *VALUE_RANGE) / VALUE_RANGE[1]
            axes[row, col].imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            axes[row, col].axis("off")
    fig.tight_layout()
    return save_figure(fig, Path(out), dpi=100)
