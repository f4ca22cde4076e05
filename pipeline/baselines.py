"""Classical baselines every run is scored against: a network a linear model beats is not worth serving.

Fitted on the training split (the rows the model's statistics come from), scored on the same
test examples as the model, on the label's training scale (log price for a log target):

    classification   majority class · logistic regression · gradient boosting (tables)
    regression       mean · ridge regression · gradient boosting (tables)
    recommendation   damped user + item bias
    (forecasting has its own: pipeline/forecast.py)

Tables and images enter the linear and boosting models as a design matrix (pipeline/design.py).
Logged as ``baseline.<name>.<metric>`` beside the model's ``test_<metric>``, with
the model's error over the best baseline's and its 95% bootstrap interval over test examples
(``skill.*``): the fit diagnosis says when a baseline beats the model beyond noise.

Cost is bounded: at most ``train.baselines_rows`` training and test rows, and no baseline starts
once ``train.baselines_seconds`` are spent (the first always runs; the rest are skipped, with a note).
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.design import MAX_PIXELS, Design, linear_model, row_blocks, stacked

EARLY_STOPPING_ROWS = 10_000  # above this many rows boosting stops early (scikit-learn's "auto")
RESAMPLES = 500  # bootstrap resamples of the test examples for the skill interval
ANNOUNCED_ROWS = 10_000  # training rows from which the baselines' fitting is announced (it takes seconds or more)


TABLE = frozenset({"numeric", "sequence", "categorical", "multi_hot"})  # feature kinds a table's columns have


@dataclass(frozen=True)
class Baseline:
    tasks: tuple[str, ...]  # classification, regression, recommendation
    fit: Callable  # (train features, train labels, spec, cfg) -> predict(test features) -> predictions
    uses: frozenset[str] = frozenset()  # the feature kinds it reads: chosen only for data with one (none: labels alone)


def fit(data, cfg, task) -> Scored:
    """Each chosen baseline fitted on the training split and scored on up to ``train.baselines_rows`` test rows.

    A run calls it before its model trains: the feed's caches fill during the first epoch, and the
    baselines' designs then came on top of them (peak memory at 1M rows; bench/README.md, memory).
    """
    chosen = _chosen(cfg, data.spec)
    if not chosen:
        return Scored(np.zeros(0), {}, {}, cfg.seed)
    features, labels = _test_rows(data, cfg.train.baselines_rows)
    train_x, train_y = _train_rows(cfg, data)
    if len(train_y) >= ANNOUNCED_ROWS:  # seconds to a minute before the first epoch: say what runs
        print(f"fitting the baselines ({', '.join(chosen)}) on {len(train_y):,} training rows, for at most about "
              f"{cfg.train.baselines_seconds:g} s (train.baselines_seconds)", file=sys.stderr, flush=True)
    scored = Scored(labels, {}, {}, cfg.seed)
    started = time.perf_counter()
    for name in chosen:
        if scored.losses and time.perf_counter() - started > cfg.train.baselines_seconds:
            print(f"note: baseline {name} skipped: the baselines' budget of {cfg.train.baselines_seconds:g} s "
                  "(train.baselines_seconds) is spent", file=sys.stderr)
            continue
        try:
            with _convergence_noted(name):
                guess = BASELINES[name].fit(train_x, train_y, data.spec, cfg)(features)
        except Exception as exc:  # noqa: BLE001 - a degenerate column, too little data: reported, never fatal
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"note: baseline {name} skipped: {reason}", file=sys.stderr)
            continue
        scored.figures.update({f"baseline.{name}.{k}": v for k, v in _figures(task, guess, labels).items()})
        scored.losses[name] = _losses(task, guess, labels)
    return scored


@dataclass
class Scored:
    """The baselines' test figures and per-example losses, waiting for the model's on the same rows."""

    labels: np.ndarray
    figures: dict[str, float]
    losses: dict[str, np.ndarray]
    seed: int

    def against(self, model, data, task) -> dict[str, float]:
        """The baselines' figures and the skill ratio of ``model`` over the best; {} when none ran."""
        from pipeline.skill import Errors, skill

        if not self.losses:
            return {}
        predicted = _predictions(model, data, task, len(self.labels))
        losses = {"model": _losses(task, predicted, self.labels), **self.losses}
        # Classification compares error rates (mean 0/1 losses), regression RMSEs (mean squared errors).
        errors = (Errors({"mae": losses}, "mae", horizon=1) if task.name == "classification"
                  else Errors({"mse": losses}, "rmse", horizon=1))
        return {**self.figures, **skill(errors, RESAMPLES, self.seed)}


