"""How much better than its baselines a model is, beyond noise: error ratios with bootstrap intervals.

Every run keeps per-example (or, for a series, per-window) losses of the model and of each
baseline (``Errors``); ``skill`` turns them into the model's error over each baseline's and a
95% interval from a moving-block bootstrap (blocks of one example for independent rows; of a
horizon's windows or more for a series, whose neighbouring windows share steps; shorter in a test
stretch too short for several such blocks, so that it still varies). The same
resamples serve every baseline. The fit diagnosis reads the best baseline's interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_BLOCKS = 4  # a resample joins at least this many blocks, each from anywhere in the test stretch


@dataclass
class Errors:
    """Per test example (or window) and forecaster ("model", then each baseline), each figure's value.

    Figures: ``mae`` (a 0/1 error for a class), ``mse`` (reported as rmse), and for series
    ``mase`` (mae over the in-sample scale), ``smape`` (levels) or ``directional_accuracy``
    (returns). The folds of a backtest concatenate.
    """

    windows: dict[str, dict[str, np.ndarray]]  # figure -> forecaster -> [examples or windows]
    skill_metric: str  # mae (also the error rate of a class), or rmse
    horizon: int  # a series' horizon (the bootstrap's shortest block); 1 for independent examples

    def __len__(self) -> int:
        return len(next(iter(self.windows.values()))["model"])

    def figures(self) -> dict[str, float]:
        """``test_<figure>`` for the model, ``baseline.<name>.<figure>`` for each baseline."""
        out = {}
        for figure, by in self.windows.items():
            for name, values in by.items():
                prefix = "test_" if name == "model" else f"baseline.{name}."
                values = values[np.isfinite(values)]
                if not values.size:  # e.g. the direction of a forecast of no change
                    continue
                if figure == "mse":
                    out[prefix + "rmse"] = float(math.sqrt(values.mean()))
                else:
                    out[prefix + figure] = float(values.mean())
        return out

    def ratio(self, baseline: str, index: np.ndarray | None = None) -> float:
        """The model's error over ``baseline``'s (MAE, or RMSE for returns), on the windows at ``index``."""
        figure = "mae" if self.skill_metric == "mae" else "mse"
        model, other = self.windows[figure]["model"], self.windows[figure][baseline]
        if index is not None:
            model, other = model[index], other[index]
        if not other.mean():  # both without an error: a tie; the baseline alone: no bound (a resample may draw that)
            return 1.0 if not model.mean() else math.inf
        value = model.mean() / other.mean()
        return float(value if figure == "mae" else math.sqrt(value))

    def concat(self, other: Errors) -> Errors:
        return Errors({f: {k: np.concatenate([v, other.windows[f][k]]) for k, v in by.items() if k in other.windows[f]}
                       for f, by in self.windows.items()}, self.skill_metric, self.horizon)


def skill(errors: Errors, resamples: int, seed: int) -> dict[str, float]:
    """The model's error over each baseline's, with 95% moving-block bootstrap intervals.

    Returns ``skill.vs_<baseline>`` (and ``_low``, ``_high``) for every baseline, the best
    baseline's as ``skill.ratio``, ``skill.ratio_low``, ``skill.ratio_high``,
    ``skill.best_baseline.<name>`` = 1, so a metric store without tags still says which one, and
    ``skill.examples``: how many test examples (windows) the intervals rest on.
    """
    figure = "mae" if errors.skill_metric == "mae" else "mse"
    names = [k for k in errors.windows[figure] if k != "model"]
    best = min(names, key=lambda k: errors.windows[figure][k].mean())
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for index in block_resamples(len(errors), errors.horizon, resamples, seed):  # the same for every baseline
        for name in names:
            ratios[name].append(errors.ratio(name, index))
    out = {}
    for name in names:
        low, high = np.percentile(ratios[name], [2.5, 97.5], method="inverted_cdf")  # no interpolation: inf stays
        out.update({f"skill.vs_{name}": errors.ratio(name), f"skill.vs_{name}_low": float(low),
                    f"skill.vs_{name}_high": float(high)})
    return {"skill.ratio": out[f"skill.vs_{best}"], "skill.ratio_low": out[f"skill.vs_{best}_low"],
            "skill.ratio_high": out[f"skill.vs_{best}_high"], f"skill.best_baseline.{best}": 1.0,
            "skill.examples": float(len(errors)), **out}


def block_resamples(n: int, horizon: int, resamples: int, seed: int):
    """``resamples`` moving-block bootstrap resamples of ``n`` test examples, as index arrays of length ``n``.

    Blocks of ``horizon`` examples or n^(1/3), whichever is longer (one for independent rows, a horizon's
    windows for a series, whose neighbouring windows share steps), but at most a ``MIN_BLOCKS``-th of the
    test stretch: blocks nearly as long as the stretch draw nearly the same windows every time, and an
    interval of almost no width would read as certainty (docs/forecasting.md, skill, has a case).
    """
    block = max(1, min(max(horizon, round(n ** (1 / 3))), n // MIN_BLOCKS))
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        starts = rng.integers(0, max(n - block, 0) + 1, size=math.ceil(n / block))
        yield (starts[:, None] + np.arange(block)).reshape(-1)[:n]
