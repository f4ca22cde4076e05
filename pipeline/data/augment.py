"""Augmentation: config entries -> Keras preprocessing layers, and a preview grid.

Layers see raw pixel values (floats in ``VALUE_RANGE``), before the model's
own rescaling, so the same augmenter works in the tf.data pipeline and inside
the model. Each layer gets its own seed derived from the experiment seed:
a run replays exactly, while every epoch still draws fresh transformations
(Keras' seed generators advance per call; tensorflow issue 35682 does not bite).
Audio entries (time shift, noise, SpecAugment masks) are layers of the model's audio
encoder instead: ``audio_layers``.
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


def _random(draw, name: str, seed: int):
    """A Keras layer that applies ``draw(x, seed_generator)`` in training and is the identity otherwise."""
    import keras

    class Random(keras.layers.Layer):
        def __init__(self):
            super().__init__(name=name)
            self.generator = keras.random.SeedGenerator(seed)

        def call(self, x, training=False):
            return draw(x, self.generator) if training else x

    return Random()


def _time_shift(c, seed):
    """Each clip moved by up to ``fraction`` of its length either way; what moves in is silence."""
    from keras import ops, random

    def draw(waves, generator):
        samples = waves.shape[1]
        most = int(c.fraction * samples)
        shift = random.randint((ops.shape(waves)[0], 1), -most, most + 1, seed=generator)
        source = ops.arange(samples)[None, :] - shift
        moved = ops.take_along_axis(waves, ops.clip(source, 0, samples - 1), axis=1)
        return ops.where((source >= 0) & (source < samples), moved, ops.zeros_like(moved))

    return _random(draw, f"time_shift_{seed}", seed)


def _background_noise(c, seed):
    """White noise at a signal-to-noise ratio drawn per clip from ``snr_db`` to ``snr_db`` + 20 dB."""
    from keras import ops, random

    def draw(waves, generator):
        snr = random.uniform((ops.shape(waves)[0], 1), c.snr_db, c.snr_db + 20.0, seed=generator)
        power = ops.mean(ops.square(waves), axis=1, keepdims=True)
        return waves + random.normal(ops.shape(waves), seed=generator) * ops.sqrt(power / ops.power(10.0, snr / 10.0))

    return _random(draw, f"background_noise_{seed}", seed)


def _mask(axis: int):
    """SpecAugment (Park et al. 2019): ``count`` bands of up to ``width`` frames (axis 1) or mel bins (axis 2)
    set to the normalised spectrogram's mean, 0."""
    def build(c, seed):
        from keras import ops, random

        def draw(spectrogram, generator):
            size, batch = spectrogram.shape[axis], ops.shape(spectrogram)[0]
            positions = ops.arange(size)[None, :]
            keep = ops.ones((batch, size), dtype=spectrogram.dtype)
            for _ in range(c.count):
                width = random.randint((batch, 1), 0, min(c.width, size) + 1, seed=generator)
                start = ops.cast(random.uniform((batch, 1), seed=generator) * ops.cast(size - width + 1, "float32"),
                                 "int32")
                hidden = (positions >= start) & (positions < start + width)
                keep = keep * ops.cast(ops.logical_not(hidden), spectrogram.dtype)
            return spectrogram * ops.reshape(keep, (-1, size, 1, 1) if axis == 1 else (-1, 1, size, 1))

        return _random(draw, f"{'time' if axis == 1 else 'frequency'}_mask_{seed}", seed)
    return build


# type -> layer factory (entry, seed): on the waveform, then on the log-mel spectrogram inside the model
AUDIO_WAVE_LAYERS = {"time_shift": _time_shift, "background_noise": _background_noise}
AUDIO_SPECTROGRAM_LAYERS = {"time_mask": _mask(1), "frequency_mask": _mask(2)}


def audio_layers(cfg: AugmentConfig, seed: int) -> tuple[list, list]:
    """The configured audio layers: (on the waveform, on the spectrogram), in config order.

    They always sit inside the model (whatever ``placement`` says): SpecAugment acts on the
    model's own spectrogram. Each is the identity unless called with training=True.
    """
    wave = [AUDIO_WAVE_LAYERS[c.type](c, seed + i) for i, c in enumerate(cfg.layers) if c.type in AUDIO_WAVE_LAYERS]
    spectrogram = [AUDIO_SPECTROGRAM_LAYERS[c.type](c, seed + i) for i, c in enumerate(cfg.layers)
                   if c.type in AUDIO_SPECTROGRAM_LAYERS]
    return wave, spectrogram


