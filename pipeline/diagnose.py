"""Where a run stands between underfitting and overfitting, from its learning curves, with the evidence.

``diagnose(history, ...)`` reads the per-epoch ``loss``/``val_loss`` and the
task's metric and returns a verdict, the numbers behind it and advice:

- ``overfitting``: validation loss rose well above its minimum, or the gap to the
  training loss is a large share of it and widening over several epochs (while validation loss may still fall),
  whatever the training skill: on noisy labels (ratings) a model overfits long before its
  training error nears zero;
- ``underfitting``: otherwise, the model barely beats a trivial predictor on its own
  training data (the majority class; the training mean for regression);
- ``not converged``: validation loss was still falling when the epochs ran out;
- ``good fit``: none of these;
- ``no skill`` (forecasting, before all of the above): the model's test error is not below
  the best baseline's beyond noise: the 95% interval of their ratio reaches 1 (forecast.py);
- ``baseline wins`` (other tasks, before all of the above): a classical baseline's test error
  is below the model's beyond noise and by more than ``TIE``: the interval of their ratio lies
  above 1 + TIE (baselines.py).

The thresholds below are the definitions; tests pin each verdict on curves
built to show it and on real runs made to overfit and to underfit.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace

from pipeline.text import fmt

SKILL_FLOOR = 0.5  # training skill below this (0 = trivial predictor, 1 = perfect) is underfitting
RISE_LIMIT = 0.10  # validation loss this far (relative) above its minimum at the end is overfitting...
GAP_LIMIT = 0.25  # ...or a final gap (val - train) above this share of the validation loss, and widening
GAP_EPOCHS = 5  # ...over at least this many epochs: Keras averages the training loss over each epoch, so while
# the loss still falls fast it lags validation's end-of-epoch figure, and the gap of any model's first epochs widens
STILL_FALLING = 0.02  # share of the run's whole fall in validation loss made in its last fifth: not converged
TIE = 0.01  # a baseline surely ahead by less than this share of the model's error only ties with it: on a million
# rows a lead of 0.1% is beyond noise, yet no reason to serve the baseline instead (forecast.min_skill, the other way)
SPARSE = 1e-3  # |weight| below this counts as zero in sparsity figures (studies, run reports)
# Baselines that fit curvature and interactions: a model that matches one is at what the labels allow.
FLEXIBLE = ("gradient_boosting",)
AUGMENT = "more or stronger augmentation (augment.layers)"  # advice only where augmentation applies (images, audio)

# The knobs that size each model where they are not model.width and model.depth (which the advice names).
SIZE = {"recommender": ("model.recommender.factors", "model.recommender.tower"),
        "backbone": ("model.head_units", "model.fine_tune.layers")}

ADVICE = {
    "overfitting": [
        "stronger weight penalty: raise regularization.l2 (x3 to x10) or try l1",
        "dropout 0.2 to 0.5 (model.dropout)",
        AUGMENT,
        "keep early stopping on val_loss with restore_best_weights (train.early_stopping)",
        "a smaller model (model.width, model.depth) or more training data",
    ],
    "underfitting": [
        "more capacity: raise model.width or model.depth",
        "less regularisation: lower regularization.l2/l1 and model.dropout",
        "a higher learning rate (optimizer.learning_rate x3) or Adam",
        "more epochs (train.epochs), and BatchNormalization (model.batch_norm)",
    ],
    "not converged": [
        "more epochs (train.epochs): validation loss was still falling",
        "a higher learning rate or a schedule that decays later (optimizer.schedule)",
    ],
    "good fit": ["nothing pressing: compare against the baselines (make baseline) and tune (make tune)"],
    "baseline wins": [
        "serve the baseline itself, or use what it shows: a simpler model fits this data",
        "a smaller model (model.width, model.depth) with more regularisation (regularization.l2, model.dropout)",
        "tune on the validation split (make tune) before trusting the network",
    ],
    "no skill": [
        "use the best baseline itself: it forecasts at least as well, at no cost",
        "more context: a longer forecast.input_window, or covariates known ahead (forecast.known_covariates, "
        "forecast.calendar)",
        "a smaller or more regularised model (model.width, regularization.l2, model.dropout)",
        "for returns of a traded asset this is the expected answer: past prices carry little about the next one",
    ],
}
# Where gradient boosting beats an MLP on numbers without bins (beaten, bins_may_help).
THRESHOLDS = ("the numbers in piecewise-linear bins (features.piecewise_bins: 16), where a threshold is one weight; "
              "or pipeline tune, whose table example searches them")


@dataclass
class Diagnosis:
    verdict: str
    evidence: dict = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def tags(self) -> dict:
        keys = ("train_skill", "final_gap", "gap_trend", "best_epoch", "val_rise_after_best", "skill_ratio",
                "skill_ratio_low", "skill_ratio_high", "best_baseline")
        return {"fit.verdict": self.verdict, **{f"fit.{k}": self.evidence[k] for k in keys if k in self.evidence}}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def markdown(self) -> str:
        lines = [f"**Fit: {self.verdict}**", "", *[f"- {r}" for r in self.reasons], "", "| evidence | value |",
                 "| --- | --- |"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in self.evidence.items()]
        lines += ["", "Advice:", *[f"- {a}" for a in self.advice]]
        return "\n".join(lines) + "\n"


def diagnose_run(cfg, history: dict[str, list[float]], task, data, test: dict | None = None) -> Diagnosis | None:
    """The diagnosis of a training run, against the trivial predictor of its training labels (None without curves).

    With a skill ratio among the ``test`` metrics (forecasting), a model that does not beat its
    best baseline beyond noise is ``no skill``, whatever its curves say.
    """
    import numpy as np

    from pipeline.tasks import direction

    metric = task.metric_names[0]
    if not {"loss", "val_loss", metric} <= set(history):
        return None
    higher = direction(metric) == "max"
    labels = np.asarray(data.train_columns[data.spec.label])
    trivial = (np.bincount(labels.astype(np.int64)).max() / len(labels) if higher
               else float(np.std(labels.astype(np.float64))))
    epochs = len(history["loss"])
    augmentable = any(f.signal for f in data.spec.features)  # images and waveforms take augmentation
    found = diagnose(history, metric, higher, float(trivial), cfg.train.epochs, epochs < cfg.train.epochs, augmentable)
    found = (no_skill(found, test or {}, cfg.forecast.min_skill) if cfg.forecast
             else beaten(found, test or {}, bins_may_help(cfg, data.spec)))
    width, depth = SIZE.get(cfg.model.name, ("model.width", "model.depth"))
    return replace(found, advice=[a.replace("model.width", width).replace("model.depth", depth) for a in found.advice])


def beaten(curves: Diagnosis, test: dict, bins: bool = False) -> Diagnosis:
    """``curves`` turned into ``baseline wins`` when the best baseline's error is below the model's beyond noise
    and by more than TIE.

    An underfitting, overfitting or unconverged model keeps that verdict (its advice is the more useful:
    a model still improving when its epochs ran out is not one to shrink), with
    the baseline's win among its reasons and the baseline among its advice. An underfitting model
    that a flexible baseline (gradient boosting) does not beat, not even in its point estimate, is a
    ``good fit``: on noisy labels (churn, clicks) every learner stops far from the training data, and
    more capacity is not the cure. A baseline ahead within noise proves no such ceiling: the interval of a
    few hundred test rows reaches 1 even when boosting's point estimate is a fifth better (bench/README.md,
    tables), and an underfitting model may simply have stopped too early.

    Args:
        bins: Whether piecewise-linear bins may help (``bins_may_help``): then a win of gradient boosting
            advises them, before serving the baseline (the run summary shows three lines of advice).
    """
    if "skill.ratio_low" not in test:
        return curves
    best, evidence, said = _skill_evidence(curves, test)
    if test["skill.ratio_low"] <= 1.0 + TIE:
        flexible = next((n for n in FLEXIBLE if any(k.startswith(f"baseline.{n}.") for k in test)), None)
        if curves.verdict == "underfitting" and flexible and test["skill.ratio"] <= 1.0 + TIE:
            ceiling = (f"but {flexible.replace('_', ' ')}, fitted on the same rows, does no better (against the "
                       f"best baseline, {said}): what the model leaves looks like noise in the labels, not missing "
                       "capacity")
            return Diagnosis("good fit", evidence, [*curves.reasons, ceiling], ADVICE["good fit"])
        return Diagnosis(curves.verdict, evidence, [*curves.reasons, f"against the baselines: {said}"], curves.advice)
    won = f"the {best} baseline beats the model: {said}"
    thresholds = [THRESHOLDS] if bins and best in FLEXIBLE else []
    if curves.verdict in ("underfitting", "overfitting", "not converged"):
        return Diagnosis(curves.verdict, evidence, [*curves.reasons, won],
                         [*curves.advice, *thresholds, ADVICE["baseline wins"][0]])
    return Diagnosis("baseline wins", evidence, [won, f"its curves alone say {curves.verdict}"],
                     [*thresholds, *ADVICE["baseline wins"]])


def bins_may_help(cfg, spec) -> bool:
    """Whether the model is an MLP with numbers and no piecewise-linear bins: trees cut a number at a threshold
    at once, where an MLP's units bend slowly towards one; the bins made Computers' gap to boosting a lead and
    helped most tables that boosting led (bench/README.md, tables)."""
    return (cfg.model.name in ("mlp", "tabular_mlp") and not cfg.features.piecewise_bins
            and any(f.kind == "numeric" for f in spec.features))


def _skill_evidence(curves: Diagnosis, test: dict) -> tuple[str, dict, str]:
    best = next((k.rsplit(".", 1)[1] for k in test if k.startswith("skill.best_baseline.")), "the best baseline")
    ratio, low, high = test["skill.ratio"], test["skill.ratio_low"], test["skill.ratio_high"]
    evidence = {**curves.evidence, "skill_ratio": round(ratio, 4), "skill_ratio_low": round(low, 4),
                "skill_ratio_high": round(high, 4), "best_baseline": best}
    times = f"{ratio:.3f}x that of {best}" if math.isfinite(ratio) else f"above 0 where {best}'s is 0"
    return best, evidence, f"test error {times} (95% interval {low:.3f} to {high:.3f})"


def no_skill(curves: Diagnosis, test: dict, min_skill: float) -> Diagnosis:
    """``curves`` turned into ``no skill`` unless the skill ratio's interval lies below ``1 - min_skill``."""
    if "skill.ratio_high" not in test:
        return curves
    best, evidence, said = _skill_evidence(curves, test)
    low, high = test["skill.ratio_low"], test["skill.ratio_high"]
    if high < 1.0 - min_skill:
        return Diagnosis(curves.verdict, evidence, [*curves.reasons, f"skill: {said}"], curves.advice)
    why = ("worse than" if low > 1.0 else "not distinguishable from" if high >= 1.0
           else f"not surely {min_skill:.0%} better than")  # the interval reaches within min_skill of 1
    return Diagnosis("no skill", evidence, [f"the model is {why} the {best} baseline: {said}",
                                            f"its curves alone say {curves.verdict}"], ADVICE["no skill"])


