"""TFDS builders for the built-in datasets.

Importing this package registers each builder with TFDS by its snake_case
class name, so ``tfds.load("digits")`` works like any catalogue dataset.
Each prepares data that ships inside a Python package: nothing is downloaded.
"""

from pipeline.data.builders.digits import Digits

__all__ = ["Digits"]
