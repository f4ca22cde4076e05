"""The digits CNN beside scikit-learn's SVC(gamma=0.001), on the same TFDS split, in one run.

Usage: python bench/baseline.py [key=value ...]   (overrides for configs/digits.yaml)

The SVC is the anchor from the issue (0.989 on an 80/20 split of the same data):
here it trains on our train+validation split (80%) and is scored on our test
split (the other 20%), exactly the data the CNN's test accuracy uses.
"""

from __future__ import annotations

import sys
import time


def main(overrides: list[str]) -> None:
    import numpy as np
    from rich.console import Console
    from rich.table import Table
    from sklearn.svm import SVC

    from pipeline.config import load
    from pipeline.data import dataset
    from pipeline.train.loop import configure_tensorflow, train

    cfg = load("configs/digits.yaml", ["export.enabled=false", "train.verbose=0", *overrides])
    configure_tensorflow(cfg)
    splits = dataset.load(cfg)

    def arrays(ds):
        xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
        # Back to the source's 0..16 counts, the scale the anchor's gamma was chosen for.
        return np.concatenate(xs).reshape(sum(len(x) for x in xs), -1) * (16.0 / 255.0), np.concatenate(ys)

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (arrays(d) for d in (splits.train, splits.validation, splits.test))
    start = time.perf_counter()
    svc = SVC(gamma=0.001).fit(np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]))
    svc_acc, svc_s = float(svc.score(x_te, y_te)), time.perf_counter() - start

    start = time.perf_counter()
    result = train(cfg)
    cnn_acc, cnn_s = result.test_metrics["test_accuracy"], time.perf_counter() - start

    table = Table(title=f"digits test split ({len(y_te)} images, {cfg.data.splits.test})")
    for col in ("model", "trained on", "test accuracy", "seconds"):
        table.add_column(col)
    table.add_row("SVC(gamma=0.001)", f"train+validation ({len(y_tr) + len(y_va)})", f"{svc_acc:.4f}", f"{svc_s:.1f}")
    table.add_row(f"pipeline {cfg.model.name}", f"train ({len(y_tr)}), early stop on validation",
                  f"{cnn_acc:.4f}", f"{cnn_s:.1f}")
    Console().print(table)
    print(f"CNN - SVC: {cnn_acc - svc_acc:+.4f}  (MLflow run {result.run_id})")


if __name__ == "__main__":
    main(sys.argv[1:])
