"""``tune(cfg)``: a KerasTuner search whose trials are pipeline trainings, each a nested MLflow run.

A search lives in ``<tune.directory>/<name>-<digest of the config>``: KerasTuner's
oracle and trial files (written atomically here, so a kill never leaves a torn
one), each trial's ``result.json`` and final weights, and ``best.yaml``. Running
the same command again continues it: KerasTuner reloads finished trials and
queues the interrupted one again; a trial whose ``result.json`` exists is not
trained twice. Trials run one after another in a worker process, Keras' state
cleared between them, so a trial costs no TensorFlow start-up; since
TensorFlow still leaks part of each traced function, the worker hands over to
a spare process, warmed up on its notice, before its memory grows past ``tune.max_memory_growth``
(``Memory``; distributed.py runs the workers).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras_tuner as kt

from pipeline import runtime, track
from pipeline.config import ExperimentConfig
from pipeline.config.search_space import apply
from pipeline.errors import disk_full
from pipeline.files import read_json, save_weights, write_json
from pipeline.tune import distributed, results, space
from pipeline.tune.keras_tuner_compat import ConfigSpaceTuner, durable

# ---- oracles ------------------------------------------------------------------


def _random(tune, epochs):
    return kt.oracles.RandomSearchOracle, {"max_trials": tune.max_trials}


def _grid(tune, epochs):
    return kt.oracles.GridSearchOracle, {"max_trials": tune.max_trials}


def _bayesian(tune, epochs):
    return kt.oracles.BayesianOptimizationOracle, {"max_trials": tune.max_trials}


def _hyperband(tune, epochs):
    return kt.oracles.HyperbandOracle, {"max_epochs": tune.max_epochs or epochs, "factor": tune.factor,
                                        "hyperband_iterations": tune.hyperband_iterations}


ORACLES = {"random": _random, "grid": _grid, "bayesian": _bayesian, "hyperband": _hyperband}


def make_oracle(cfg: ExperimentConfig):
    tune = cfg.tune
    base, kwargs = ORACLES[tune.algorithm](tune, cfg.tune.trial.get("train.epochs", cfg.train.epochs))
    oracle_class = durable(base)
    oracle = oracle_class(objective=kt.Objective(*objective(cfg)), seed=cfg.seed if tune.seed is None else tune.seed,
                          max_consecutive_failed_trials=3, **kwargs)
    if tune.time_budget:
        oracle.deadline = time.time() + tune.time_budget
    return oracle


def objective(cfg: ExperimentConfig) -> tuple[str, str]:
    """(metric, direction): the config's direction, or the one the task gives the metric."""
    from pipeline.tasks import direction

    metric, chosen = cfg.tune.objective.metric, cfg.tune.objective.direction
    return metric, direction(metric) if chosen == "auto" else chosen


# ---- hypermodel and tuner -----------------------------------------------------


