"""``tune(cfg)``: a KerasTuner search whose trials are pipeline trainings, each a nested MLflow run.

A search lives in ``<tune.directory>/<name>-<digest of the config>``: KerasTuner's
oracle and trial files (written atomically here, so a kill never leaves a torn
one), each trial's ``result.json`` and final weights, and ``best.yaml``. Running
the same command again continues it: KerasTuner reloads finished trials and
queues the interrupted one again; a trial whose ``result.json`` exists is not
trained twice. Trials run one after another in a worker process, Keras' state
cleared between them, so a trial costs no TensorFlow start-up; since
TensorFlow still leaks part of each traced function, the worker hands over to
a warm spare process before its memory grows past ``tune.max_memory_growth``
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
from keras_tuner.src.engine.oracle import synchronized

from pipeline import track
from pipeline.config import ExperimentConfig
from pipeline.errors import ConfigError
from pipeline.files import write_text
from pipeline.tune import results, space

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


class _Durable:
    """Mixed into a KerasTuner oracle: atomic state files, a wall-clock budget, and releasing a dead worker's trial."""

    deadline: float | None = None

    def save(self):
        _write_json(Path(self._get_oracle_fname()), self.get_state())

    def _save_trial(self, trial):
        _write_json(Path(self._get_trial_dir(trial.trial_id)) / "trial.json", trial.get_state())

    def populate_space(self, trial_id):
        if self.deadline is not None and time.time() > self.deadline:
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        return super().populate_space(trial_id)

    @synchronized
    def release(self, tuner_id: str) -> None:
        """Send the trial of a worker that died back to the queue, so another worker runs it."""
        trial = self.ongoing_trials.pop(tuner_id, None)
        if trial is not None:
            self._retry_queue.append(trial.trial_id)
        self.tuner_ids.discard(tuner_id)
        self.save()


def make_oracle(cfg: ExperimentConfig):
    tune = cfg.tune
    base, kwargs = ORACLES[tune.algorithm](tune, cfg.tune.trial.get("train.epochs", cfg.train.epochs))
    oracle_class = type(f"Durable{base.__name__}", (_Durable, base), {})
    oracle = oracle_class(objective=kt.Objective(*objective(cfg)), seed=cfg.seed if tune.seed is None else tune.seed,
                          max_consecutive_failed_trials=3, **kwargs)
    if tune.time_budget:
        oracle.deadline = time.time() + tune.time_budget
    return oracle


def objective(cfg: ExperimentConfig) -> tuple[str, str]:
    """(metric, direction); accuracy goes up, losses and errors down."""
    metric = cfg.tune.objective.metric
    return metric, cfg.tune.objective.direction or ("max" if "acc" in metric else "min")


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
        cfg = space.apply(self.cfg, space.values_of(hp, self.cfg.tune.space), trial=True)
        train = {"checkpoint": False, "resume": False, "verbose": 0}
        if "tuner/epochs" in hp.values:
            train["epochs"] = int(hp.values["tuner/epochs"])
        return cfg.model_copy(update={"seed": cfg.seed + execution, "train": cfg.train.model_copy(update=train)})

    def inputs(self, cfg: ExperimentConfig):
        """(Splits, task) for ``cfg``, loaded once per data-relevant config."""
        from pipeline.data import dataset
        from pipeline.data.augment import build_augmenter
        from pipeline.tasks import task_for
        from pipeline.train.loop import _seed

        key = json.dumps([cfg.seed, cfg.data.model_dump(mode="json"), cfg.features.model_dump(mode="json"),
                          cfg.augment.model_dump(mode="json")], sort_keys=True)
        if key not in self._inputs:
            _seed(cfg)  # tf.data's shuffle seeds combine with the global seed
            in_dataset = cfg.augment.placement == "dataset"
            augmenter = build_augmenter(cfg.augment, cfg.seed) if in_dataset else None
            data = dataset.load(cfg, augmenter=augmenter, replicas=self.strategy.num_replicas_in_sync)
            self._inputs[key] = (data, task_for(cfg, data.spec))
        return self._inputs[key]

    def build(self, hp, execution: int = 0):
        from pipeline.data.augment import build_augmenter
        from pipeline.train.loop import _seed, build_compiled

        cfg = self.config(hp, execution)
        data, task = self.inputs(cfg)
        _seed(cfg)
        in_model = build_augmenter(cfg.augment, cfg.seed) if cfg.augment.placement == "model" else None
        return build_compiled(cfg, data, task, self.strategy, in_model)

    def fit(self, hp, model, *args, callbacks=(), initial_epoch: int = 0, execution: int = 0, **kwargs):
        from pipeline.train.callbacks import build_callbacks

        cfg = self.config(hp, execution)
        data, _ = self.inputs(cfg)
        return model.fit(
            data.train, validation_data=data.validation, epochs=cfg.train.epochs, initial_epoch=initial_epoch,
            steps_per_epoch=data.steps_per_epoch, callbacks=[*build_callbacks(cfg, Path(".")), *callbacks],
            verbose=0, shuffle=False,
        )


