"""Forecasting bodies over a window: ``lstm``, ``gru`` and ``conv1d`` (dilated causal convolutions).

Every window input is encoded (models/features.py: sequence, calendar) into unit-scale
channels; the past steps of all of them form one (batch, input_window, channels) sequence
that the body reads, and the known covariates' future steps join its summary before the head:

    past channels -> recurrent layers or causal convolutions -> last step
        -> [+ future covariates, + series id] -> dense block
"""

from __future__ import annotations

from pipeline.config import ExperimentConfig
from pipeline.models.blocks import dense_block
from pipeline.models.features import encode, layer_name


def split_window(encoded, cfg: ExperimentConfig):
    """(past channels (batch, input_window, channels), [flattened future steps of the known covariates])."""
    from keras import layers

    w = cfg.forecast.input_window
    parts = list(encoded.sequences.items())
    past = [seq[:, :w, :] for _, seq in parts]
    future = [layers.Flatten(name=layer_name(name, "future"))(seq[:, w:, :]) for name, seq in parts if seq.shape[1] > w]
    return (past[0] if len(past) == 1 else layers.Concatenate(name="past")(past)), future


def recurrent(kind: str):
    """``depth`` stacked LSTM or GRU layers of ``width`` units; Dropout between them."""
    def body(inputs, cfg: ExperimentConfig, spec, columns, reg, augmenter):
        from keras import layers

        encoded = encode(inputs, spec, cfg, columns, reg)
        x, future = split_window(encoded, cfg)
        cell = {"lstm": layers.LSTM, "gru": layers.GRU}[kind]
        for i in range(cfg.model.depth):
            last = i == cfg.model.depth - 1
            x = cell(cfg.model.width, return_sequences=not last, kernel_regularizer=reg, name=f"{kind}{i + 1}")(x)
            if cfg.model.dropout:
                x = layers.Dropout(cfg.model.dropout, name=f"{kind}{i + 1}_dropout")(x)
        return _head(x, future, encoded, cfg, reg), encoded

    return body


def conv1d(inputs, cfg: ExperimentConfig, spec, columns, reg, augmenter):
    """``depth`` causal Conv1D layers, dilation doubling (1, 2, 4 ...): the last step sees 1 + (k-1)(2^depth - 1) steps."""
    from keras import layers

    encoded = encode(inputs, spec, cfg, columns, reg)
    x, future = split_window(encoded, cfg)
    m = cfg.model
    for i in range(m.depth):
        x = layers.Conv1D(m.width, m.kernel_size, padding="causal", dilation_rate=2**i, use_bias=not m.batch_norm,
                          kernel_regularizer=reg, name=f"causal{i + 1}_conv")(x)
        if m.batch_norm:
            x = layers.BatchNormalization(momentum=m.batch_norm_momentum, name=f"causal{i + 1}_bn")(x)
        x = layers.Activation(m.activation, name=f"causal{i + 1}_act")(x)
        if m.dropout:
            x = layers.Dropout(m.dropout, name=f"causal{i + 1}_dropout")(x)
    return _head(x[:, -1, :], future, encoded, cfg, reg), encoded


def _head(summary, future: list, encoded, cfg: ExperimentConfig, reg):
    """The body's summary, the future covariates and any other input (the series id) -> a dense block."""
    from keras import layers

    parts = [summary, *future, *encoded.every_vector]
    x = layers.Concatenate(name="summary")(parts) if len(parts) > 1 else summary
    return dense_block(x, cfg.model.width, cfg.model, reg, name="head")
