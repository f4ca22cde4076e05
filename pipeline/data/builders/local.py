"""What this project's builders share: their data is on this machine, never on TFDS's bucket."""

from __future__ import annotations


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
