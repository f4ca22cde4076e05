"""``pipeline retrain CONFIG``: the nightly job that replaces the serving model only with a better one.

    lock -> check the data against the champion's -> train a challenger (staged, not served)
    -> evaluate challenger and champion exports on the same test split -> decide
    -> [promote: a fresh server process answers real requests -> publish -> move the alias]

Nothing the server reads changes before the last step, and that step is one
rename (the export root's versions are published atomically), so a crash
anywhere leaves the champion serving. Every decision, with both metrics and
the data report, is an MLflow run; the challenger's training run is nested in it.

Exit codes: 0 done, whether promoted or kept (a kept champion is a successful
night for every scheduler; ``--exit-code-on-kept N`` asks for N instead), 75
another retraining of the same model holds the lock; 1-4 failed (pipeline.errors).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ExperimentConfig
from pipeline.errors import ConfigError, DataError, PipelineError


class Locked(PipelineError):
    exit_code = 75  # EX_TEMPFAIL: try again later


@dataclass
class Decision:
    promoted: bool
    reason: str
    metric: str
    challenger: dict
    champion: dict | None
    run_id: str
    version: str | None = None  # the challenger's registry version
    served: Path | None = None  # its serving folder, when promoted

    def exit_code(self, on_kept: int = 0) -> int:
        """0 when done (promoted, or kept: both are a successful night), or ``on_kept`` for a kept champion."""
        return 0 if self.promoted else on_kept


@contextmanager
def registry_required():
    """A registry that stops answering mid-job ends the job with no decision: never promote blind."""
    from pipeline.track.server import Unreachable

    try:
        yield
    except Unreachable as exc:
        raise Unreachable(f"{exc.message}; no promotion decision was made (the champion keeps serving)") from None


@contextmanager
def lock(cfg: ExperimentConfig):
    """Hold ``<workdir>/locks/retrain-<model>.lock``; a second holder gets ``Locked`` at once.

    An OS lock (flock) is released when its process dies, even by kill -9: no stale lock to clean up.
    """
    path = Path(cfg.workdir) / "locks" / f"retrain-{cfg.export.model_name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise Locked(f"Another retraining of {cfg.export.model_name!r} is running ({holder}); exiting "
                     f"(lock: {path})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    handle.flush()
    try:
        yield
    finally:
        handle.close()


def retrain(cfg: ExperimentConfig) -> Decision:
    """Run the job once (call under ``lock(cfg)``)."""
    from pipeline import track
    from pipeline.data import dataset
    from pipeline.export.evaluate import compare_exports, evaluate_export
    from pipeline.export.saved_model import holds_saved_model
    from pipeline.jobs.train import train
    from pipeline.tasks import task_for
    from pipeline.track import registry
    from pipeline.track.server import Unreachable, public
    from serving.infra_check import infra_validate

    if not (cfg.tracking.enabled and cfg.export.enabled):
        raise ConfigError("retrain needs `tracking.enabled` and `export.enabled`: the registry holds the champion")
    _reconcile(cfg)
    champion = registry.by_alias(cfg, registry.CHAMPION)
    if champion is not None and not holds_saved_model(champion.path):
        raise PipelineError(f"Champion version {champion.version} of {cfg.export.model_name!r} serves from "
                            f"{champion.path}, which holds no SavedModel on this machine: the challenger is compared "
                            "with it there (restore it, or retrain where it serves); nothing was trained")
    data = dataset.load(cfg)
    task = task_for(cfg, data.spec)
    metric = _metric(cfg, task)

    with track.start_run(cfg, run_name="retrain", tags={"pipeline.job": "retrain"}) as run:
        run.log_params({"retrain.metric": metric, "retrain.margin": cfg.retrain.margin,
                        "retrain.confidence": cfg.retrain.confidence,
                        **{f"retrain.threshold.{k}": v for k, v in cfg.retrain.thresholds.items()},
                        "champion.version": champion.version if champion else "none"})
        if champion is not None:
            _check_data(cfg, run, champion, data, task)
        staged = cfg.model_copy(update={"export": cfg.export.model_copy(update={"root": cfg.retrain.staging})})
        result = train(staged, alias=registry.CHALLENGER,
                       run_tags={"mlflow.parentRunId": run.id, "pipeline.role": "challenger"})
        if result.spooled:
            raise Unreachable(f"The tracking server {public(cfg.tracking.uri)} went away while the challenger "
                              f"trained (its run waits in {result.spooled})")
        challenger_version = registry.by_alias(cfg, registry.CHALLENGER).version
        incumbent, share = None, None
        if champion is None:
            challenger = evaluate_export(result.export_path, data, task)
        else:
            challenger, incumbent, share = compare_exports(
                result.export_path, champion.path, data, task, metric, cfg.retrain.margin,
                cfg.forecast.horizon if cfg.forecast else 1, cfg.seed)
        promoted, reason = decide(metric, cfg.retrain.margin, cfg.retrain.thresholds, challenger, incumbent,
                                  share, cfg.retrain.confidence)
        run.log_metrics({**{f"challenger_{k}": v for k, v in challenger.items()},
                         **{f"champion_{k}": v for k, v in (incumbent or {}).items()},
                         **({"challenger_wins_share": share} if share is not None else {})})
        run.set_tags({"decision": "promoted" if promoted else "kept", "decision.reason": reason,
                      "challenger.version": challenger_version})
        decision = Decision(promoted, reason, metric, challenger, incumbent, run.id, challenger_version)
        if promoted:
            infra_validate(result.export_path, data, cfg.retrain.infra_requests)
            from pipeline.export.saved_model import promote

            decision.served = promote(result.export_path, Path(cfg.export.root) / cfg.export.model_name)
            registry.set_alias(cfg, registry.CHAMPION, challenger_version,
                               tags={"serving.path": decision.served.resolve(), "serving.version": decision.served.name})
            run.set_tags({"serving.version": decision.served.name})
        return decision


def decide(metric: str, margin: float, thresholds: dict, challenger: dict, champion: dict | None,
           share: float | None = None, confidence: float = 0.0) -> tuple[bool, str]:
    """Promote when the challenger passes every threshold and beats the champion by more than ``margin``,
    on the test figures and in at least ``confidence`` of the paired resamples (``share``: where it did).

    Directions come from the task's metrics: accuracy must rise, errors fall.
    """
    from pipeline.export.evaluate import RESAMPLES
    from pipeline.tasks import direction

    higher = direction(metric) == "max"
    for name, bar in thresholds.items():
        value = challenger[name]
        ok = value >= bar if direction(name) == "max" else value <= bar
        if not ok:
            return False, f"challenger {name} {value:.4f} misses the threshold {bar:g}"
    if champion is None:
        return True, f"no champion yet; challenger {metric} {challenger[metric]:.4f} passes the thresholds"
    gain = challenger[metric] - champion[metric] if higher else champion[metric] - challenger[metric]
    holds = share is None or not confidence or share >= confidence
    beats = gain > margin and holds
    reason = (f"challenger {metric} {challenger[metric]:.4f} {'beats' if beats else 'does not beat'} champion "
              f"{champion[metric]:.4f} by more than {margin:g} (gain {gain:+.4f}")
    if share is not None and confidence:
        noise = ": a lead within the test split's noise" if gain > margin and not holds else ""
        reason += f"; ahead by that in {share:.0%} of {RESAMPLES} resamples of the test examples, {confidence:.0%} needed{noise}"
    return beats, reason + ")"


def _metric(cfg: ExperimentConfig, task) -> str:
    """The metric champion and challenger are compared on: the config's, else the task's first (log error for a log target)."""
    log = getattr(task, "log", False)
    available = [*task.metric_names, *(["rmse_log"] if log else [])]
    metric = cfg.retrain.metric or available[-1 if log else 0]
    for key, name in [("retrain.metric", metric), *(("retrain.thresholds", name) for name in cfg.retrain.thresholds)]:
        if name not in available:
            raise ConfigError(f"Invalid `{key}`: {name!r} is no metric of a {task.name} task; choose one of "
                              f"{', '.join(available)}")
    return metric


def _check_data(cfg: ExperimentConfig, run, champion, data, task) -> None:
    """Compare the data with the champion's training data; log the report; stop on a broken schema."""
    from pipeline.data import stats

    _check_classes(champion, data)
    reference = _champion_stats(run, champion)
    if reference is None:
        print(f"warning: champion version {champion.version} has no data_stats.json; data not checked",
              file=sys.stderr)
        return
    report = stats.compare(reference, data, cfg.retrain.drift, task.label_scale)
    run.log_text(json.dumps(report.rows, indent=1, default=str), "drift_report.json")
    run.log_text(report.markdown(), "drift_report.md")
    run.set_tags({"data.errors": len(report.errors), "data.warnings": len(report.warnings)})
    for warning in report.warnings:
        print(f"warning: drift: {warning}", file=sys.stderr)
    problems = report.errors or (report.warnings if cfg.retrain.fail_on_drift else [])
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"Data check against champion version {champion.version} failed: {problems[0]}{more}; "
                        f"report: drift_report.md in run {run.id}")


