"""Declarative Keras 3 training pipeline: one YAML config in, a tracked run and a served model out.

The package reads top to bottom in the order data flows:
config -> data -> models -> train -> track -> export, then ``serving/``;
jobs/ holds the recipes over those stages and api.py their Python entry points:
``pipeline.load_config``, ``train``, ``tune``, ``retrain``, ``run_study``,
``report`` and ``prepare``. Nothing here imports TensorFlow at import time, so
``pipeline --help`` and config validation stay fast.
"""

__version__ = "0.1.0"

API = ("load_config", "train", "tune", "retrain", "run_study", "report", "prepare")
__all__ = list(API)


def __getattr__(name: str):
    """The API's functions, imported on first use (``import pipeline.errors`` stays light)."""
    if name in API:
        from pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