def diagnose(history: dict[str, list[float]], metric: str, higher_is_better: bool, trivial: float,
             max_epochs: int, stopped_early: bool, augmentable: bool = True) -> Diagnosis:
    """Classify a run from its history.

    Args:
        history: Per-epoch ``loss``, ``val_loss``, ``<metric>`` (training) as Keras logs them.
        metric: The task's metric (accuracy, rmse).
        higher_is_better: Whether larger ``metric`` values are better.
        trivial: ``metric`` of the trivial predictor on the training data (majority rate; target std for rmse).
        max_epochs: The epochs the run was allowed.
        stopped_early: Whether early stopping ended it before ``max_epochs``.
        augmentable: Whether the inputs take augmentation (images, audio): tables and series get no such advice.
    """
    loss, val = history["loss"], history["val_loss"]
    n = len(val)
    best = min(range(n), key=val.__getitem__)
    gaps = [v - t for v, t in zip(val, loss)]
    tail = max(2, n // 3)
    train_metric = history[metric][-1]
    skill = _skill(train_metric, trivial, higher_is_better)
    evidence = {
        "epochs": n, "max_epochs": max_epochs, "stopped_early": stopped_early,
        f"train_{metric}": round(train_metric, 4), f"trivial_{metric}": round(trivial, 4),
        "train_skill": round(skill, 3),
        "best_epoch": best + 1, "best_val_loss": round(val[best], 4), "final_val_loss": round(val[-1], 4),
        "val_rise_after_best": round((val[-1] - val[best]) / abs(val[best]) if val[best] else 0.0, 3),
        "final_gap": round(gaps[-1], 4), "final_gap_share": round(gaps[-1] / abs(val[-1]) if val[-1] else 0.0, 3),
        "gap_trend": round(_slope(gaps[-tail:]), 5),
    }
    fifth = max(1, n // 5)
    whole = val[0] - val[best]
    fall = (val[-fifth - 1] - min(val[-fifth:])) / whole if n > fifth and whole > 0 else 0.0
    evidence["val_fall_last_fifth"] = round(fall, 4)  # as a share of the whole run's fall

    reasons = []
    # A rise counts only with validation above training at the end: below it (augmentation, dropout and
    # few validation examples), the training data is not what the model fits better, and regularising more widens it.
    overfit = (evidence["val_rise_after_best"] > RISE_LIMIT and gaps[-1] > 0) or (
        n >= GAP_EPOCHS and evidence["final_gap_share"] > GAP_LIMIT and evidence["gap_trend"] > 0)
    if skill < SKILL_FLOOR and not overfit:
        verdict = "underfitting"
        reasons.append(f"training {metric} {train_metric:.4g} is little better than the trivial predictor's "
                       f"{trivial:.4g} (skill {skill:.2f} < {SKILL_FLOOR})")
    elif overfit:  # even at a low training skill: noisy labels, not a lack of capacity, limit such a fit
        verdict = "overfitting"
        if best < n - 1:
            reasons.append(f"validation loss bottomed at epoch {best + 1} ({val[best]:.4g}) and ended "
                           f"{evidence['val_rise_after_best']:.0%} above it")
        else:
            reasons.append(f"validation loss is still at its lowest in the last epoch ({val[best]:.4g}), but "
                           "the training loss falls faster")
        reasons.append(f"the gap between validation and training loss is {gaps[-1]:.4g} "
                       f"({evidence['final_gap_share']:.0%} of the validation loss), trend {evidence['gap_trend']:+.3g}/epoch")
        if stopped_early:
            reasons.append(f"early stopping ended the run; with restore_best_weights the model is epoch {best + 1}'s")
        if skill < SKILL_FLOOR:
            reasons.append(f"training {metric} {train_metric:.4g} is only skill {skill:.2f} past the trivial "
                           f"predictor's {trivial:.4g}, yet validation pulls away: what is left looks like noise the "
                           "features cannot explain, and more capacity would widen the gap")
    elif not stopped_early and n >= max_epochs and fall > STILL_FALLING:
        verdict = "not converged"
        reasons.append(f"validation loss made {fall:.1%} of its whole fall in the last {fifth} epochs, and the "
                       f"{max_epochs} epochs ran out")
    else:
        verdict = "good fit"
        reasons.append(f"training skill {skill:.2f}; validation loss ended {evidence['val_rise_after_best']:.0%} above "
                       f"its best (epoch {best + 1}); gap {gaps[-1]:.4g}")
    return Diagnosis(verdict, evidence, reasons, [a for a in ADVICE[verdict] if augmentable or a != AUGMENT])


def _skill(value: float, trivial: float, higher_is_better: bool) -> float:
    """0 for the trivial predictor, 1 for a perfect one (accuracy: 1; errors: 0)."""
    if higher_is_better:
        return (value - trivial) / (1.0 - trivial) if trivial < 1.0 else 1.0
    return 1.0 - value / trivial if trivial > 0 else 1.0


def _slope(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))
