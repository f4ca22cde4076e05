"""``prepare(cfg)``: prepare the configured dataset as its own step, before any training reads it.

Multi-worker training prepares once here before its workers start; a scheduled
job can do the same ahead of the nightly retraining, on this machine or, with Beam
flags, as an Apache Beam pipeline on a cluster (pipeline/data/beam.py).
"""

from __future__ import annotations

BEAM_BUILDERS = ("csv", "image_folder")


def prepare(cfg, beam: list[str] | None = None):
    """Prepare the dataset if it is not prepared yet; return its spec (name, version, sizes, digest).

    ``beam``: Beam pipeline flags; the dataset is then prepared by Beam's runner (csv and image_folder).
    """
    from pipeline.data import dataset

    return dataset.describe(cfg, beam_options=None if beam is None else _beam_options(cfg, beam))


def _beam_options(cfg, flags: list[str]):
    """Beam's pipeline options from ``flags``; one line when the dataset or the installation cannot use them."""
    import logging

    from pipeline.errors import ConfigError

    if cfg.data.dataset not in BEAM_BUILDERS:
        raise ConfigError(f"`pipeline prepare --beam` prepares {' and '.join(BEAM_BUILDERS)} datasets; "
                          f"{cfg.data.dataset!r} (`data.dataset`) is prepared without --beam.")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # Beam's import warns on the root logger about Google Cloud clients it lacks
    try:
        from pipeline.data import beam
    except ImportError:
        raise ConfigError("`pipeline prepare --beam` needs Apache Beam: pip install -e '.[beam]'") from None
    finally:
        root.setLevel(level)
    try:
        return beam.options(flags)
    except (ValueError, SystemExit) as exc:
        raise ConfigError(f"Invalid Beam options {' '.join(flags)}: {exc}") from None