class ConfigHyperModel(kt.HyperModel):
    """A trial's values -> the experiment config -> the pipeline's own data, model registry and fit.

    Datasets are kept per data-relevant config (batch size, augmentation, seed), so
    trials that share them do not read and prepare the data again.
    """

    def __init__(self, cfg: ExperimentConfig, strategy):
        super().__init__(name=cfg.name)
        self.cfg, self.strategy = cfg, strategy
        self._inputs: dict[str, tuple] = {}

    def declare_hyperparameters(self, hp):
        space.declare(hp, self.cfg.tune.space)

    def config(self, hp, execution: int = 0) -> ExperimentConfig:
        """The trial's config: base + ``tune.trial`` + values; epochs from Hyperband; no checkpoints."""
        cfg = apply(self.cfg, space.values_of(hp, self.cfg.tune.space), trial=True)
        train = {"checkpoint": False, "resume": False, "verbose": 0}
        if "tuner/epochs" in hp.values:
            train["epochs"] = int(hp.values["tuner/epochs"])
        return cfg.model_copy(update={"seed": cfg.seed + execution, "train": cfg.train.model_copy(update=train)})

    def inputs(self, cfg: ExperimentConfig):
        """(Splits, task) for ``cfg``, loaded once per data-relevant config."""
        from pipeline.data import dataset
        from pipeline.data.augment import build_augmenter
        from pipeline.tasks import task_for
        key = json.dumps([cfg.seed, cfg.data.model_dump(mode="json"), cfg.features.model_dump(mode="json"),
                          cfg.augment.model_dump(mode="json")], sort_keys=True)
        if key not in self._inputs:
            runtime.seed(cfg)  # tf.data's shuffle seeds combine with the global seed
            in_dataset = cfg.augment.placement == "dataset"
            augmenter = build_augmenter(cfg.augment, cfg.seed) if in_dataset else None
            data = dataset.load(cfg, augmenter=augmenter, replicas=self.strategy.num_replicas_in_sync)
            self._inputs[key] = (data, task_for(cfg, data.spec))
        return self._inputs[key]

    def build(self, hp, execution: int = 0):
        from pipeline.data.augment import build_augmenter
        from pipeline.train.loop import build_compiled

        cfg = self.config(hp, execution)
        data, task = self.inputs(cfg)
        runtime.seed(cfg)
        in_model = build_augmenter(cfg.augment, cfg.seed) if cfg.augment.placement == "model" else None
        return build_compiled(cfg, data, task, self.strategy, in_model)

    def fit(self, hp, model, *args, callbacks=(), initial_epoch: int = 0, execution: int = 0, **kwargs):
        """Fit as a training run does (Keras' fit, or the custom loop where fit fails); return the History."""
        import keras

        from pipeline.train import loop
        from pipeline.train.callbacks import build_callbacks

        cfg = self.config(hp, execution)
        data, task = self.inputs(cfg)
        history = keras.callbacks.History()
        loop.fit(cfg, model, self.strategy, task, data, initial_epoch,
                 callbacks=[*build_callbacks(cfg, Path(".")), *callbacks, history], verbose=0)
        return history


