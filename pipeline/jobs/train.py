"""``train(cfg)``: the experiment as one readable recipe.

strategy -> data -> tracked run -> model -> baselines -> fit -> evaluate -> log -> diagnose -> export -> register.
Everything that can be rejected without a run (config, dataset, feature keys)
is rejected before the MLflow run opens, so a bad input leaves no run behind.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import ExperimentConfig


@dataclass
class TrainResult:
    """What a training run produced."""

    run_id: str
    run_dir: Path
    test_metrics: dict[str, float]
    best_epoch: int | None
    epochs_run: int
    history: dict[str, list[float]]
    model: object = None
    export_path: Path | None = None
    checks: dict[str, float] = field(default_factory=dict)
    diagnosis: object = None  # pipeline.diagnose.Diagnosis
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: data, setup, baselines, fit, evaluate, log, export
    spooled: Path | None = None  # tracking the server never took: `pipeline sync` delivers it (track/spool.py)


def train(cfg: ExperimentConfig, callbacks: list = (), alias: str | None = "champion",
          run_tags: dict | None = None) -> TrainResult:
    """Train, evaluate, track and export the experiment ``cfg`` describes.

    Args:
        cfg: The validated experiment config.
        callbacks: Extra Keras callbacks, run after the pipeline's own; default none.
        alias: Registry alias moved to the export's model version: ``champion`` (it serves, being the
            newest export), ``challenger`` (retraining stages it), or None. Default ``champion``.
        run_tags: Extra tags of the MLflow run (e.g. a parent run); default none.
    """
    from pipeline import baselines, models, runtime, track
    from pipeline.data import dataset, stats
    from pipeline.data.augment import build_augmenter
    from pipeline.models import codes, family
    from pipeline.tasks import task_for
    from pipeline.train import cluster, loop, resume
    from pipeline.train.callbacks import build_callbacks
    from pipeline.train.strategy import describe, make_strategy

    clock = _Clock()
    strategy = make_strategy(cfg.train)
    runtime.determinism(cfg)
    runtime.seed(cfg)  # before the data: tf.data's shuffle seeds combine with TensorFlow's global seed
    augmenter = build_augmenter(cfg.augment, cfg.seed)
    in_model = cfg.augment.placement == "model"
    previous = resume.peek(cfg) if cfg.train.resume else resume.State()
    data = dataset.load(cfg, augmenter=None if in_model else augmenter, start_epoch=previous.epoch,
                        replicas=strategy.num_replicas_in_sync)
    if data.spec.skipped:
        print(f"warning: {data.spec.skipped} bad rows or files of {cfg.data.path or data.spec.name} were skipped "
              "(data.on_bad_input: skip); the count is logged as data.skipped", file=sys.stderr)
    task = task_for(cfg, data.spec)
    notes = stats.input_names(data.spec) + (data.series.notes() if cfg.forecast else stats.column_notes(
        data, task.label_values(data.train_columns[data.spec.label])))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    models.check(cfg)
    clock.lap("data")

    chief = cluster.is_chief()
    run_cfg = cfg if chief else _untracked(cfg)
    with track.start_run(run_cfg, tags=run_tags, resume_id=previous.run_id, resume_epoch=previous.epoch) as run:
        run.log_setup(cfg, data.spec, {**describe(strategy), "global_batch": data.global_batch,
                                       "precision": cfg.train.precision})
        runtime.seed(cfg)  # again: data preparation and tracking drew from the global RNGs
        model = loop.build_compiled(cfg, data, task, strategy, augmenter if in_model else None)
        for note in codes.notes(model.feature_info):
            print(f"note: {note}", file=sys.stderr)
            notes.append(note)
        if notes:
            run.log_text("".join(f"{note}\n" for note in notes), "data_notes.txt")
        own = build_callbacks(cfg, run.dir)
        resume.restore(model, previous, augmenter)
        saver = resume.checkpointer(cfg, run.id, previous, own, write=cfg.train.resume and chief, augmenter=augmenter)
        if previous.epoch:
            print(f"Resuming {cfg.name} after epoch {previous.epoch} from {previous.path}", file=sys.stderr)
            track.log_missing_epochs(run, previous.history)
            run.set_tags({"resumed_after_epoch": previous.epoch})
        clock.lap("setup")
        bars = baselines.fit(data, cfg, task)  # the classical models to beat, before the feed's caches fill
        clock.lap("baselines")

        loop.fit(cfg, model, strategy, task, data, previous.epoch,
                 [*own, saver, track.epoch_logger(run), *callbacks], verbose=cfg.train.verbose if chief else 0)
        history = saver.history  # every epoch, including those before a resume
        clock.lap("fit")

        best_epoch = loop.best_epoch(own)
        test = loop.evaluate(cfg, model, strategy, task, data.test)
        extras = family(cfg.model.name, data.spec)
        signatures = extras.serving_signatures(model, cfg, data.spec, data.train_columns, task)
        test.update(extras.evaluate(signatures, model, data, cfg))  # the family's own figures: ranking, a forecast's skill
        clock.lap("evaluate")
        test.update(bars.against(model, data, task))
        clock.lap("baselines")

        diagnosis = _log_outcome(cfg, run, model, data, task, history, best_epoch, test)
        clock.lap("log")

        export_path, checks = None, {}
        if cfg.export.enabled and chief:
            export_path, checks = _export(cfg, run, model, data, test, signatures, alias)
            clock.lap("export")
        run.log_metrics({f"seconds_{stage}": round(s, 3) for stage, s in clock.laps.items()})
        if chief:
            resume.finish(cfg)
    return TrainResult(run.id, run.dir, test, best_epoch, len(history["loss"]), history, model, export_path, checks,
                       diagnosis, clock.laps, run.courier.spool.path if run.courier.pending else None)


def _untracked(cfg: ExperimentConfig) -> ExperimentConfig:
    """A worker other than the chief tracks nothing and keeps its files (Keras requires some) in a
    temporary folder, removed when its process ends: a nightly multi-worker job leaves nothing behind."""
    from pipeline.files import process_folder

    return cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"enabled": False}),
                                  "workdir": str(process_folder("worker-"))})


def _log_outcome(cfg, run, model, data, task, history: dict, best_epoch: int | None, test: dict):
    """Test metrics, features, data statistics, learning curves and the fit diagnosis; returns the diagnosis."""
    from pipeline.data import stats
    from pipeline.diagnose import diagnose_run
    from pipeline.track import plots

    run.log_metrics({**test, "epochs_run": len(history["loss"]), **({"best_epoch": best_epoch} if best_epoch else {})})
    run.log_text(json.dumps(model.feature_info, indent=2, default=str), "features.json")
    if run.tracked:  # what retraining checks new data against
        run.log_text(json.dumps(stats.statistics(data, task.label_scale), indent=1), "data_stats.json")
    run.log_file(plots.learning_curves(history, best_epoch, run.dir / "learning_curves.png"), "plots")
    diagnosis = diagnose_run(cfg, history, task, data, test)
    if diagnosis is not None:
        run.set_tags(diagnosis.tags())
        run.log_text(diagnosis.to_json(), "diagnosis.json")
        run.log_text(diagnosis.markdown(), "diagnosis.md")
    return diagnosis


def _export(cfg, run, model, data, test: dict, signatures: dict, alias: str | None) -> tuple[Path, dict]:
    """Export and verify the model, log it, and register it as a model version carrying ``alias``."""
    from pipeline.export import export

    spec = data.spec
    meta = {"run_id": run.id, "data": {"name": spec.name, "version": spec.version, "digest": spec.digest},
            "test_metrics": test}
    export_path, checks = export(model, cfg, spec, data.test, metadata=meta, signatures=signatures)
    run.log_metrics(checks)
    run.set_tags({"export.path": str(export_path.resolve()), "export.version": export_path.name})
    run.log_dir(export_path, "saved_model")
    run.register(export_path, alias, tags={"data.name": spec.name, "data.version": spec.version,
                                           "data.digest": spec.digest, **{k: round(v, 6) for k, v in test.items()}})
    return export_path, checks


class _Clock:
    """Seconds per stage of a run, logged as ``seconds_<stage>`` metrics (where does the time go?); a stage
    lapped twice (the baselines: fitted before the model trains, compared with it after) adds up."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = self.laps.get(stage, 0.0) + now - self._last
        self._last = now
