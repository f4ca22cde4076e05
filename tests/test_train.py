"""Training: seeded, early-stopped, and tracked in MLflow with nothing left RUNNING."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.config import ExperimentConfig

from .conftest import DIGITS, ROOT, tiny


def _client(cfg):
    from mlflow.tracking import MlflowClient

    return MlflowClient(cfg.tracking.uri)


def test_run_records_config_data_environment_and_finishes(trained):
    cfg, result = trained
    run = _client(cfg).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["model.name"] == "cnn" and params["train.epochs"] == "2" and params["model.dropout"] == "0.25"
    assert params["data.version"] == "1.0.0" and params["data.size.test"] == "359" and len(params["data.digest"]) == 64
    assert tags["data.name"] == "digits" and tags["keras"].startswith("3.") and tags["tensorflow"].startswith("2.")
    assert tags["strategy"] == "_DefaultDistributionStrategy" and tags["replicas"] == "1"
    assert len(tags.get("mlflow.source.git.commit", "")) == 40
    experiment = _client(cfg).get_experiment(run.info.experiment_id)  # MLflow's UI opens it on the runs, not GenAI
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_runs_of_one_seed_are_named_apart_and_leave_the_seeded_generator_as_it_was(tiny_cfg):
    """MLflow names an unnamed run from Python's global generator, which a run seeds: every run was one name."""
    import random

    from pipeline.track import start_run

    cfg, names = tiny_cfg(), []
    for _ in range(2):
        random.seed(cfg.seed)
        with start_run(cfg) as run:
            names.append(run.client.get_run(run.id).info.run_name)
        assert random.random() == random.Random(cfg.seed).random()  # the training's draws are its seed's
    assert names[0] != names[1]


def test_run_logs_every_epoch_and_the_test_metrics(trained):
    cfg, result = trained
    client = _client(cfg)
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(result.run_id, name)
        assert [m.step for m in history] == [1, 2], name
        if name in result.history:
            assert [m.value for m in history] == pytest.approx(result.history[name])
    metrics = client.get_run(result.run_id).data.metrics
    assert metrics["test_accuracy"] == pytest.approx(result.test_metrics["test_accuracy"])
    assert 0.1 < metrics["test_accuracy"] <= 1.0
    assert metrics["best_epoch"] == result.best_epoch and 1 <= result.best_epoch <= 2
    assert metrics["verify.max_abs_diff"] <= 1e-5 and metrics["verify.examples"] == 359


def test_run_artifacts_hold_config_data_spec_curves_and_model(trained, tmp_path):
    cfg, result = trained
    client = _client(cfg)
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "data_spec.json", "plots", "saved_model"} <= names
    assert [a.path for a in client.list_artifacts(result.run_id, "plots")] == ["plots/learning_curves.png"]
    assert "saved_model/saved_model.pb" in {a.path for a in client.list_artifacts(result.run_id, "saved_model")}
    config = client.download_artifacts(result.run_id, "config.yaml", str(tmp_path))
    assert ExperimentConfig.model_validate(yaml.safe_load(open(config))) == cfg
    spec = json.load(open(client.download_artifacts(result.run_id, "data_spec.json", str(tmp_path))))
    assert spec["sizes"] == {"train": 1168, "validation": 270, "test": 359}


@pytest.mark.slow  # three trainings
def test_early_stopping_stops_before_max_epochs_on_a_plateau_and_a_resumed_run_stops_where_it_would_have(tiny_cfg):
    import keras

    from pipeline.jobs.train import train

    # min_delta larger than any possible improvement: every epoch after the first is a plateau; and a rate too
    # small to move the loss, so the plateau schedule halves it after every epoch from the second on
    cfg = tiny_cfg("train.epochs=30", "train.early_stopping.patience=3", "train.early_stopping.min_delta=100",
                   "optimizer.learning_rate=0.00001", "optimizer.schedule.name=plateau", "optimizer.schedule.patience=1",
                   "tracking.enabled=false", "export.enabled=false")
    result = train(cfg)
    assert result.epochs_run == 4 < cfg.train.epochs
    assert result.best_epoch == 1
    assert result.history["learning_rate"] == pytest.approx([1e-5, 1e-5, 5e-6, 2.5e-6])

    class Crash(keras.callbacks.Callback):  # after the second epoch's state is saved: one plateau epoch counted
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("the machine went away")

    with pytest.raises(RuntimeError, match="went away"):
        train(cfg, callbacks=[Crash()])
    resumed = train(cfg)  # the counts of plateau epochs and the best epoch carry over: it stops at the fourth
    assert (resumed.epochs_run, resumed.best_epoch) == (4, 1)
    assert resumed.history["learning_rate"] == result.history["learning_rate"]
    assert resumed.test_metrics == result.test_metrics