def _check_classes(champion, data) -> None:
    """Stop when the label's classes are not the champion's: its class ids would be scored against other classes."""
    from pipeline.export.saved_model import read_metadata

    contract = read_metadata(champion.path).get("contract", {})
    known, now = contract.get("class_names") or [], data.spec.class_names
    if data.spec.task != "classification" or not known or known == now:
        return
    new, gone = [c for c in now if c not in known], [c for c in known if c not in now]
    changes = [f"{label} {', '.join(names)}" for label, names in (("new:", new), ("gone:", gone)) if names]
    raise DataError(f"The label's classes are not those of champion version {champion.version} "
                    f"({'; '.join(changes) or 'their order changed'}): the two cannot be compared on these data; "
                    "`pipeline train` trains a model of the new classes and makes it the champion")


def _champion_stats(run, champion) -> dict | None:
    from mlflow.exceptions import MlflowException

    from pipeline.track.server import public
    from pipeline.track.spool import answered, unreachable

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp, answered(f"read the champion's data statistics on "
                                                        f"{public(run.cfg.tracking.uri)}"):
        try:
            path = run.client.download_artifacts(champion.run_id, "data_stats.json", tmp)
        except (MlflowException, OSError) as exc:
            if unreachable(exc):  # not "no statistics": unknown
                raise
            return None
        return json.loads(Path(path).read_text())


def _reconcile(cfg: ExperimentConfig) -> None:
    """If a crash fell between publishing a version and moving the alias, point ``champion`` at what serves."""
    from pipeline.export import versions
    from pipeline.export.saved_model import METADATA, read_metadata
    from pipeline.track import registry

    root = Path(cfg.export.root) / cfg.export.model_name
    served = versions(root)
    if not served:
        return
    path = root / str(served[-1])
    try:
        run_id = read_metadata(path).get("run_id")
    except FileNotFoundError:
        run_id = None
    except (ValueError, AttributeError):
        raise DataError(f"The served version's metadata is damaged: {path / METADATA} is not a JSON object (restore "
                        "it from the run's saved_model artifact, or remove the version)") from None
    champion = registry.by_alias(cfg, registry.CHAMPION)
    if run_id is None or (champion is not None and champion.run_id == run_id):
        return
    for version in registry.versions(cfg):
        if version.run_id == run_id:
            print(f"warning: version {served[-1]} serves but the champion alias was not moved to it (an earlier "
                  f"run stopped in between); moving it now", file=sys.stderr)
            registry.set_alias(cfg, registry.CHAMPION, version.version,
                               tags={"serving.path": (root / str(served[-1])).resolve(), "serving.version": served[-1]})
            return