class PipelineTuner(kt.Tuner):
    """Runs each trial as a tracked pipeline training; the oracle decides what to try next."""

    def __init__(self, cfg: ExperimentConfig, folder: Path, hypermodel: ConfigHyperModel, oracle, parent_run_id: str | None):
        self.cfg, self.parent_run_id = cfg, parent_run_id
        self.metric, self.direction = objective(cfg)
        self.memory = Memory(cfg.tune.max_memory_growth if _recycles() else None, _baseline(folder))
        super().__init__(oracle=oracle, hypermodel=hypermodel, directory=str(folder.parent),
                         project_name=folder.name, executions_per_trial=cfg.tune.executions_per_trial)

    def _populate_initial_space(self):
        # KerasTuner builds the model repeatedly here to discover conditional parameters;
        # the space is declared in the config, so declaring it once is enough.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.memory.should_recycle():
            from pipeline.tune.distributed import EXIT_RECYCLE

            print(f"worker {self.tuner_id}: RSS {self.memory.last:.0f} MB after {len(self.memory.seen)} trials "
                  f"(first {self.memory.seen[0]:.0f} MB); handing over to a fresh process", flush=True)
            sys.stderr.flush()
            os._exit(EXIT_RECYCLE)  # everything is saved; skip TensorFlow's slow teardown so the spare starts now

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        _write_json(Path(self._get_tuner_fname()), self.get_state())

    def run_trial(self, trial, *args, **kwargs):
        import keras

        folder = Path(self.get_trial_dir(trial.trial_id))
        done = _read_json(folder / "result.json")
        if done is not None:  # trained and tracked before an interruption; only the oracle missed it
            return {self.metric: done["score"]}
        hp, started = trial.hyperparameters, time.perf_counter()
        values = space.values_of(hp, self.cfg.tune.space)
        cfg = self.hypermodel.config(hp)
        tags = {"mlflow.parentRunId": self.parent_run_id, "tune.search": folder.parent.name,
                "tune.role": "trial", "tune.trial_id": trial.trial_id}
        try:
            score, epochs, seconds = self._train(trial, folder, cfg, values, started, tags)
        except Exception:
            keras.backend.clear_session(free_memory=True)  # a failed trial's model must not stay behind either
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
                if "tuner/trial_id" in hp.values:  # Hyperband: continue the model of the previous round
                    model.optimizer.build(model.trainable_variables)  # its state is in the file too
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
            _save_weights(model, folder / "final.weights.h5")
            run.log_metrics({"score": score, "epochs_run": epochs, "fit_seconds": fit_seconds})
            del model
            keras.backend.clear_session(free_memory=True)  # collects garbage too
            self.memory.record(_rss_mb())
            seconds = time.perf_counter() - started
            _write_json(folder / "result.json", {  # last: a trial with a result.json is never trained again
                "run_id": run.id, "score": score, "epochs": epochs, "fit_seconds": round(fit_seconds, 4),
                "seconds": round(seconds, 4), "ended": time.time(), "rss_mb": self.memory.last, "values": values,
            })
        return score, epochs, seconds


