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


def _rotation(c, seed, fill):
    from keras import layers

    return layers.RandomRotation(c.degrees / 360.0, fill_mode=fill, seed=seed)


def _flip(c, seed, fill):
    from keras import layers

    return layers.RandomFlip(c.mode, seed=seed)


def _brightness(c, seed, fill):
    from keras import layers

    return layers.RandomBrightness(c.factor, value_range=VALUE_RANGE, seed=seed)


def _contrast(c, seed, fill):
    from keras import layers

    return layers.RandomContrast(c.factor, value_range=VALUE_RANGE, seed=seed)


def _zoom(c, seed, fill):
    from keras import layers

    return layers.RandomZoom(c.factor, fill_mode=fill, seed=seed)


def _translation(c, seed, fill):
    from keras import layers

    return layers.RandomTranslation(c.factor, c.factor, fill_mode=fill, seed=seed)


def _gaussian_noise(c, seed, fill):
    import keras
    from keras import layers

    # stddev is a fraction of the pixel range, and Keras caps it at 1: add the noise on [0, 1].
    scale = VALUE_RANGE[1] - VALUE_RANGE[0]
    return keras.Sequential(
        [layers.Rescaling(1.0 / scale), layers.GaussianNoise(c.stddev, seed=seed), layers.Rescaling(scale)],
        name=f"gaussian_noise_{seed}",
    )


LAYERS = {
    "rotation": _rotation,
    "flip": _flip,
    "brightness": _brightness,
    "contrast": _contrast,
    "zoom": _zoom,
    "translation": _translation,
    "gaussian_noise": _gaussian_noise,
}


def build_layers(cfg: AugmentConfig, seed: int) -> list:
    """One Keras layer per configured entry, in config order."""
    return [LAYERS[c.type](c, seed + i, cfg.fill_mode) for i, c in enumerate(cfg.layers)]


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
