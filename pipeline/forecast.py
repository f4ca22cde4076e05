"""Forecasting: a model's test figures beside the baselines it must beat, and whether it does beyond noise.

Every forecasting run scores the same test windows with:

- ``naive``: the last value (a change or a return of zero);
- ``drift``: the training windows' mean change or return (with a target transform);
- ``seasonal_naive_<p>``: the value one period ``p`` earlier, for each ``forecast.seasonality``;
- ``ridge``: a ridge regression on the same window inputs (standardised, the target relative to
  its last value, calendar waves), refitted on the training windows.

Errors are in the series' units (levels), or in log returns when the model predicts returns
(``forecast.target_transform: log_return``). The skill ratio is the model's error over the best
baseline's (MAE; RMSE for returns), with a 95% interval from a moving-block bootstrap over
test windows (blocks of ``horizon`` windows or more, neighbouring windows sharing their steps, where the
test stretch holds four such blocks: skill.py; a shorter stretch is named in the run's summary).
The model has skill when the whole interval lies below ``1 - forecast.min_skill``; anything
else is no skill (diagnose.py): a gain of a fraction of a percent, however certain, is no
reason to run a model (a daily index return's small drift is such a gain).

``pipeline backtest`` trains fold after fold over expanding windows (``backtest``) and pools
the per-window errors of every fold.
"""

from __future__ import annotations

import functools

import numpy as np

from pipeline.data import targets, windows
from pipeline.skill import Errors, skill

CHUNK = 8192  # test windows scored at a time
RIDGE_WINDOWS = 50_000  # training windows the ridge baseline is fitted on (evenly spaced), at most...
RIDGE_VALUES = 25_000_000  # ...and at most this many inputs in all (200 MB of float64)
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)  # tried on the validation windows


def serving_signatures(model, cfg, spec, columns: dict, task) -> dict:
    return {}


def evaluate(signatures: dict, model, data, cfg) -> dict[str, float]:
    """The model's test figures, each baseline's, and the skill ratio with its 95% interval."""
    errors, figures = score(model, data, cfg)
    return {**figures, **skill(errors, cfg.forecast.bootstrap, cfg.seed)}


def score(model, data, cfg) -> tuple[Errors, dict[str, float]]:
    """(per-window errors, figures): ``test_<metric>`` for the model, ``baseline.<name>.<metric>`` for baselines.

    Test windows are scored ``CHUNK`` at a time, so memory stays that of one chunk's windows
    however long the test stretch is.
    """
    s = data.series
    ridge, scale = fit_ridge(s, cfg), _mase_scale(s, cfg)
    starts = windows.starts(s, cfg, "test")
    parts = []
    for i in range(0, len(starts), CHUNK):
        at = starts[i:i + CHUNK]
        features, truth = windows.window_arrays(s, cfg, at)
        forecasts = {"model": _predict(model, features, cfg),
                     **baselines(s, cfg, at, features, data.train_columns, ridge)}
        parts.append(_errors(truth, forecasts, features[cfg.data.label_key][:, -1], cfg, scale))
    errors = functools.reduce(Errors.concat, parts)
    return errors, errors.figures()


def _errors(truth: np.ndarray, forecasts: dict, last: np.ndarray, cfg, scale: float) -> Errors:
    """Per-window figures of each forecast, in levels (or in log returns, when the model predicts them)."""
    fc = cfg.forecast
    returns = fc.target_transform == "log_return"
    if not returns:
        truth = targets.invert(truth, last, fc.target_transform)
        forecasts = {k: targets.invert(v, last, fc.target_transform) for k, v in forecasts.items()}
    figures: dict[str, dict[str, np.ndarray]] = {"mae": {}, "mse": {}, "mase": {},
                                                 "directional_accuracy" if returns else "smape": {}}
    for name, forecast in forecasts.items():
        error = forecast - truth
        figures["mae"][name] = np.abs(error).mean(axis=1)
        figures["mse"][name] = (error ** 2).mean(axis=1)
        figures["mase"][name] = figures["mae"][name] / scale if scale > 0 else np.full(len(error), np.nan)
        if returns:  # steps where both moved: a forecast of no change calls no direction
            moved = (truth != 0) & (forecast != 0)
            hits = ((np.sign(forecast) == np.sign(truth)) & moved).sum(axis=1)
            figures["directional_accuracy"][name] = np.divide(hits, moved.sum(axis=1), out=np.full(len(truth), np.nan),
                                                              where=moved.any(axis=1))
        else:
            figures["smape"][name] = np.mean(2 * np.abs(error) / np.maximum(np.abs(forecast) + np.abs(truth), 1e-12),
                                             axis=1)
    return Errors(figures, "rmse" if returns else "mae", fc.horizon)