def test_a_failure_marks_the_run_failed_and_publishes_nothing(tiny_cfg, monkeypatch):
    from pipeline.export import saved_model
    from pipeline.jobs.train import train

    def broken_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(saved_model, "_write", broken_write)
    cfg = tiny_cfg("train.epochs=1")
    with pytest.raises(OSError, match="disk full"):
        train(cfg)
    client = _client(cfg)
    runs = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    model_dir = Path(cfg.export.root) / cfg.export.model_name
    assert not model_dir.exists() or list(model_dir.iterdir()) == []


@pytest.mark.slow
# SIGTERM (143, KILLED, then a rerun resumes) is tests/test_resume.py's.
@pytest.mark.parametrize("sig,code,status", [(signal.SIGINT, 130, "KILLED")])
def test_interrupted_training_ends_the_run_killed(tmp_path, tfds_dir, sig, code, status):
    from mlflow.tracking import MlflowClient

    workdir = tmp_path / "work"
    args = tiny(workdir, tfds_dir, "train.epochs=500", "train.early_stopping.enabled=false")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "train", str(DIGITS), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    deadline = time.time() + 120
    run = None
    while time.time() < deadline and run is None:
        time.sleep(1)
        exp = client.get_experiment_by_name("digits") if (workdir / "mlflow.db").exists() else None
        runs = client.search_runs([exp.experiment_id]) if exp else []
        run = runs[0] if runs and "loss" in runs[0].data.metrics else None
    assert run is not None, "training never logged an epoch"
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == code
    assert client.get_run(run.info.run_id).info.status == status
    assert not (workdir / "exports").exists()


PREPARE_OWN_DATASET = """
import numpy as np, tensorflow_datasets as tfds

class TinyShapes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("0.1.0")
    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "picture": tfds.features.Image(shape=(12, 12, 3)), "kind": tfds.features.ClassLabel(num_classes=3)}))
    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}
    def _generate_examples(self):
        rng = np.random.default_rng(0)
        for i in range(90):
            image = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
            image[:, :, i % 3] += 150  # the class is the bright channel
            yield i, {"picture": image, "kind": i % 3}"""


@pytest.mark.slow
def test_any_prepared_tfds_dataset_trains_with_only_a_config_change(tmp_path):
    """A user's own builder, prepared elsewhere: this process never imports its code."""
    import tensorflow as tf

    from pipeline.config import load
    from pipeline.jobs.train import train

    data_dir = tmp_path / "their_tfds"
    (tmp_path / "their_builder").mkdir()  # TFDS wants a builder inside a package
    (tmp_path / "their_builder" / "__init__.py").write_text(PREPARE_OWN_DATASET)
    prepare = f"from their_builder import TinyShapes; TinyShapes(data_dir={str(data_dir)!r}).download_and_prepare()"
    subprocess.run([sys.executable, "-c", prepare], cwd=tmp_path, check=True, timeout=120, capture_output=True)
    cfg = load(DIGITS, tiny(tmp_path / "work", data_dir, "data.dataset=tiny_shapes", "data.columns=[picture]", "data.drop_remainder=false",
                            "data.label_key=kind", "name=shapes", "train.epochs=1",
                            "data.splits.train=train[:60%]", "data.splits.validation=train[60%:80%]",
                            "data.splits.test=train[80%:]"))
    result = train(cfg)
    assert result.export_path == Path(cfg.export.root) / "shapes" / "1"
    inputs = tf.saved_model.load(str(result.export_path)).signatures["serving_default"].structured_input_signature[1]
    assert {k: (v.dtype, v.shape.as_list()) for k, v in inputs.items()} == {"picture": (tf.uint8, [None, 12, 12, 3])}


