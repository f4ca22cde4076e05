"""TFDS builders for the built-in datasets and for users' own files.

Importing this package registers each builder with TFDS by its snake_case
class name, so ``tfds.load("digits")`` works like any catalogue dataset.
The built-in ones prepare data that ships inside Python packages: nothing is
downloaded.
"""

from pipeline.data.builders.ames_housing import AmesHousing
from pipeline.data.builders.digits import Digits
from pipeline.data.builders.files import PATH_BUILDERS, Csv, ImageFolder, Series
from pipeline.data.builders.movielens_small import MovielensSmall
from pipeline.data.builders.series import ElectricityDemand, Sp500Daily

__all__ = ["AmesHousing", "Csv", "Digits", "ElectricityDemand", "ImageFolder", "MovielensSmall", "Series",
           "Sp500Daily", "builder_kwargs"]


def builder_kwargs(cfg) -> dict:
    """Builders that read a user's path (csv, series, image_folder) get a config naming it; others nothing."""
    make = PATH_BUILDERS.get(cfg.data.dataset)
    return {"config": make(cfg)} if make else {}