@contextlib.contextmanager
def _convergence_noted(name: str):
    """A solver's ConvergenceWarning (ten lines of advice) as one note; other warnings pass as they are.

    A solver stopped at its iteration limit still predicts; its figure is what the run is compared
    with, so the note says that the baseline may be weaker than it could be.
    """
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        yield
    for warning in caught:
        if not issubclass(warning.category, ConvergenceWarning):
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        print(f"note: baseline {name} stopped at its solver's iteration limit before converging: "
              "it may be weaker than it could be", file=sys.stderr)


def _chosen(cfg, spec) -> list[str]:
    family = "recommendation" if cfg.model.name == "recommender" else spec.task
    wanted = cfg.train.baselines
    if wanted == "none" or family == "forecasting":
        return []
    kinds = {f.kind for f in spec.features}
    names = [n for n, b in BASELINES.items() if family in b.tasks and (not b.uses or b.uses & kinds)]
    return names if wanted == "auto" else [n for n in wanted if n in names]


def _test_rows(data, limit: int):
    """Test features and labels of the first ``limit`` test rows (the split's order is fixed)."""
    from pipeline.data.columns import shared_text

    features: dict[str, list] = {}
    seen: dict[str, dict] = {}
    labels = []
    for x, y in _first_batches(data.test, limit):
        labels.append(y.numpy())
        for name, value in x.items():
            features.setdefault(name, []).append(shared_text(value.numpy(), seen.setdefault(name, {})))
    return {n: np.concatenate(v)[:limit] for n, v in features.items()}, np.concatenate(labels)[:limit]


def _predictions(model, data, task, rows: int) -> np.ndarray:
    """The model's predictions (class, or the first output) on the first ``rows`` test rows."""
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False), autograph=False)  # traced: many small layers
    predicted = []
    for x, _ in _first_batches(data.test, rows):
        out = np.asarray(call(x))
        predicted.append(out.argmax(axis=-1) if task.name == "classification" else out.reshape(len(out), -1)[:, 0])
    return np.concatenate(predicted)[:rows]


def _first_batches(batches, rows: int):
    """The (features, labels) batches that hold the first ``rows`` examples (the last one may hold more)."""
    count = 0
    for x, y in batches:
        yield x, y
        count += len(y)
        if count >= rows:
            return