def test_a_long_epoch_says_its_step_rate_and_time_left_between_the_lines_keras_prints_per_epoch(capsys):
    import keras
    import numpy as np

    from pipeline.train.callbacks import epoch_progress

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.zeros((40, 3)), np.zeros(40), batch_size=10, epochs=2, verbose=0, callbacks=[epoch_progress(every=0)])
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"epoch {e}/2: step {s} of 4" for e in (1, 2) for s in range(1, 5)]
    assert " steps/s, about " in lines[0] and lines[0].endswith(" s left)") and lines[3].endswith(" steps/s)")


def test_the_custom_loop_logs_fits_metrics_from_the_tasks_metric_objects(tiny_cfg, capsys):
    """The loop used under MultiWorkerMirroredStrategy, here on one device: same log keys as fit, and
    val_accuracy equal to the final model's accuracy on the validation split counted by hand; a long
    epoch's progress lines too."""
    import numpy as np

    from pipeline.data import dataset
    from pipeline.jobs.train import train
    from pipeline.train.callbacks import epoch_progress

    cfg = tiny_cfg("train.loop=custom", "train.early_stopping.enabled=false", "export.enabled=false",
                   "tracking.enabled=false")
    result = train(cfg, callbacks=[epoch_progress(every=0)])
    steps = dataset.load(cfg).steps_per_epoch
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert len(progress) == result.epochs_run * steps and progress[-1].startswith(
        f"epoch {result.epochs_run}/{cfg.train.epochs}: step {steps} of {steps} (")
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(result.history)
    correct = total = 0
    for x, y in dataset.load(cfg).validation:
        correct += int((np.argmax(result.model(x, training=False), axis=-1) == y.numpy()).sum())
        total += len(y)
    assert result.history["val_accuracy"][-1] == pytest.approx(correct / total, abs=1e-6)
    assert result.test_metrics["test_accuracy"] > 0 and np.isfinite(result.history["val_loss"][-1])


@pytest.mark.slow
def test_a_run_whose_process_died_is_ended_killed_by_the_next_run(tmp_path, tfds_dir):
    from mlflow.tracking import MlflowClient

    from pipeline.config import load
    from pipeline.jobs.train import train

    workdir = tmp_path / "work"
    args = tiny(workdir, tfds_dir, "train.epochs=500", "train.early_stopping.enabled=false")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "train", str(DIGITS), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    deadline, dead = time.time() + 120, None
    while time.time() < deadline and dead is None:
        time.sleep(0.5)
        exp = client.get_experiment_by_name("digits") if (workdir / "mlflow.db").exists() else None
        dead = next(iter(client.search_runs([exp.experiment_id])), None) if exp else None
    assert dead is not None, "training never opened its run"
    proc.kill()  # SIGKILL: nothing in the process can end its run
    proc.wait(timeout=30)
    assert client.get_run(dead.info.run_id).info.status == "RUNNING"

    train(load(DIGITS, [*args[:-2], "train.epochs=1", "train.resume=false", "export.enabled=false"]))
    ended = client.get_run(dead.info.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags["pipeline.ended_by"] == f"a later run: its process {proc.pid} on {socket.gethostname()} had died"


@pytest.mark.slow  # two processes, each importing TensorFlow
def test_runs_started_together_on_a_new_workdir_share_its_dataset_and_store(tmp_path):
    """Cron starts several configs at once on one fresh workdir: each would prepare the dataset and create
    the SQLite store's tables, and break the others' ("table experiments already exists", a missing
    TFDS file). One does each while the others wait."""
    script = ("import sys; from pipeline import api; from pipeline.track.mlflow import tracking_client\n"
              "cfg = api.load_config(sys.argv[1], [f'workdir={sys.argv[2]}'])\n"
              "print(api.prepare(cfg).sizes['train'], tracking_client(cfg)[1])")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(DIGITS), str(tmp_path / "work")], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outputs]
    assert len({tuple(out.split()[-2:]) for out, _ in outputs}) == 1  # the same data, the same experiment
