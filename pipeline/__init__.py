"""Declarative Keras 3 training pipeline: one YAML config in, a tracked run and a served model out.

The package reads top to bottom in the order data flows:
config -> data -> models -> train -> track -> export, then ``serving/``;
jobs/ holds the recipes over those stages and api.py their Python entry points:
``pipeline.load_config``, ``train``, ``tune``, ``backtest``, ``retrain``,
``run_study``, ``report``, ``prepare`` and ``augment_preview``. Nothing here imports TensorFlow, so ``pipeline --help``
and config validation stay fast.
"""

# Three stages share a name with an API function (train, tune, report). Python binds a subpackage
# to its parent's attribute when the subpackage is first imported, so they are imported here,
# first, and the functions then take the names for good: later imports of their modules
# (pipeline.train.loop, ...) do not bind the parent's attribute again.
import pipeline.report
import pipeline.train
import pipeline.tune  # noqa: F401
from pipeline.api import (
    augment_preview,
    backtest,
    load_config,
    prepare,
    report,
    retrain,
    run_study,
    train,
    tune,
)

__version__ = "0.1.0"
__all__ = ["augment_preview", "backtest", "load_config", "prepare", "report", "retrain", "run_study", "train", "tune"]
