"""``digits``: scikit-learn's bundled handwritten digits as a TFDS dataset."""

import numpy as np
import tensorflow_datasets as tfds

from pipeline.data.builders.local import Local


class Digits(Local, tfds.core.GeneratorBasedBuilder):
    """1,797 8x8 grey-scale handwritten digits (UCI optdigits test set, bundled with scikit-learn).

    Pixels are stored as uint8 in [0, 255] (the source's 0..16 counts, rescaled), so
    the pipeline treats them like any other TFDS image dataset. Each example keeps
    its row index as ``id`` so split membership can be checked.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Handwritten digits 0-9, 8x8 pixels, from sklearn.datasets.load_digits.",
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Scalar(dtype=np.int64),
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        for i, (image, label) in enumerate(zip(pixels, bunch.target)):
            yield i, {"id": i, "image": image, "label": int(label)}
