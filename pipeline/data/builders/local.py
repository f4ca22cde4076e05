"""What this project's builders share: their data is on this machine, never on TFDS's bucket, and
preparing it twice writes the same bytes."""

from __future__ import annotations

from tensorflow_datasets.core import example_serializer

from pipeline.data.tfds_reader import tested_tfds


class Local:
    """A mixin, first among a builder's bases, whose ``DatasetInfo`` never looks for TFDS's bucket.

    An unprepared builder asks its info to start from the copy on TFDS's public bucket, and TFDS
    makes a temporary folder to copy that into before it looks: with the bucket out of reach (as
    here, where TFDS is told not to use it) the folder stays behind, empty. One folder a
    construction: every run of a nightly job that prepares, every `is_prepared` on a new input.
    """

    def dataset_info_from_configs(self, **kwargs):
        info = super().dataset_info_from_configs(**kwargs)
        info.initialize_from_bucket = lambda: None  # nothing on the bucket to start from
        return info


def _serialize_deterministically(self, example) -> bytes:
    return self.get_tf_example(example).SerializeToString(deterministic=True)


# A prepared dataset is named by the SHA-256 of its files (its digest, logged with every run: same digest, same
# data). TFDS's writer serialises each example's features, a protobuf map, in the order of the map's hash table,
# which differs from process to process: the digits prepared in six processes had four digests. Sorted
# (protobuf's deterministic serialisation) they have one. Set on import, so that Beam's workers, which import
# the builders to run them, write the same bytes too. A private method of TFDS, as data/tfds_reader.py's reader
# is: set only on the version both follow (another one writes as TFDS does).
if tested_tfds():
    example_serializer.ExampleSerializer.serialize_example = _serialize_deterministically
