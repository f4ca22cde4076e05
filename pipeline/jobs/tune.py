"""``tune(cfg)``: a KerasTuner search whose trials are pipeline trainings, each a nested MLflow run.

    search folder -> data (checked once) -> parent run -> [workers | in process] -> best config and summary

A search lives in ``<tune.directory>/<name>-<digest of the config>`` (tune/search.py
says what is in it); running the same command again continues it. Trials that a
kill interrupted are settled here: FINISHED if their result was saved, else
KILLED and run again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pipeline import models, runtime, track
from pipeline.config import ExperimentConfig
from pipeline.config.search_space import apply
from pipeline.errors import ConfigError
from pipeline.files import read_json, write_json
from pipeline.tune import results, space
from pipeline.tune.search import ConfigHyperModel, PipelineTuner, Search, make_oracle, objective


def tune(cfg: ExperimentConfig, workers: int = 0, log_dir: Path | None = None, command: list[str] = (),
         run_tags: dict | None = None) -> results.Outcome | None:
    """Run (or continue) the search ``cfg.tune`` describes; return its outcome (None in a worker process).

    Args:
        workers: Start this many local worker processes and serve the oracle to them (chief).
        command: The ``pipeline tune ...`` argv the workers run.
        run_tags: Extra tags of the search's parent run (a study nests searches this way).
    """
    from pipeline.train.strategy import describe, make_strategy
    from pipeline.tune import distributed
    from pipeline.tune.keras_tuner_compat import quiet_parent_to_proto

    search = Search.of(cfg)
    strategy = make_strategy(cfg.train)
    runtime.determinism(cfg)
    hypermodel = ConfigHyperModel(cfg, strategy)
    if distributed.is_worker():
        distributed.die_with_parent()
        quiet_parent_to_proto()
        parent = _find_parent(cfg, search)
        hypermodel.inputs(apply(cfg, {}, trial=True))  # warm: data read before the first trial
        tuner = PipelineTuner(cfg, search.folder, hypermodel, make_oracle(cfg), parent)
        distributed.wait_for_turn()  # a spare worker starts when the one it replaces hands over
        tuner.search(verbose=0)
        return None

    base = apply(cfg, {}, trial=True)
    data, task = hypermodel.inputs(base)  # fails early on bad data; primes the cache for the first trial
    _check_objective(cfg, task)
    models.check(base)
    parent_file = search.folder / "parent_run.json"
    previous = (read_json(parent_file) or {}).get("run_id")
    tags = {**(run_tags or {}), "tune.search": search.folder.name, "tune.role": "parent",
            "tune.algorithm": cfg.tune.algorithm}
    with track.start_run(cfg, run_name=f"tune-{cfg.tune.algorithm}", tags=tags, resume_id=previous) as parent:
        if parent.id != previous:
            parent.log_setup(cfg, data.spec, describe(strategy))
            parent.log_text(cfg.to_yaml(), "search_config.yaml")
            search.folder.mkdir(parents=True, exist_ok=True)
            write_json(parent_file, {"run_id": parent.id})
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
    result = read_json(search.folder / f"trial_{trial.trial_id}" / "result.json") or {}
    return {"trial": trial.trial_id, "status": trial.status, "score": trial.score,
            **{k: result.get(k) for k in ("epochs", "seconds", "fit_seconds", "ended", "rss_mb", "run_id")},
            **space.values_of(trial.hyperparameters, cfg.tune.space)}


def _check_objective(cfg: ExperimentConfig, task) -> None:
    names = ["loss", *task.metric_names]
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
        result = read_json(search.folder / f"trial_{trial_id}" / "result.json") or {}
        parent.client.set_terminated(run.info.run_id, "FINISHED" if result.get("run_id") == run.info.run_id else "KILLED")


def _find_parent(cfg: ExperimentConfig, search: Search, wait: float = 60.0) -> str | None:
    """A worker's parent run: the chief's, found by the search's tag (works across machines sharing the store)."""
    if not cfg.tracking.enabled:
        return None
    client, experiment_id = track.client(cfg)
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
