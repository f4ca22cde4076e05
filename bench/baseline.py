"""The pipeline's model beside classical baselines, on the same TFDS split, in one run.

Usage: python bench/baseline.py [digits|ames|movielens ...] [-- key=value ...]
(default: all three; overrides apply to each experiment config)

Every baseline trains on the pipeline's train+validation splits and is scored on
its test split, exactly the data the pipeline's test metric uses:
- digits: SVC(gamma=0.001), the anchor from the issue (0.989 on its own 80/20 split);
- ames: HistGradientBoostingRegressor on one-hot categoricals, RidgeCV, the mean
  (RMSE of log Sale_Price; anchors 0.134, 0.159, 0.406 on another 80/20 split);
- movielens: the global mean and a damped user+item bias model (anchors 1.052, 0.889).
"""

from __future__ import annotations

import sys
import time


def _frames(splits, names):
    """train+validation and test as (columns dict, labels) NumPy pairs, from the pipeline's own datasets."""
    import numpy as np

    def collect(*datasets):
        cols: dict[str, list] = {n: [] for n in names}
        labels = []
        for ds in datasets:
            for x, y in ds:
                for n in names:
                    cols[n].append(x[n].numpy())
                labels.append(y.numpy())
        return {n: np.concatenate(v) for n, v in cols.items()}, np.concatenate(labels)

    return collect(splits.train_epoch(), splits.validation), collect(splits.test)


def digits(splits):
    import numpy as np
    from sklearn.svm import SVC

    (x, y), (xt, yt) = _frames(splits, ["image"])
    # Back to the source's 0..16 counts, the scale the anchor's gamma was chosen for.
    flat = lambda a: a["image"].reshape(len(a["image"]), -1) * (16.0 / 255.0)  # noqa: E731
    svc = SVC(gamma=0.001).fit(flat(x), y)
    return {"SVC(gamma=0.001)": float(np.mean(svc.predict(flat(xt)) == yt))}


def ames(splits):
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = [f.name for f in splits.spec.features]
    (x, y), (xt, yt) = _frames(splits, names)  # labels are log(Sale_Price): the config's target transform
    both = pd.get_dummies(pd.concat([pd.DataFrame(x), pd.DataFrame(xt)]).apply(
        lambda c: c.str.decode("utf-8") if c.dtype == object else c), dtype=float)
    train, test = both.iloc[: len(y)], both.iloc[len(y):]
    filled = train.fillna(train.mean())
    rmse = lambda pred: float(np.sqrt(np.mean((pred - yt) ** 2)))  # noqa: E731
    gbm = HistGradientBoostingRegressor(random_state=0).fit(train.values, y)  # handles NaN itself
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 25))).fit(filled.values, y)
    return {"HistGradientBoosting": rmse(gbm.predict(test.values)),
            "RidgeCV": rmse(ridge.predict(test.fillna(train.mean()).values)),
            "mean": rmse(np.full_like(yt, y.mean()))}


def movielens(splits, damping: float = 10.0):
    import numpy as np
    import pandas as pd

    rc = ("userId", "movieId")
    (x, y), (xt, yt) = _frames(splits, list(rc))
    train = pd.DataFrame({"u": x[rc[0]], "i": x[rc[1]], "r": y})
    mu = train.r.mean()
    # Damped means: an item rated by few users stays near the global mean.
    item = train.groupby("i").r.agg(lambda r: (r - mu).sum() / (len(r) + damping))
    train["ri"] = train.r - mu - train.i.map(item)
    user = train.groupby("u").ri.agg(lambda r: r.sum() / (len(r) + damping))
    pred = mu + pd.Series(xt[rc[1]]).map(item).fillna(0).values + pd.Series(xt[rc[0]]).map(user).fillna(0).values
    rmse = lambda p: float(np.sqrt(np.mean((p - yt) ** 2)))  # noqa: E731
    return {"global mean": rmse(np.full_like(yt, mu)), "damped user+item bias": rmse(np.clip(pred, 0.5, 5.0))}


EXPERIMENTS = {
    # name: (config, metric the pipeline reports, baselines); the task knows each metric's direction
    "digits": ("configs/digits.yaml", "test_accuracy", digits),
    "ames": ("configs/ames.yaml", "test_rmse_log", ames),
    "movielens": ("configs/movielens.yaml", "test_rmse", movielens),
}


def main(argv: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    names = [a for a in argv if a in EXPERIMENTS] or list(EXPERIMENTS)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []

    from pipeline import runtime
    from pipeline.config import load

    runtime.configure(load(EXPERIMENTS[names[0]][0]))
    from pipeline.data import dataset
    from pipeline.jobs.train import train
    from pipeline.tasks import direction

    table = Table(title="pipeline vs baselines (same split; baselines train on train+validation)")
    for col in ("experiment", "model", "metric", "test", "seconds"):
        table.add_column(col)
    for name in names:
        path, metric, baselines = EXPERIMENTS[name]
        higher = direction(metric) == "max"
        cfg = load(path, ["export.enabled=false", "train.verbose=0", *overrides])
        splits = dataset.load(cfg)
        start = time.perf_counter()
        scores = baselines(splits)
        base_s = time.perf_counter() - start
        start = time.perf_counter()
        result = train(cfg)
        ours, ours_s = result.test_metrics[metric], time.perf_counter() - start
        table.add_row(name, f"pipeline {cfg.model.name}", metric, f"{ours:.4f}", f"{ours_s:.1f}")
        for model, score in scores.items():
            better = (ours > score) if higher else (ours < score)
            table.add_row("", model, metric, f"{score:.4f}", f"{base_s:.1f}",
                          style=None if better else "bold red")
        best = max(scores.values()) if higher else min(scores.values())
        table.add_row("", "[b]pipeline - best baseline[/b]", "", f"{ours - best:+.4f}", "", end_section=True)
    Console(width=120).print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
