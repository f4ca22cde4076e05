"""Declarative Keras 3 training pipeline.

The package reads top to bottom in the order data flows:
config -> data -> models -> train -> track -> export, then ``serving/``.
Nothing here imports TensorFlow at import time, so ``pipeline --help`` and
config validation stay fast; the stages import it when they run.
"""

__version__ = "0.1.0"
