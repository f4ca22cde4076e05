"""An export's metrics on a test split, through its serving signature: the figures clients would see.

Retraining compares champion and challenger this way, so the decision rests on
what serves, not on the Keras model that produced it.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.export.saved_model import predict_split


def evaluate_export(path: Path, data, task) -> dict[str, float]:
    """The task's metrics of the SavedModel at ``path`` on ``data.test``."""
    served, labels = predict_split(path, data.spec, data.test, task.label_output)
    return task.score_served(served, labels)
