"""Speech from raw audio: the log-mel front end inside the model, and the WAV-bytes signature.

The model takes a float32 waveform ``[batch, samples]`` at ``data.sample_rate``: the
short-time Fourier transform, the mel filter bank, the log and a per-example
normalisation are a Keras layer (tf.signal), so an export serves raw audio and
no client has to reproduce the front end. ``audio_cnn`` is the ``cnn`` body over
that spectrogram (registry.py). The export gains a ``wav`` signature that takes
encoded WAV files, so a client can post a recording as it is (base64 over REST): models/wav.py
decodes and resamples it as preparation did.
"""

from __future__ import annotations

import math

EPSILON = 1e-6


def frames(sample_rate: int, cfg) -> tuple[int, int, int]:
    """(window, hop, FFT length) in samples for the front end ``cfg`` (model.audio)."""
    window = round(sample_rate * cfg.frame_ms / 1000)
    return window, round(sample_rate * cfg.hop_ms / 1000), 2 ** math.ceil(math.log2(window))


def log_mel(sample_rate: int, cfg, name: str):
    """A layer: waveform ``[batch, samples]`` -> normalised log-mel spectrogram ``[batch, frames, mel_bins, 1]``."""
    import keras
    import tensorflow as tf

    window, hop, fft = frames(sample_rate, cfg)
    weights = tf.signal.linear_to_mel_weight_matrix(cfg.mel_bins, fft // 2 + 1, sample_rate, cfg.min_hz,
                                                    cfg.max_hz or sample_rate / 2)

    class LogMel(keras.layers.Layer):
        def call(self, waves):
            spectrum = tf.signal.stft(tf.cast(waves, tf.float32), window, hop, fft_length=fft,
                                      window_fn=tf.signal.hann_window)
            mel = tf.tensordot(tf.square(tf.abs(spectrum)), weights, 1)
            logs = tf.math.log(mel + EPSILON)
            mean, variance = tf.nn.moments(logs, axes=[1, 2], keepdims=True)  # each clip on its own: loudness, mic
            return ((logs - mean) / tf.sqrt(variance + EPSILON))[..., None]

        def compute_output_shape(self, shape):
            return (shape[0], 1 + (shape[1] - window) // hop, cfg.mel_bins, 1)

    return LogMel(name=name)


# ---- the family's extras (registry.family) ---------------------------------------------------

def serving_signatures(model, cfg, spec, columns, task) -> dict:
    """``wav``: encoded WAV files ``[batch]`` (string) -> the default signature's outputs."""
    import tensorflow as tf

    from pipeline.models.wav import decode_wav

    audio = [f for f in spec.features if f.kind == "audio"]
    if len(audio) != 1 or len(spec.features) != 1:
        return {}
    feature, samples = audio[0], audio[0].shape[0]

    def wav(contents):
        inputs = {feature.name: decode_wav(contents, samples, cfg.data.sample_rate)}
        return task.serve(model(inputs, training=False), inputs)

    return {"wav": (wav, [tf.TensorSpec((None,), tf.string, name="wav")])}
