"""TFDS builders for the built-in datasets and for users' own files.

Importing this package registers each builder with TFDS by its snake_case
class name, so ``tfds.load("digits")`` works like any catalogue dataset.
The built-in ones prepare data that ships inside Python packages: nothing is
downloaded.
"""

from pipeline.data.builders.digits import Digits

__all__ = ["Digits", "builder_kwargs"]


def builder_kwargs(cfg) -> dict:
    """Extra arguments for builders that read a user's path (csv, image_folder); none for others."""
    return {}