class Memory:
    """When a worker should hand over to a fresh process.

    TensorFlow keeps part of every traced function alive after ``clear_session``
    (tensorflow#61791, keras#21090; here about 14 MB per digits trial), so RSS
    grows with every trial however the state is cleared. A worker process
    therefore stops when its next trial would take its RSS past ``1 + growth``
    times the RSS after the search's first trial (``baseline``, or its own
    first); a spare worker, started in advance, takes over at once.
    """

    def __init__(self, growth: float | None, baseline: float | None = None):
        self.growth, self.seen, self.baseline = growth, [], baseline

    @property
    def last(self) -> float:
        return self.seen[-1]

    def record(self, rss_mb: float) -> None:
        self.seen.append(rss_mb)

    def should_recycle(self) -> bool:
        if self.growth is None or len(self.seen) < 2:
            return False
        recent = self.seen[-4:]
        step = max(max(b - a for a, b in zip(recent, recent[1:])), 0.0)  # the largest recent step
        first = min(self.seen[0], self.baseline or self.seen[0])
        return self.seen[-1] + step > first * (1 + self.growth)


def _baseline(folder: Path) -> float | None:
    """The smallest RSS after a trial so far in this search (result.json files), if any."""
    seen = [(_read_json(f) or {}).get("rss_mb") for f in folder.glob("trial_*/result.json")]
    return min((r for r in seen if r), default=None)


def _recycles() -> bool:
    from pipeline.tune.distributed import is_worker

    return is_worker() and os.environ.get("PIPELINE_TUNE_RECYCLE") == "1"


# ---- the search ---------------------------------------------------------------


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


def tune(cfg: ExperimentConfig, workers: int = 0, log_dir: Path | None = None, command: list[str] = (),
         run_tags: dict | None = None) -> results.Outcome | None:
    """Run (or continue) the search ``cfg.tune`` describes; return its outcome (None in a worker process).

    Args:
        workers: Start this many local worker processes and serve the oracle to them (chief).
        command: The ``pipeline tune ...`` argv the workers run.
        run_tags: Extra tags of the search's parent run (a study nests searches this way).
    """
    from pipeline.train.loop import _deterministic_ops
    from pipeline.train.strategy import describe, make_strategy
    from pipeline.tune import distributed

    search = Search.of(cfg)
    strategy = make_strategy(cfg.train)
    _deterministic_ops(cfg)
    hypermodel = ConfigHyperModel(cfg, strategy)
    if distributed.is_worker():
        distributed.die_with_parent()
        distributed.quiet_keras_tuner()
        parent = _find_parent(cfg, search)
        hypermodel.inputs(space.apply(cfg, {}, trial=True))  # warm: data read before the first trial
        tuner = PipelineTuner(cfg, search.folder, hypermodel, make_oracle(cfg), parent)
        distributed.wait_for_turn()  # a spare worker starts when the one it replaces hands over
        tuner.search(verbose=0)
        return None

    base = space.apply(cfg, {}, trial=True)
    data, task = hypermodel.inputs(base)  # fails early on bad data; primes the cache for the first trial
    _check_objective(cfg, task)
    parent_file = search.folder / "parent_run.json"
    previous = (_read_json(parent_file) or {}).get("run_id")
    tags = {**(run_tags or {}), "tune.search": search.folder.name, "tune.role": "parent",
            "tune.algorithm": cfg.tune.algorithm}
    with track.start_run(cfg, run_name=f"tune-{cfg.tune.algorithm}", tags=tags, resume_id=previous) as parent:
        if parent.id != previous:
            parent.log_setup(cfg, data.spec, describe(strategy))
            parent.log_text(cfg.to_yaml(), "search_config.yaml")
            search.folder.mkdir(parents=True, exist_ok=True)
            _write_json(parent_file, {"run_id": parent.id})
        else:
            print(f"Continuing search {search.folder}", file=sys.stderr)
        _settle_interrupted(parent, search)
        tuner = PipelineTuner(cfg, search.folder, hypermodel, make_oracle(cfg), parent.id if parent.tracked else None)
        tuner.oracle.verbose = 0  # each trial prints one line of its own
        if workers or distributed.is_chief():
            distributed.serve(tuner.oracle, workers, list(command), log_dir or search.folder / "workers",
                              on_release=lambda trial_id: _settle_interrupted(parent, search, trial_id))
        else:
            tuner.search(verbose=0)
        oracle = tuner.oracle
        trials = [_trial_row(search, trial, cfg) for trial in oracle.trials.values()]
        best = oracle.get_best_trials(1)
        best_values = space.values_of(best[0].hyperparameters, cfg.tune.space) if best else None
        return results.summarize(cfg, search.folder, trials, best_values, objective(cfg), parent)


