"""Fault tolerance: a killed or preempted training process, rerun with the same config, resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import DIGITS, ROOT, tiny

pytestmark = pytest.mark.slow

EPOCHS = 6


def _args(workdir, tfds_dir, *extra: str):
    return ["train", str(DIGITS), *tiny(workdir, tfds_dir, f"train.epochs={EPOCHS}", "data.batch_size=32",
                                        "train.early_stopping.patience=50", "export.enabled=false",
                                        "tracking.write_every=0",  # every epoch logged at once: the test waits on them
                                        *extra)]


def _client(workdir):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{workdir}/mlflow.db")


def _runs(workdir):
    client = _client(workdir)
    exp = client.get_experiment_by_name("digits") if (workdir / "mlflow.db").exists() else None
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]) if exp else []


def _start_and_interrupt(workdir, tfds_dir, sig, after_epochs: int = 2, extra: tuple = ()) -> subprocess.Popen:
    """Start training (``extra`` overrides), wait until the state of epoch ``after_epochs`` is saved, then send
    ``sig`` mid-epoch.

    The states on disk are watched, not the MLflow store: a query of the store can take longer under
    load than the epochs left, and the run would end before the signal."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *_args(workdir, tfds_dir, *extra)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})  # a crash shows its Python stack
    deadline = time.time() + 120
    while not any(int(p.name.split("-")[1]) >= after_epochs for p in (workdir / "backup").glob("*/epoch-*")):
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.output = proc.communicate(timeout=60)  # (stdout, stderr): what a failed assertion shows
    return proc


def _rerun(workdir, tfds_dir, capsys) -> str:
    """The same training again, in this process (only the interrupted run needs one of its own): its stderr."""
    from pipeline.config import load
    from pipeline.jobs.train import train

    _, config, *overrides = _args(workdir, tfds_dir)
    capsys.readouterr()
    train(load(config, overrides))
    return capsys.readouterr().err


def _history(workdir, run_id, name="val_loss"):
    return [(m.step, m.value) for m in sorted(_client(workdir).get_metric_history(run_id, name), key=lambda m: m.step)]


@pytest.fixture
def reference(tmp_path, tfds_dir):
    """The same config, never interrupted (in this process: a run does not depend on the process, test_train)."""
    from pipeline.config import load
    from pipeline.jobs.train import train

    workdir = tmp_path / "reference"
    _, config, *overrides = _args(workdir, tfds_dir)
    result = train(load(config, overrides))
    return _history(workdir, result.run_id)


def test_sigkill_mid_epoch_then_rerun_continues_the_same_run_and_matches_an_uninterrupted_one(tmp_path, tfds_dir, reference,
                                                                                               capsys):
    workdir = tmp_path / "work"
    killed = _start_and_interrupt(workdir, tfds_dir, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    (run,) = _runs(workdir)
    done = len(_history(workdir, run.info.run_id))
    assert 1 <= done < EPOCHS  # the state of epoch 2 is saved before its metrics are logged

    resumed = int(_rerun(workdir, tfds_dir, capsys).split("Resuming digits after epoch ")[1].split()[0])
    assert resumed in (done, done + 1)  # the kill may land between saving a state and logging it

    (run,) = _runs(workdir)  # the same run continued: no second run
    assert run.info.status == "FINISHED" and run.data.tags["resumed_after_epoch"] == str(resumed)
    history = _history(workdir, run.info.run_id)
    assert [step for step, _ in history] == list(range(1, EPOCHS + 1))  # no gap, no duplicate
    assert [v for _, v in history] == pytest.approx([v for _, v in reference], abs=1e-3)
    assert not (workdir / "backup").exists() or not any((workdir / "backup").iterdir())


def test_sigterm_exits_143_marks_the_run_killed_and_a_rerun_resumes(tmp_path, tfds_dir, capsys):
    workdir = tmp_path / "work"
    terminated = _start_and_interrupt(workdir, tfds_dir, signal.SIGTERM)
    assert terminated.returncode == 143, terminated.output[1][-3000:]
    (run,) = _runs(workdir)
    assert run.info.status == "KILLED"

    assert "Resuming digits after epoch" in _rerun(workdir, tfds_dir, capsys)
    (again,) = _runs(workdir)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert [s for s, _ in _history(workdir, run.info.run_id)] == list(range(1, EPOCHS + 1))


def test_an_unreadable_newest_state_falls_back_to_the_previous_and_links_a_new_run(tmp_path, tfds_dir, capsys):
    workdir = tmp_path / "work"
    _start_and_interrupt(workdir, tfds_dir, signal.SIGKILL, after_epochs=3)
    states = sorted((workdir / "backup").glob("*/epoch-*"))
    assert len(states) == 2  # the newest and the one before it
    (states[-1] / "state.weights.h5").write_bytes(b"truncated by a disk error")
    fallback = int(states[0].name.split("-")[1])

    assert f"Resuming digits after epoch {fallback} " in _rerun(workdir, tfds_dir, capsys)
    *old, new = _runs(workdir)
    assert new.info.status == "FINISHED"
    assert [s for s, _ in _history(workdir, new.info.run_id)] == list(range(1, EPOCHS + 1))
    if old:  # the killed run had logged past the fallback: it ends KILLED and the new run links to it
        assert old[0].info.status == "KILLED" and new.data.tags["resumed_from"] == old[0].info.run_id
