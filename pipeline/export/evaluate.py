"""An export's metrics on a test split, through its serving signature: the figures clients would see.

Retraining compares champion and challenger this way, so the decision rests on
what serves, not on the Keras model that produced it.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.export.saved_model import predict_split

RESAMPLES = 500  # paired bootstrap resamples of the test examples in a comparison


def evaluate_export(path: Path, data, task) -> dict[str, float]:
    """The task's metrics of the SavedModel at ``path`` on ``data.test``."""
    served, labels = predict_split(path, data.spec, data.test, task.label_output)
    return task.score_served(served, labels)


def compare_exports(challenger: Path, champion: Path, data, task, metric: str, margin: float,
                    horizon: int, seed: int) -> tuple[dict, dict, float]:
    """Both exports' metrics on ``data.test``, and the share of paired resamples of its examples on which the
    challenger beats the champion on ``metric`` by more than ``margin``.

    A test split of a few hundred examples moves accuracy by a point or two between resamples: a
    challenger ahead by less than that may be ahead by chance. Both are scored on the same resample
    each time (paired), in blocks of ``horizon`` examples for a series' overlapping windows.
    """
    import numpy as np

    from pipeline.skill import block_resamples
    from pipeline.tasks import direction

    new, labels = predict_split(challenger, data.spec, data.test, task.label_output)
    old, _ = predict_split(champion, data.spec, data.test, task.label_output)
    sign = 1.0 if direction(metric) == "max" else -1.0
    wins = [sign * (task.score_served(new[i], labels[i])[metric] - task.score_served(old[i], labels[i])[metric]) > margin
            for i in block_resamples(len(labels), horizon, RESAMPLES, seed)]
    return task.score_served(new, labels), task.score_served(old, labels), float(np.mean(wins))