def _trial_row(search: Search, trial, cfg: ExperimentConfig) -> dict:
    result = _read_json(search.folder / f"trial_{trial.trial_id}" / "result.json") or {}
    return {"trial": trial.trial_id, "status": trial.status, "score": trial.score,
            **{k: result.get(k) for k in ("epochs", "seconds", "fit_seconds", "ended", "rss_mb", "run_id")},
            **space.values_of(trial.hyperparameters, cfg.tune.space)}


def _check_objective(cfg: ExperimentConfig, task) -> None:
    names = ["loss", *(m if isinstance(m, str) else m.name for m in task.metrics())]
    allowed = names + [f"val_{n}" for n in names]
    if objective(cfg)[0] not in allowed:
        raise ConfigError(f"Invalid `tune.objective.metric`: {objective(cfg)[0]!r} is not logged by the "
                          f"{task.name} task; choose one of {', '.join(allowed)}")


def _settle_interrupted(parent, search: Search, trial_id: str | None = None) -> None:
    """Trial runs left RUNNING by a kill: FINISHED if their result was saved, else KILLED (the trial reruns).

    Args:
        trial_id: Only this trial's runs (a worker died); default every trial's.
    """
    if not parent.tracked:
        return
    only = f" and tags.`tune.trial_id` = '{trial_id}'" if trial_id is not None else ""
    runs = parent.client.search_runs(
        [parent.client.get_run(parent.id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.id}' and attributes.status = 'RUNNING'{only}")
    for run in runs:
        trial_id = run.data.tags.get("tune.trial_id")
        result = _read_json(search.folder / f"trial_{trial_id}" / "result.json") or {}
        parent.client.set_terminated(run.info.run_id, "FINISHED" if result.get("run_id") == run.info.run_id else "KILLED")


def _find_parent(cfg: ExperimentConfig, search: Search, wait: float = 60.0) -> str | None:
    """A worker's parent run: the chief's, found by the search's tag (works across machines sharing the store)."""
    if not cfg.tracking.enabled:
        return None
    from pipeline.track.mlflow import _client

    client, experiment_id = _client(cfg)
    deadline = time.time() + wait
    while time.time() < deadline:
        runs = client.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                                  filter_string=f"tags.`tune.search` = '{search.folder.name}' and "
                                                "tags.`tune.role` = 'parent' and attributes.status = 'RUNNING'")
        if runs:
            return runs[0].info.run_id
        time.sleep(1)
    raise ConfigError(f"No running parent run of search {search.folder.name} in {cfg.tracking.uri}: "
                      "start the chief first, with the same config")


# ---- files --------------------------------------------------------------------


def _write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, default=str))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _save_weights(model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.weights.h5")
    model.save_weights(tmp)
    os.replace(tmp, path)


def _rss_mb() -> float:
    """Resident memory of this process (Linux), for the memory-growth figure."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)