def baselines(s, cfg, at: np.ndarray, features: dict, train_columns: dict, ridge=None) -> dict[str, np.ndarray]:
    """Each baseline's forecasts of the windows starting at ``at``, in the model's target transform.

    Args:
        ridge: A fitted ridge baseline (``fit_ridge``), or None to leave it out.
    """
    fc, target = cfg.forecast, cfg.data.label_key
    w, h = fc.input_window, fc.horizon
    last = features[target][:, -1]
    levels = s.columns[target]
    out = {"naive": targets.transform(np.repeat(last[:, None], h, axis=1), last, fc.target_transform)}
    label = windows.label_name(target)
    if fc.target_transform != "level" and label in train_columns:  # the training windows' mean change
        drift = np.asarray(train_columns[label], np.float64).mean(axis=0)
        out["drift"] = np.repeat(drift[None, :], len(at), axis=0)
    origin = at + w - 1  # the last observed step
    floor = s.owner(at)[:, None]  # the first step of each window's own series
    for period in fc.seasonality:
        steps = np.arange(1, h + 1)
        source = origin[:, None] + steps - period * np.ceil(steps / period).astype(int)
        if (source >= floor).all():
            out[f"seasonal_naive_{period}"] = targets.transform(levels[source], last, fc.target_transform)
    if ridge is not None:
        out["ridge"] = ridge(features)
    return out


def fit_ridge(s, cfg):
    """Ridge regression on the standardised, flattened window inputs, alpha chosen on the validation windows.

    Returns a function of a chunk's window features. Fitted on evenly spaced training windows,
    as many as fit ``RIDGE_VALUES`` inputs; a handful of plain fits, not RidgeCV's
    leave-one-out (an SVD of all training windows, many times slower on week-long windows).
    """
    from sklearn.preprocessing import StandardScaler

    from pipeline.design import ridge_chosen_on

    at = windows.starts(s, cfg, "train")
    width = sum(windows.inputs(cfg).values()) * (1 + len(cfg.forecast.calendar))
    limit = max(1000, min(RIDGE_WINDOWS, RIDGE_VALUES // width))
    if len(at) > limit:
        at = at[np.linspace(0, len(at) - 1, limit).astype(int)]
    train_features, labels = windows.window_arrays(s, cfg, at)
    val_at = windows.starts(s, cfg, "validation")[:limit]
    val_features, val_labels = windows.window_arrays(s, cfg, val_at)
    scaler = StandardScaler().fit(_design(train_features, cfg))
    x, x_val = scaler.transform(_design(train_features, cfg)), scaler.transform(_design(val_features, cfg))
    best = ridge_chosen_on(x, labels, x_val, val_labels, RIDGE_ALPHAS)
    return lambda features: best.predict(scaler.transform(_design(features, cfg)))


def _design(features: dict, cfg) -> np.ndarray:
    """The window inputs as the model sees them, one row per window: target relative, calendar as waves."""
    from pipeline.models.features import PERIODS

    fc, target = cfg.forecast, cfg.data.label_key
    parts = []
    for name, values in features.items():
        if name == fc.series_id:  # the same lags and covariates for every series
            continue
        if name == fc.time:
            for cycle in fc.calendar:
                phase = (values % PERIODS[cycle]) * (2 * np.pi / PERIODS[cycle])
                parts += [np.sin(phase), np.cos(phase)]
        elif name == target and fc.target_transform != "level":
            parts.append(targets.transform(values, values[:, -1], fc.target_transform))
        else:
            parts.append(values)
    design = np.concatenate(parts, axis=1)
    return np.nan_to_num(design, nan=0.0)


def _predict(model, features: dict, cfg, batch: int = 4096) -> np.ndarray:
    import tensorflow as tf

    fc = cfg.forecast
    n = len(next(iter(features.values())))
    out = []
    for i in range(0, n, batch):
        chunk = {k: tf.constant(v[i:i + batch], tf.int64 if k == fc.time else None if k == fc.series_id else tf.float32)
                 for k, v in features.items()}
        out.append(np.asarray(model(chunk, training=False), np.float64))
    return np.concatenate(out) if out else np.zeros((0, fc.horizon))


def _mase_scale(s, cfg) -> float:
    """In-sample MAE of the one-step seasonal naive forecast (period: the first seasonality, else 1) on training steps."""
    fc = cfg.forecast
    m = 1 if fc.target_transform == "log_return" or not fc.seasonality else fc.seasonality[0]
    changes = []
    for seg in s.segments:  # within each series' training steps
        y = s.columns[cfg.data.label_key][seg.start:seg.bounds["train"][1]]
        y = np.log(y) if fc.target_transform == "log_return" else y
        changes.append(np.abs(y[m:] - y[:-m]))  # returns: the error of the zero-return forecast
    changes = np.concatenate(changes)
    return float(changes.mean()) if changes.size else 0.0
