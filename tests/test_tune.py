"""Tuning: search spaces in the config, KerasTuner oracles, nested MLflow runs, resume and parallel workers."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.config import load
from pipeline.errors import ConfigError
from pipeline.files import read_json

from .conftest import DIGITS, ROOT, tiny

SPACE = {
    "optimizer.name": ["adam", "momentum"],
    "optimizer.momentum": {"type": "float", "min": 0.8, "max": 0.95, "when": {"optimizer.name": ["momentum"]}},
    "optimizer.learning_rate": {"type": "float", "min": 0.001, "max": 0.01, "sampling": "log"},
    "model.batch_norm": [True, False],
}


def _config(tmp_path: Path, tfds_dir: Path, space=None, **tune) -> Path:
    """configs/digits.yaml shrunk, with a tiny search; written where `pipeline tune` can read it."""
    raw = yaml.safe_load(DIGITS.read_text())
    for item in tiny(tmp_path / "work", tfds_dir, "train.epochs=2"):
        key, _, value = item.partition("=")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    raw["tune"] = {"algorithm": "random", "max_trials": 2, "objective": {"metric": "val_accuracy"},
                   "trial": {}, "space": space or SPACE, **tune}
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _client(workdir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{workdir}/mlflow.db")


def _trial_runs(workdir: Path, parent_id: str):
    client = _client(workdir)
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


# ---- the space is checked before TensorFlow loads -------------------------------------------

BAD_SPACES = {
    "unknown path": ({"optimizer.learning_rat": {"type": "float", "min": 0.1, "max": 1}},
                     "unknown config path `optimizer.learning_rat`; did you mean `optimizer.learning_rate`?"),
    "empty choice": ({"model.dropout": {"type": "choice", "values": []}}, "`values` is empty"),
    "min above max": ({"model.width": {"type": "int", "min": 64, "max": 8}}, "`min` (64) is above `max` (8)"),
    "log of zero": ({"optimizer.learning_rate": {"type": "float", "min": 0, "max": 0.1, "sampling": "log"}},
                    "log sampling needs a positive range"),
    "invalid value": ({"model.dropout": [0.1, 2]}, "value 2 fails the config: Invalid value for `model.dropout`"),
    "fixed field": ({"train.strategy": ["mirrored"]}, "cannot be tuned"),
    "bad condition": ({"optimizer.momentum": {"type": "float", "min": 0.5, "max": 0.9, "when": {"model.width": [8]}}},
                      "`model.width` is not a choice parameter"),
    "unknown type": ({"model.width": {"type": "integer", "min": 1, "max": 2}}, "Expected one of 'choice', 'int', 'float'"),
}


@pytest.mark.parametrize("space, message", BAD_SPACES.values(), ids=BAD_SPACES.keys())
def test_a_bad_search_space_is_one_line_naming_the_parameter(tmp_path, tfds_dir, space, message):
    with pytest.raises(ConfigError) as err:
        load(_config(tmp_path, tfds_dir, space=space))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "tune.space" in str(err.value)


def test_grid_search_needs_a_step_for_float_ranges(tmp_path, tfds_dir):
    with pytest.raises(ConfigError, match="grid search needs a `step`"):
        load(_config(tmp_path, tfds_dir, algorithm="grid"))


def test_the_space_is_validated_without_importing_tensorflow(tmp_path, tfds_dir):
    path = _config(tmp_path, tfds_dir, space={"model.width": {"type": "int", "min": 9, "max": 3}})
    probe = ("import sys\nfrom pipeline.config import load\ntry:\n    load(sys.argv[1])\nexcept Exception as e:\n"
             "    print(type(e).__name__)\nprint('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["ConfigError", "False"], out.stderr


def test_pipeline_train_ignores_the_tune_section(tmp_path, tfds_dir):
    cfg = load(_config(tmp_path, tfds_dir))
    assert cfg.tune.space and not any(k.startswith("tune") for k in cfg.flat())


@pytest.mark.slow
def test_a_full_disk_stops_the_search_at_its_first_trial_instead_of_failing_every_trial(tmp_path, tfds_dir,
                                                                                      monkeypatch):
    """KerasTuner counts a failed trial against its values and goes on to the next: a full disk would fail them all."""
    import errno

    from keras_tuner.errors import FatalError

    from pipeline.errors import disk_full
    from pipeline.jobs.tune import tune
    from pipeline.tune import search

    def full(model, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(search, "save_weights", full)
    path = _config(tmp_path, tfds_dir, max_trials=3)
    with pytest.raises(FatalError) as stopped:
        tune(load(path))
    assert str(disk_full(stopped.value)).startswith("No space left on device writing ") and "trial_0" in str(
        disk_full(stopped.value))
    runs = [r for e in _client(tmp_path / "work").search_experiments()
            for r in _client(tmp_path / "work").search_runs([e.experiment_id])]
    assert sorted((r.data.tags.get("tune.role"), r.info.status) for r in runs) == [("parent", "FAILED"),
                                                                                   ("trial", "FAILED")]


# ---- every algorithm searches end to end, tracked ---------------------------------------------

ALGORITHMS = {
    "random": {},
    "grid": {"space": {"optimizer.learning_rate": [0.002, 0.01]}},
    "bayesian": {},
    "hyperband": {"max_epochs": 2, "factor": 2, "space": {"optimizer.learning_rate": [0.002, 0.01]}},
}


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_runs_tracked_trials_and_writes_a_best_config(tmp_path, tfds_dir, algorithm):
    from pipeline.jobs.tune import tune

    options = dict(ALGORITHMS[algorithm])
    cfg = load(_config(tmp_path, tfds_dir, space=options.pop("space", None), algorithm=algorithm, **options))
    outcome = tune(cfg)

    finished = [t for t in outcome.trials if t["status"] == "COMPLETED"]
    assert len(finished) == len(outcome.trials) >= 2
    assert all(0.0 <= t["score"] <= 1.0 for t in finished)
    assert outcome.best_score == max(t["score"] for t in finished)
    best = load(outcome.best_config)  # `pipeline train` reads it unchanged
    assert best.tune is None and best.train.epochs == 2
    for path, value in outcome.best_values.items():
        assert best.flat()[path] == value

    client, workdir = _client(Path(cfg.workdir)), Path(cfg.workdir)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["tune.algorithm"] == algorithm
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(outcome.best_score)
    assert {f"best.{k}" for k in outcome.best_values} <= set(parent.data.tags)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"trials.csv", "best.yaml", "config.yaml"} <= artifacts
    assert plots == {"plots/objective_by_trial.png", "plots/objective_by_parameter.png"}
    rows = list(csv.DictReader(open(outcome.folder / "trials.csv")))
    assert len(rows) == len(outcome.trials)

    runs = _trial_runs(workdir, outcome.parent_run_id)
    assert len(runs) == len(outcome.trials)
    for run in runs:
        trial = next(t for t in outcome.trials if t["trial"] == run.data.tags["tune.trial_id"])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["score"] == pytest.approx(trial["score"])
        assert run.data.params["optimizer.learning_rate"] == str(trial["optimizer.learning_rate"])
        epochs = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert len(epochs) == trial["epochs"] >= 1
    if algorithm == "random":  # the conditional parameter is set only when its condition holds
        for t in outcome.trials:
            assert (t.get("optimizer.momentum") is not None) == (t["optimizer.name"] == "momentum"), t
    if algorithm == "grid":  # the best config retrains as an ordinary run, and its report shows the search
        from pipeline.jobs.train import train
        from pipeline.report import report

        result = train(best, run_tags={"tune.parent_run": outcome.parent_run_id})  # as --then-train does
        assert result.export_path.is_dir() and result.test_metrics["test_accuracy"] > 0
        page = report(result.run_id, cfg.tracking.uri, tmp_path / "report.html").read_text()
        tuning = page.split('<section id="tuning">')[1].split("</section>")[0]
        assert outcome.parent_run_id in tuning and 'alt="plots/objective_by_trial.png"' in tuning


# ---- resume and parallel workers (subprocesses) ---------------------------------------------


def _wait_for(predicate, timeout: float, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := predicate():
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited early with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_a_killed_search_continues_without_repeating_finished_trials(tmp_path, tfds_dir, capsys):
    """Its worker's memory may grow by almost nothing: after two trials it gives notice and hands over to
    a spare; the chief is killed once the spare is up, and the spare, too, dies with it. An earlier run's
    go- and notice-files (worker ids start again at 1) are cleared before any worker starts."""
    from pipeline.jobs.tune import tune
    from pipeline.tune.search import Search

    path = _config(tmp_path, tfds_dir, max_trials=3, max_memory_growth=1e-9)
    workdir, folder = tmp_path / "work", Search.of(load(path)).folder
    (folder / "workers").mkdir(parents=True)
    signals = lambda: sorted(p.name for p in (folder / "workers").glob(".*-tuner*"))  # noqa: E731
    for name in (".go-tuner0-2", ".notice-tuner0-1"):  # as a killed run leaves them
        (folder / "workers" / name).touch()
    cmd = [sys.executable, "-m", "pipeline", "tune", str(path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    while not any("handing over to a fresh process" in line for line in lines):  # two trials done
        line = proc.stdout.readline()
        assert line or proc.poll() is None, "".join(lines)[-3000:]
        lines.append(line)
        if line.startswith("trial 0:"):
            assert signals() == []  # no spare started, nor went, on an earlier run's word
    assert [line.split(":")[0] for line in lines if line.startswith("trial ")] == ["trial 0", "trial 1"]
    _wait_for(lambda: _pids_of(f"PIPELINE_TUNE_GO={workdir}") and signals() == [".go-tuner0-2", ".notice-tuner0-1"],
              timeout=30, proc=proc)  # the spare started on the notice, and took over
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 60  # its workers (the spare may still be importing TensorFlow) follow it
    while _running(str(path)) and time.time() < deadline:
        time.sleep(0.5)
    assert not _running(str(path)), "a worker outlived its killed chief"
    first = {t: json.loads((folder / f"trial_{t}" / "result.json").read_text()) for t in ("0", "1")}

    tune(load(path))  # in this process this time, trials and all: any mode resumes
    again = capsys.readouterr().out
    assert "trial 2:" in again and "trial 0:" not in again and "trial 1:" not in again
    for t, result in first.items():  # finished trials are kept as they were
        assert json.loads((folder / f"trial_{t}" / "result.json").read_text()) == result
    rows = list(csv.DictReader(open(folder / "trials.csv")))
    assert sorted(r["trial"] for r in rows) == ["0", "1", "2"] and {r["status"] for r in rows} == {"COMPLETED"}

    parent = json.loads((folder / "parent_run.json").read_text())["run_id"]
    runs = _trial_runs(workdir, parent)
    assert _client(workdir).get_run(parent).info.status == "FINISHED"
    assert "RUNNING" not in {r.info.status for r in runs}
    finished = [r.data.tags["tune.trial_id"] for r in runs if r.info.status == "FINISHED"]
    assert sorted(finished) == ["0", "1", "2"]  # one finished run per trial, none twice


def _running(argument: str) -> list[int]:
    """Live processes (not zombies) whose command line holds ``argument`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and argument.encode() in (entry / "cmdline").read_bytes()
                    and (entry / "stat").read_text().split(") ")[1][0] != "Z"):
                pids.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return pids


def _pids_of(*env: str) -> list[int]:
    """Processes whose environment holds each of ``env`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and all(e.encode() in (entry / "environ").read_bytes() for e in env):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _held_by(workdir: Path, worker: str) -> list[str]:
    """The trials the search's oracle (its saved state) has handed to ``worker`` and not yet seen end."""
    state = [read_json(path) or {} for path in (workdir / "tuning").glob("*/oracle.json")]
    return [trial for s in state for tuner, trial in s.get("ongoing_trials", {}).items() if tuner.startswith(worker)]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_workers_share_a_search_and_a_dead_worker_does_not_stop_it(tmp_path, tfds_dir):
    path = _config(tmp_path, tfds_dir, max_trials=4)
    workdir = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "tune", str(path), "--workers", "2"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # the shared oracle hands tuner1 a trial: kill it mid-trial (a spare starts only on notice, so tuner0 reruns it)
    (killed,) = _wait_for(lambda: _held_by(workdir, "tuner1-"), timeout=180, proc=proc)
    pids = _pids_of("KERASTUNER_TUNER_ID=tuner1-", "PIPELINE_TUNE_GO=\0")
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r"tuning worker tuner1-\d+ exited with code -9", out), out[-3000:]

    folder = next((workdir / "tuning").iterdir())
    rows = list(csv.DictReader(open(folder / "trials.csv")))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"COMPLETED"}
    parent = json.loads((folder / "parent_run.json").read_text())["run_id"]
    runs = _trial_runs(workdir, parent)
    finished = sorted(r.data.tags["tune.trial_id"] for r in runs if r.info.status == "FINISHED")
    assert finished == sorted(r["trial"] for r in rows)  # every trial recorded once
    assert "RUNNING" not in {r.info.status for r in runs}
    assert killed in finished  # the dead worker's trial went back to the queue


def test_a_worker_hands_over_before_its_memory_grows_past_the_limit():
    from pipeline.tune.search import Memory

    memory = Memory(growth=0.1, baseline=900.0)
    for rss in (905.0, 920.0, 935.0, 950.0):
        memory.record(rss)
        assert not memory.nearly_full() and not memory.should_recycle()
    memory.record(965.0)  # two more steps of 15 MB would pass 900 x 1.1 = 990: notice, for a spare to warm up
    assert memory.nearly_full() and not memory.should_recycle()
    memory.record(980.0)  # the next trial's step would pass it: hand over
    assert memory.should_recycle()
    assert not Memory(growth=None).should_recycle()  # trials in the search's own process never hand over