class PipelineTuner(ConfigSpaceTuner):
    """Runs each trial as a tracked pipeline training; the oracle decides what to try next."""

    def __init__(self, cfg: ExperimentConfig, folder: Path, hypermodel: ConfigHyperModel, oracle, parent_run_id: str | None):
        self.cfg, self.parent_run_id = cfg, parent_run_id
        self.metric, self.direction = objective(cfg)
        self.memory = Memory(cfg.tune.max_memory_growth if _recycles() else None, _baseline(folder))
        super().__init__(oracle=oracle, hypermodel=hypermodel, directory=str(folder.parent),
                         project_name=folder.name, executions_per_trial=cfg.tune.executions_per_trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.memory.nearly_full():
            distributed.give_notice()
        if self.memory.should_recycle():
            print(f"worker {self.tuner_id}: RSS {self.memory.last:.0f} MB after {len(self.memory.seen)} trials "
                  f"(first {self.memory.seen[0]:.0f} MB); handing over to a fresh process", flush=True)
            sys.stderr.flush()
            os._exit(distributed.EXIT_RECYCLE)  # everything is saved; skip TensorFlow's slow teardown so the spare starts now

    def run_trial(self, trial, *args, **kwargs):
        import keras

        folder = Path(self.get_trial_dir(trial.trial_id))
        done = read_json(folder / "result.json")
        if done is not None:  # trained and tracked before an interruption; only the oracle missed it
            return {self.metric: done["score"]}
        hp, started = trial.hyperparameters, time.perf_counter()
        values = space.values_of(hp, self.cfg.tune.space)
        cfg = self.hypermodel.config(hp)
        tags = {"mlflow.parentRunId": self.parent_run_id, "tune.search": folder.parent.name,
                "tune.role": "trial", "tune.trial_id": trial.trial_id}
        try:
            score, epochs, seconds = self._train(trial, folder, cfg, values, started, tags)
        except Exception as exc:
            keras.backend.clear_session(free_memory=True)  # a failed trial's model must not stay behind either
            if disk_full(exc) is not None:  # no fault of the trial's values: every trial would fail alike
                raise kt.errors.FatalError("a write found no room: the search stops") from exc
            raise
        shown = " ".join(f"{k}={results.fmt(v)}" for k, v in values.items())
        print(f"trial {trial.trial_id}: {self.metric}={score:.4f} ({epochs} epochs, {seconds:.1f} s) {shown}",
              flush=True)
        return {self.metric: score}

    def _train(self, trial, folder: Path, cfg: ExperimentConfig, values: dict, started: float, tags: dict):
        """Train the trial's executions in one tracked run; return (score, epochs, seconds)."""
        import keras

        hp = trial.hyperparameters
        with track.start_run(cfg, run_name=f"trial-{trial.trial_id}",
                             tags={k: v for k, v in tags.items() if v is not None}) as run:
            schedule = {k: v for k, v in hp.values.items() if k.startswith("tuner/")}
            run.log_params({**values, **schedule})
            scores, fit_seconds, epochs = [], 0.0, 0
            for execution in range(self.executions_per_trial):
                model = self.hypermodel.build(hp, execution)
                if "tuner/trial_id" in hp.values:  # Hyperband: continue the model (and optimizer) of the previous round
                    model.load_weights(Path(self.get_trial_dir(hp.values["tuner/trial_id"])) / "final.weights.h5")
                prefix = f"execution_{execution}." if execution else ""
                t0 = time.perf_counter()
                history = self.hypermodel.fit(hp, model, callbacks=[track.epoch_logger(run, prefix)],
                                              initial_epoch=int(hp.values.get("tuner/initial_epoch", 0)),
                                              execution=execution)
                fit_seconds += time.perf_counter() - t0
                curve = history.history[self.metric]  # the chief checked that the task logs it
                scores.append(max(curve) if self.direction == "max" else min(curve))
                epochs += len(curve)
            score = statistics.fmean(scores)
            save_weights(model, folder / "final.weights.h5")
            run.log_metrics({"score": score, "epochs_run": epochs, "fit_seconds": fit_seconds})
            del model
            keras.backend.clear_session(free_memory=True)  # collects garbage too
            self.memory.record(_rss_mb())
            seconds = time.perf_counter() - started
            write_json(folder / "result.json", {  # last: a trial with a result.json is never trained again
                "run_id": run.id, "score": score, "epochs": epochs, "fit_seconds": round(fit_seconds, 4),
                "seconds": round(seconds, 4), "ended": time.time(), "rss_mb": self.memory.last, "values": values,
            })
        return score, epochs, seconds


class Memory:
    """When a worker should hand over to a fresh process.

    TensorFlow keeps part of every traced function alive after ``clear_session``
    (tensorflow#61791, keras#21090; bench/README.md has the figure), so RSS
    grows with every trial however the state is cleared. A worker process
    therefore stops when its next trial would take its RSS past ``1 + growth``
    times the RSS after the search's first trial (``baseline``, or its own
    first). A trial earlier it gives notice, so that a spare worker is warm
    and takes over at once.
    """

    def __init__(self, growth: float | None, baseline: float | None = None):
        self.growth, self.seen, self.baseline = growth, [], baseline

    @property
    def last(self) -> float:
        return self.seen[-1]

    def record(self, rss_mb: float) -> None:
        self.seen.append(rss_mb)

    def should_recycle(self) -> bool:
        return self._passes_limit(trials=1)

    def nearly_full(self) -> bool:
        """Whether the trial after next would pass the limit: time to warm a spare up."""
        return self._passes_limit(trials=2)

    def _passes_limit(self, trials: int) -> bool:
        if self.growth is None or len(self.seen) < 2:
            return False
        recent = self.seen[-4:]
        step = max(max(b - a for a, b in zip(recent, recent[1:])), 0.0)  # the largest recent step
        first = min(self.seen[0], self.baseline or self.seen[0])
        return self.seen[-1] + trials * step > first * (1 + self.growth)


def _baseline(folder: Path) -> float | None:
    """The smallest RSS after a trial so far in this search (result.json files), if any."""
    seen = [(read_json(f) or {}).get("rss_mb") for f in folder.glob("trial_*/result.json")]
    return min((r for r in seen if r), default=None)


def _recycles() -> bool:
    return distributed.is_worker() and os.environ.get("PIPELINE_TUNE_RECYCLE") == "1"


# ---- the search's identity ----------------------------------------------------


@dataclass
class Search:
    """One search's identity and folder."""

    cfg: ExperimentConfig
    folder: Path

    @classmethod
    def of(cls, cfg: ExperimentConfig) -> Search:
        return cls(cfg, Path(cfg.tune.directory) / search_id(cfg))


def search_id(cfg: ExperimentConfig) -> str:
    """<name>-<digest of everything that defines the search>: the same command continues the same search."""
    raw = cfg.model_dump(mode="json", exclude={"tracking", "export"})
    raw["tune"].pop("time_budget")
    raw["train"].pop("verbose")
    return f"{cfg.name}-{hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:10]}"


# ---- files --------------------------------------------------------------------


def _rss_mb() -> float:
    """Resident memory of this process (Linux), for the memory-growth figure."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)

