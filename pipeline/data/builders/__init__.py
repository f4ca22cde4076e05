"""TFDS builders for the built-in datasets and for users' own files.

Importing this package registers each builder with TFDS by its snake_case
class name, so ``tfds.load("digits")`` works like any catalogue dataset.
The built-in ones prepare data that ships inside Python packages: nothing is
downloaded.
"""

from pipeline.data.builders.ames_housing import AmesHousing
from pipeline.data.builders.digits import Digits
from pipeline.data.builders.files import PATH_BUILDERS, Csv, Series
from pipeline.data.builders.folders import ImageFolder, image_folder_config
from pipeline.data.builders.movielens_small import MovielensSmall
from pipeline.data.builders.series import ElectricityDemand, Sp500Daily
from pipeline.data.builders.speech import (
    AudioFolder,
    SpokenDigits,
    audio_folder_config,
    spoken_digits_config,
)

__all__ = ["AmesHousing", "AudioFolder", "Csv", "Digits", "ElectricityDemand", "ImageFolder", "MovielensSmall",
           "Series", "Sp500Daily", "SpokenDigits", "builder_kwargs"]

# Builders whose prepared copy depends on the config (a user's path, a sample rate): a config names it.
CONFIGURED = {**PATH_BUILDERS, "image_folder": image_folder_config, "audio_folder": audio_folder_config,
              "spoken_digits": spoken_digits_config}


def builder_kwargs(cfg) -> dict:
    """Builders that read a user's path or take options (CONFIGURED) get a config naming them; others nothing."""
    make = CONFIGURED.get(cfg.data.dataset)
    return {"config": make(cfg)} if make else {}