def _train_rows(cfg, data):
    """Training features and labels: the statistics' columns, plus raw images when the pixel baseline may run.

    Images come in as many as MAX_PIXELS hold (a folder of 100,000 pictures gives its first few thousand):
    the baseline on a sample, not none at all.
    """
    spec, limit = data.spec, cfg.train.baselines_rows
    images = [f for f in spec.features if f.kind == "image"]
    pixels = sum(int(np.prod(f.shape)) for f in images)
    if pixels and MAX_PIXELS >= pixels:
        limit = min(limit, MAX_PIXELS // pixels)
    columns = {n: np.asarray(v)[:limit] for n, v in data.train_columns.items()}
    labels = columns.pop(spec.label)
    if images and len(labels) * pixels <= MAX_PIXELS:
        from pipeline.data.dataset import training_images

        columns.update(training_images(cfg, [f.name for f in images], len(labels)))
    return columns, labels


def _losses(task, predicted, labels) -> np.ndarray:
    """Per test example: 0/1 error (classification) or squared error (regression, training scale)."""
    if task.name == "classification":
        return (np.asarray(predicted) != np.asarray(labels)).astype(np.float64)
    return (np.asarray(predicted, np.float64) - np.asarray(labels, np.float64)) ** 2


def _figures(task, predicted, labels) -> dict[str, float]:
    from pipeline.tasks import METRICS

    out = {n: METRICS[n].numpy(labels, predicted) for n in task.metric_names}
    if task.name == "regression":
        out.update(task.evaluate(np.asarray(predicted, np.float64)[:, None], np.asarray(labels, np.float64)))
    return out


# ---- the baselines --------------------------------------------------------------------------------


def _majority(x, y, spec, cfg):
    values, counts = np.unique(y, return_counts=True)
    return lambda test: np.full(len(next(iter(test.values()))), values[np.argmax(counts)])


def _mean(x, y, spec, cfg):
    mean = float(np.mean(y))
    return lambda test: np.full(len(next(iter(test.values()))), mean)


def _linear(x, y, spec, cfg):
    """Logistic regression (classification) or ridge (regression) on the standardised design."""
    from scipy.sparse import issparse
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    design = Design(spec, x, images=True)
    matrix = stacked(design(rows) for rows in row_blocks(x)) if design.one_hot else design(x)
    # A sparse design (one-hot columns) is scaled but not centred, so that its zeros stay zeros (the
    # intercept takes the means: the same fit); pixels and numbers alone stay dense and centred.
    fitted = make_pipeline(StandardScaler(with_mean=not issparse(matrix), copy=False),
                           linear_model(spec.task, matrix.shape, y)).fit(matrix, y)
    return lambda test: _predict(fitted, design, test)


def _boosting(x, y, spec, cfg):
    """HistGradientBoosting on the table (not on images: raw pixels are no table)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.model_selection import train_test_split

    design = Design(spec, x, images=False, fill=False)
    classifier = spec.task == "classification"
    model = (HistGradientBoostingClassifier if classifier else HistGradientBoostingRegressor)(random_state=cfg.seed)
    if len(y) <= EARLY_STOPPING_ROWS:
        fitted = model.fit(design(x), y)
    else:  # early stopping on held-out rows built apart: scikit-learn's own split would copy the dense design
        kept, held = train_test_split(np.arange(len(y)), test_size=model.validation_fraction,
                                      stratify=y if classifier else None, random_state=cfg.seed)
        # On, whatever the training part's size: "auto" would count only the rows left after the split.
        fitted = model.set_params(early_stopping=True).fit(design(_take(x, kept)), y[kept],
                                                           X_val=design(_take(x, held)), y_val=y[held])
    return lambda test: _predict(fitted, design, test)


def _take(columns: dict, rows: np.ndarray) -> dict:
    return {n: np.asarray(v)[rows] for n, v in columns.items()}


def _predict(fitted, design, test: dict) -> np.ndarray:
    """Predictions block by block: the test rows' dense design never exists whole."""
    return np.concatenate([fitted.predict(design(rows)) for rows in row_blocks(test)])


def _user_item_bias(x, y, spec, cfg, damping: float = 10.0):
    """Damped user and item biases around the mean: an item rated by few users stays near the mean."""
    import pandas as pd

    rc = cfg.model.recommender
    frame = pd.DataFrame({"u": x[rc.user], "i": x[rc.item], "r": np.asarray(y, np.float64)})
    mu = frame.r.mean()
    item = frame.groupby("i").r.agg(lambda r: (r - mu).sum() / (len(r) + damping))
    frame["rest"] = frame.r - mu - frame.i.map(item)
    user = frame.groupby("u").rest.agg(lambda r: r.sum() / (len(r) + damping))

    def predict(test):
        return (mu + pd.Series(test[rc.item]).map(item).fillna(0.0).to_numpy()
                + pd.Series(test[rc.user]).map(user).fillna(0.0).to_numpy())

    return predict


BASELINES = {
    "majority": Baseline(("classification",), _majority),
    "mean": Baseline(("regression", "recommendation"), _mean),
    "linear": Baseline(("classification", "regression"), _linear, uses=TABLE | {"image"}),
    "gradient_boosting": Baseline(("classification", "regression"), _boosting, uses=TABLE),  # raw pixels are no table
    "user_item_bias": Baseline(("recommendation",), _user_item_bias),
}
