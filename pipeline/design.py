"""Features as one float matrix for scikit-learn: what the classical baselines fit (baselines.py) and what a
wide & deep model's linear part starts from (models/registry.py).

Numbers enter standardised by the model that follows (missing ones filled with the training
mean), categories one-hot over their most frequent training values, images as scaled pixels:
the same ideas as the pipeline's own encoders. A design is built a block of rows at a time, so
that a large table's dense matrix never exists whole.
"""

from __future__ import annotations

import numpy as np

MAX_CATEGORIES = 50  # one-hot columns per categorical feature
MAX_PIXELS = 20_000_000  # training rows x pixels the linear model on pixels takes on
ALPHAS = np.logspace(-2, 4, 13)  # ridge penalties the linear model chooses from
LOO_VALUES = 4_000_000  # design values past which ridge chooses by a held-out fifth (linear_model)
LOGISTIC_ITERATIONS = 300  # the logistic regression's solver stops here, converged or not
CS = np.logspace(-3, 3, 7)  # inverse penalties (C) the logistic regression chooses from
FOLDS = 3  # the folds it chooses C on


class Design:
    """Features -> one float matrix: numbers (NaN filled with the training mean), one-hot categories, pixels.

    Learned from the ``train`` columns (name -> array): ``images`` takes the pixels of the image features
    given there (the caller leaves out images too large to fit), ``fill`` fills missing numbers (boosting
    bins NaN itself). A ValueError says why when no column is left to build a design from.
    """

    def __init__(self, spec, train: dict, images: bool, fill: bool = True):
        self.parts, empty = [], []
        for f in spec.features:
            if f.kind == "image" and images and f.name in train:
                self.parts.append((f.name, "image", None))
            elif f.kind in ("numeric", "sequence"):
                values = np.asarray(train[f.name], np.float64).reshape(len(train[f.name]), -1)
                present = ~np.isnan(values)
                if not present.any():  # an empty column teaches nothing, and boosting's binning fails on it
                    empty.append(f.name)
                    continue
                mean = np.where(present, values, 0.0).sum(axis=0) / np.maximum(present.sum(axis=0), 1)
                self.parts.append((f.name, "numeric", mean if fill else None))
            elif f.kind in ("categorical", "multi_hot"):
                values, counts = np.unique(text(train[f.name]), return_counts=True)
                self.parts.append((f.name, "categorical", values[np.argsort(-counts)][:MAX_CATEGORIES]))
        if not self.parts:  # chosen for its kinds: images over the pixel limit, or empty columns, are left out
            raise ValueError(f"every feature column is empty in the training rows ({', '.join(empty)})" if empty else
                             f"one training image holds more than {MAX_PIXELS:,} pixels, the most the linear model on pixels takes")
        self.one_hot = any(kind == "categorical" for _, kind, _ in self.parts)

    def __call__(self, rows: dict) -> np.ndarray:
        blocks = []
        for name, kind, extra in self.parts:
            values = np.asarray(rows[name])
            if kind == "image":
                blocks.append(values.reshape(len(values), -1).astype(np.float32) / 255.0)
            elif kind == "numeric":
                values = values.astype(np.float64).reshape(len(values), -1)
                blocks.append(np.where(np.isnan(values), extra, values) if extra is not None else values)
            else:
                blocks.append((text(values)[:, None] == extra[None, :]).astype(np.float32))
        return np.concatenate(blocks, axis=1)


def text(values) -> np.ndarray:
    """Category values as str. Text columns hold UTF-8 bytes, which ``astype(str)`` reads as ASCII: a
    "Köln" made the linear and boosting baselines skip the run."""
    values = np.asarray(values)
    if values.dtype == object and values.size and isinstance(values.flat[0], bytes):
        return np.char.decode(values.astype(bytes), "utf-8", "replace")
    return values.astype(str)


def row_blocks(columns: dict, size: int = 8192):
    """``columns`` (name -> array) in slices of ``size`` rows (a design is built a block at a time)."""
    rows = len(next(iter(columns.values())))
    for start in range(0, rows, size):
        yield {name: values[start:start + size] for name, values in columns.items()}


def stacked(blocks):
    """Dense row blocks of a design as one matrix: CSR when most of its values are zeros (one-hot columns).

    On a sparse design RidgeCV takes its covariance route (columns x columns) instead of an SVD of the
    whole design: the same fit in a fraction of the memory (bench/README.md, memory). Whether the
    design is sparse enough is judged on its first block.
    """
    from scipy import sparse as sp

    blocks = iter(blocks)
    first = np.asarray(next(blocks))
    if np.count_nonzero(first) > first.size / 2:
        return np.concatenate([first, *(np.asarray(b) for b in blocks)])
    return sp.vstack([sp.csr_matrix(first), *(sp.csr_matrix(np.asarray(b)) for b in blocks)], format="csr")


def ridge_chosen_on(x, y, x_held, y_held, alphas=ALPHAS):
    """Ridge fitted on (``x``, ``y``) with the alpha of ``alphas`` that predicts the held-out rows best: a series'
    ridge baseline (forecast.py) and the linear start of a wide forecast.

    For windows of a series: leave-one-out would choose among windows that overlap the one left out,
    and a later stretch of the series may want a stronger penalty than its past shows (a daily demand
    series' start lost to the ridge baseline with leave-one-out's alpha; docs/results.md#forecasting).
    """
    import warnings

    from scipy.linalg import LinAlgWarning
    from sklearn.linear_model import Ridge

    with warnings.catch_warnings():  # the weakest penalties on collinear inputs (a calendar's waves repeat with the
        warnings.simplefilter("ignore", LinAlgWarning)  # window): an ill-conditioned solve, which the held-out rows judge
        fits = [Ridge(alpha=alpha).fit(x, y) for alpha in alphas]
    return min(fits, key=lambda fit: float(np.mean((fit.predict(x_held) - y_held) ** 2)))


def linear_model(task: str, shape: tuple[int, int], labels=None):
    """The regularised linear model of a task on a design of ``shape``: the linear baseline, and where a
    wide & deep model starts.

    Each chooses its penalty: a linear model at a fixed one is no honest baseline, nor a good start (at
    scikit-learn's default C=1, logistic regression trailed gradient boosting on AER CreditCard, a table
    of a near-threshold, where the C chosen leads it: bench/README.md, tables). Logistic regression
    chooses C by the folds' log loss; with ``labels`` given, a class of fewer rows than folds keeps C=1.
    Ridge chooses its alpha by leave-one-out, which holds a rows x columns product per alpha. On a
    design of more than LOO_VALUES values, either chooses on one held-out fifth of the rows instead.
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    large = shape[0] * shape[1] > LOO_VALUES
    if task == "classification":
        if labels is not None and np.unique(labels, return_counts=True)[1].min() < FOLDS:
            return LogisticRegression(max_iter=LOGISTIC_ITERATIONS)
        folds = StratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=0) if large else FOLDS
        return LogisticRegressionCV(Cs=CS, l1_ratios=(0.0,), cv=folds, scoring="neg_log_loss",
                                    max_iter=LOGISTIC_ITERATIONS, use_legacy_attributes=False)
    if not large:
        return RidgeCV(alphas=ALPHAS)
    return RidgeCV(alphas=ALPHAS, cv=ShuffleSplit(n_splits=1, test_size=0.2, random_state=0))
