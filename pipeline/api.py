"""The pipeline as a Python library: the same jobs the CLI runs, returning typed results.

    import pipeline

    cfg = pipeline.load_config("configs/digits.yaml", ["train.epochs=5"])
    result = pipeline.train(cfg)
    print(result.test_metrics, result.export_path)

Importing this module (or ``pipeline``) does not import TensorFlow: each job
sets TensorFlow's environment from the config first, then imports it.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ExperimentConfig, load


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> ExperimentConfig:
    """Defaults -> the experiment YAML at ``path`` -> ``key=value`` overrides, validated and frozen."""
    return load(path, list(overrides))


def train(cfg: ExperimentConfig, callbacks: list = (), alias: str | None = "champion", run_tags: dict | None = None):
    """Train, evaluate, track, export and register; returns a ``jobs.train.TrainResult``."""
    _configure(cfg)
    from pipeline.jobs.train import train as job

    return job(cfg, callbacks=callbacks, alias=alias, run_tags=run_tags)


def tune(cfg: ExperimentConfig, workers: int = 0, command: list[str] = (), run_tags: dict | None = None):
    """Run (or continue) the search in ``cfg.tune``; returns a ``tune.results.Outcome`` (None in a worker process)."""
    _configure(cfg)
    from pipeline.jobs.tune import tune as job

    return job(cfg, workers=workers, command=list(command), run_tags=run_tags)


def backtest(cfg: ExperimentConfig, folds: int | None = None):
    """Walk-forward backtest of a forecasting config; returns a ``jobs.backtest.Backtest``."""
    _configure(cfg)
    from pipeline.jobs.backtest import backtest as job

    return job(cfg, folds)


def retrain(cfg: ExperimentConfig):
    """The retraining job under its lock; returns a ``jobs.retrain.Decision`` (promoted or kept, and why)."""
    from pipeline.jobs.retrain import lock, registry_required
    from pipeline.jobs.retrain import retrain as job

    with lock(cfg), registry_required():  # the lock before TensorFlow loads: a second job exits at once
        _configure(cfg)
        return job(cfg)


def run_study(path: str | Path, overrides: list[str] = ()):
    """Train (or search) every variant of a study file; returns a ``jobs.study.Study``."""
    from pipeline.jobs.study import load_study
    from pipeline.jobs.study import run_study as job

    _, configs = load_study(path, list(overrides))  # every variant validated before TensorFlow
    _configure(next(iter(configs.values())))
    return job(path, list(overrides))


def report(run_id: str | None = None, experiment: str | None = None, tracking_uri: str = "sqlite:///work/mlflow.db",
           out: str | Path | None = None) -> Path:
    """Write the HTML report of a run or of a whole experiment; returns its path."""
    from pipeline import runtime

    runtime.quiet_tensorflow()
    if run_id:
        runtime.load_tensorflow()  # a run's report reads its export: without TensorFlow's start-up noise
    from pipeline.jobs.report import report as job

    return job(run_id, experiment, tracking_uri, out)


def prepare(cfg: ExperimentConfig, beam: list[str] | None = None):
    """Prepare the configured dataset; returns its ``DataSpec``.

    ``beam``: Apache Beam pipeline flags (``["--runner=DirectRunner", ...]``) to prepare a csv or
    image_folder dataset as a Beam pipeline instead of in this process (needs the ``.[beam]`` extra).
    """
    _configure(cfg)
    from pipeline.jobs.prepare import prepare as job

    return job(cfg, beam)


def augment_preview(cfg: ExperimentConfig, out: str | Path | None = None, samples: int = 6) -> Path:
    """A PNG grid of a few training examples beside each configured augmentation; returns its path."""
    _configure(cfg)
    from pipeline.data.augment import preview

    return preview(cfg, out or f"{cfg.workdir}/augment-preview-{cfg.name}.png", n_images=samples)


def prepare_for_workers(cfg: ExperimentConfig) -> None:
    """Prepare the dataset once, before a launcher starts its workers, and check the config's splits and
    features against it (one-line errors, before any worker starts).

    A dataset prepared already is found and checked without TensorFlow, which the launcher, only
    waiting on its workers after this, then never imports.
    """
    from pipeline.data import dataset

    if dataset.is_prepared(cfg):
        _check(cfg)
    else:
        _configure(cfg)  # preparing imports TensorFlow: its start-up kept quiet
    dataset.prepare(cfg)


def _check(cfg: ExperimentConfig) -> None:
    """What can be checked without TensorFlow: the data's names and paths, a writable workdir."""
    from pipeline import runtime
    from pipeline.data.checks import check

    check(cfg)
    runtime.writable(cfg)


def _configure(cfg: ExperimentConfig) -> None:
    """Check what needs no TensorFlow, then set TensorFlow's environment."""
    from pipeline import runtime

    _check(cfg)
    runtime.configure(cfg)
    runtime.load_tensorflow()
