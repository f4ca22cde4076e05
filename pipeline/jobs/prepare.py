"""``prepare(cfg)``: prepare the configured dataset as its own step, before any training reads it.

Multi-worker training prepares once here before its workers start; a scheduled
job can do the same ahead of the nightly retraining.
"""

from __future__ import annotations


def prepare(cfg):
    """Prepare the dataset if it is not prepared yet; return its spec (name, version, sizes, digest)."""
    from pipeline.data import dataset

    dataset.prepare(cfg)
    return dataset.load(cfg).spec