def through_audio(x, on_wave: list, front, on_spectrogram: list, **call):
    """A waveform through the waveform layers, the front end (log-mel) and the spectrogram layers, in that order:
    the model's audio encoder and the preview's "all" column (``call``: training=True there)."""
    for layer in on_wave:
        x = layer(x, **call)
    x = front(x)
    for layer in on_spectrogram:
        x = layer(x, **call)
    return x


def _layer(c, seed: int, fill: str):
    from keras import layers

    built, arguments = LAYERS[c.type]
    if arguments is None:
        return built(c, seed, fill)
    return getattr(layers, built)(**arguments(c, fill), seed=seed)


def build_layers(cfg: AugmentConfig, seed: int) -> list:
    """One Keras layer per configured image entry, in config order (audio entries: ``audio_layers``)."""
    return [_layer(c, seed + i, cfg.fill_mode) for i, c in enumerate(cfg.layers) if c.type in LAYERS]


def build_augmenter(cfg: AugmentConfig, seed: int):
    """A ``keras.Sequential`` of the configured layers, or None when there are none.

    Call it with ``training=True``: GaussianNoise (and every random layer) is the
    identity otherwise.
    """
    import keras

    layers = build_layers(cfg, seed)
    return keras.Sequential(layers, name="augment") if layers else None


def preview(cfg: ExperimentConfig, out: str | Path, n_images: int = 6) -> Path:
    """Write a PNG grid: each sample, then each augmentation alone, then all together.

    Images as they are; clips as the model sees them, its log-mel spectrogram (time across,
    mel bins up), with the waveform layers applied before it and SpecAugment's masks after.
    """
    import numpy as np

    from pipeline.data.dataset import sample_signals
    from pipeline.files import pyplot, save_figure

    plt = pyplot()
    kind, samples = sample_signals(cfg, n_images)
    columns = (_audio_columns if kind == "audio" else _image_columns)(cfg, samples.astype("float32"))
    fig, axes = plt.subplots(n_images, len(columns), figsize=(1.6 * len(columns), 1.6 * n_images), squeeze=False)
    for col, (title, batch) in enumerate(columns):
        axes[0, col].set_title(title, fontsize=8)
        for row in range(n_images):
            if kind == "audio":  # on the original's scale, so that a mask or noise shows as it is
                original = columns[0][1][row]
                axes[row, col].imshow(batch[row, ..., 0].T, origin="lower", aspect="auto", cmap="magma",
                                      vmin=original.min(), vmax=original.max())
            else:
                img = np.clip(batch[row], *VALUE_RANGE) / VALUE_RANGE[1]
                axes[row, col].imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            axes[row, col].axis("off")
    fig.tight_layout()
    return save_figure(fig, Path(out), dpi=100)


def _image_columns(cfg: ExperimentConfig, images) -> list[tuple[str, object]]:
    import numpy as np

    layers = build_layers(cfg.augment, cfg.seed)
    columns = [("original", images)]
    entries = [c for c in cfg.augment.layers if c.type in LAYERS]
    columns += [(c.type, np.asarray(layer(images, training=True))) for c, layer in zip(entries, layers)]
    if len(layers) > 1:
        columns.append(("all", np.asarray(build_augmenter(cfg.augment, cfg.seed)(images, training=True))))
    return columns


def _audio_columns(cfg: ExperimentConfig, waves) -> list[tuple[str, object]]:
    import numpy as np

    from pipeline.models.audio import log_mel

    spectrogram = log_mel(cfg.data.sample_rate, cfg.model.audio, name="log_mel")
    on_wave, on_spectrogram = audio_layers(cfg.augment, cfg.seed)
    entries = [c.type for c in cfg.augment.layers if c.type in AUDIO_WAVE_LAYERS]
    entries += [c.type for c in cfg.augment.layers if c.type in AUDIO_SPECTROGRAM_LAYERS]
    alone = [lambda w, layer=layer: spectrogram(layer(w, training=True)) for layer in on_wave]
    alone += [lambda w, layer=layer: layer(spectrogram(w), training=True) for layer in on_spectrogram]
    columns = [("original", spectrogram(waves))] + [(name, make(waves)) for name, make in zip(entries, alone)]
    if len(alone) > 1:
        columns.append(("all", through_audio(waves, on_wave, spectrogram, on_spectrogram, training=True)))
    return [(name, np.asarray(batch)) for name, batch in columns]
