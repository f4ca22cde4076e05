"""``report(...)``: a self-contained HTML page about one run or one whole experiment, logged to MLflow."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError


def report(run_id: str | None = None, experiment: str | None = None, tracking_uri: str = "sqlite:///work/mlflow.db",
           out: str | Path | None = None) -> Path:
    """Write the report of ``run_id``, or of every run of ``experiment`` (give one of them); return its path.

    Args:
        tracking_uri: The MLflow store; default the embedded one under ``work/``.
        out: HTML path; default ``<workdir>/runs/<run id>/report.html`` or ``<store folder>/reports/<name>.html``.
    """
    if (run_id is None) == (experiment is None):
        raise ConfigError("report: give a RUN_ID or --experiment NAME (one of them)")
    from pipeline.track.server import sqlite_file

    store = sqlite_file(tracking_uri)
    if store is not None and not store.is_file():  # MLflow would make an empty store there, and find nothing in it
        from pipeline.report.run import WHERE

        raise ConfigError(f"No tracking store at {store} {WHERE}")
    if experiment is not None:
        from pipeline.report import experiment_report

        return experiment_report(experiment, tracking_uri, out)
    from pipeline.report import report as run_report

    return run_report(run_id, tracking_uri, out)
