"""The MLflow Model Registry: every export is a model version; aliases say which one serves.

``champion`` is the version the serving root serves (its newest export);
``challenger`` is the version a retraining is evaluating. A version's tags say
where its SavedModel lies (``export.path``, ``export.version``), which run and
data made it, and its test metrics. Versions are registered only once their
export is verified and published, so there is never a half-registered one.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ExperimentConfig

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class Version:
    version: str
    run_id: str
    tags: dict

    @property
    def path(self) -> Path:
        """Where its SavedModel serves from: the serving root once promoted, else where it was exported."""
        return Path(self.tags.get("serving.path") or self.tags["export.path"])


@contextmanager
def _permitted(cfg: ExperimentConfig, action: str):
    """A registry call whose refusal (no permission, no valid credentials) or whose server's absence is one line."""
    from mlflow.exceptions import MlflowException

    from pipeline.track.server import TrackingError, public
    from pipeline.track.spool import answered

    where = f"model {cfg.export.model_name!r} on {public(cfg.tracking.uri)}"
    try:
        with answered(f"{action} of {where}"):
            yield
    except MlflowException as exc:
        refused = exc.error_code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or any(
            f"error code {code}" in str(exc) for code in (401, 403))
        if not refused:
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        raise TrackingError(f"{f'User {user!r}' if user else 'This account'} may not {action} of {where}: the "
                            "registry refused it (ask its administrator for MANAGE on the model)") from None


def _client(cfg: ExperimentConfig):
    from mlflow.tracking import MlflowClient

    from pipeline.track.mlflow import tracking_client

    tracking_client(cfg)  # creates the store (and experiment) if this is its first use
    return MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)


def register(cfg: ExperimentConfig, run_id: str, export_path: Path, tags: dict, alias: str | None) -> Version:
    """A new version of the model ``cfg.export.model_name`` for the export at ``export_path``; move ``alias`` to it."""
    from mlflow.exceptions import MlflowException

    name = cfg.export.model_name
    with _permitted(cfg, "register a version"):
        client = _client(cfg)
        try:
            client.create_registered_model(name, description=f"Exports of the {cfg.name} experiment (pipeline).")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        all_tags = {"export.path": str(Path(export_path).resolve()), "export.version": Path(export_path).name,
                    **{k: str(v) for k, v in tags.items()}}
        mv = client.create_model_version(name, f"runs:/{run_id}/saved_model", run_id=run_id, tags=all_tags)
        if alias:
            move_alias(client, name, alias, mv.version)
    return Version(str(mv.version), run_id, all_tags)


def move_alias(client, name: str, alias: str, version: str, tries: int = 3) -> None:
    """Point ``alias`` at ``version``, again if another writer's first setting of it won a race.

    MLflow's store sets an alias by reading its row, then writing it (an insert when there was none):
    two trainings that set a model's first champion at once both insert, and the second breaks the
    table's key (PostgreSQL's UniqueViolation, SQLite's UNIQUE constraint). The row exists then, and
    setting it again is an update: the last writer's version, as for any alias moved twice.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(tries):
        try:
            return client.set_registered_model_alias(name, alias, version)
        except MlflowException as exc:
            raced = any(key in str(exc) for key in ("UniqueViolation", "UNIQUE constraint failed", "duplicate key"))
            if not raced or attempt == tries - 1:
                raise


def by_alias(cfg: ExperimentConfig, alias: str) -> Version | None:
    from mlflow.exceptions import MlflowException

    try:
        with _permitted(cfg, f"read the {alias!r} alias"):
            mv = _client(cfg).get_model_version_by_alias(cfg.export.model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None  # no such model or alias yet; any other failure is no "no champion"
        raise
    return Version(str(mv.version), mv.run_id, dict(mv.tags))


def set_alias(cfg: ExperimentConfig, alias: str, version: str, tags: dict | None = None) -> None:
    with _permitted(cfg, f"move the {alias!r} alias"):
        client = _client(cfg)
        for key, value in (tags or {}).items():
            client.set_model_version_tag(cfg.export.model_name, version, key, str(value))
        move_alias(client, cfg.export.model_name, alias, version)


def versions(cfg: ExperimentConfig) -> list[Version]:
    with _permitted(cfg, "list the versions"):
        found = _client(cfg).search_model_versions(f"name = '{cfg.export.model_name}'")
    return sorted((Version(str(v.version), v.run_id, dict(v.tags)) for v in found), key=lambda v: int(v.version))
