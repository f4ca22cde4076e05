"""tf.distribute: strategies on logical CPU devices, batch semantics, precision policies."""

from __future__ import annotations

import signal

import pytest

from pipeline.config import load
from pipeline.errors import ConfigError

from .conftest import ROOT, run_cli


@pytest.mark.slow
@pytest.mark.distributed
def test_mirrored_over_two_logical_cpus_resumes_after_a_kill_and_exports_a_verified_model(tmp_path, tfds_dir):
    """In subprocesses: one strategy per process (two MirroredStrategy objects can clash). The rerun makes the
    resumed optimizer's variables under the strategy ("Need to be inside with strategy.scope()" before)."""
    from .test_resume import _args, _runs, _start_and_interrupt

    workdir = tmp_path / "work"
    mirrored = ("train.strategy=mirrored", "train.virtual_cpus=2", "data.batch_scope=per_replica",
                "optimizer.scale_lr=linear", "export.enabled=true")
    assert _start_and_interrupt(workdir, tfds_dir, signal.SIGKILL, extra=mirrored).returncode == -signal.SIGKILL
    proc = run_cli(*_args(workdir, tfds_dir, *mirrored))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming digits after epoch" in proc.stderr
    (run,) = _runs(workdir)  # the killed run, continued
    tags = run.data.tags
    assert (tags["strategy"], tags["replicas"], tags["global_batch"]) == ("MirroredStrategy", "2", "64")
    assert tags["devices"].count("CPU") == 2 and run.info.status == "FINISHED" and "resumed_after_epoch" in tags
    assert run.data.metrics["verify.max_abs_diff"] <= 1e-5
    assert (workdir / "exports" / "digits" / "1" / "saved_model.pb").is_file()


@pytest.mark.slow
@pytest.mark.distributed
def test_a_table_with_text_columns_tunes_and_trains_on_two_replicas_in_one_process(tmp_path, tfds_dir):
    """Keras 3.15's fit builds a model on several replicas from the first batch averaged across them, which
    fails on strings ("Value for attr 'T' of string" in AddN): under train.loop auto such a table trains in the
    custom loop, whose optimizer variables are made before its first step is traced; a search's trials too.
    Hyperband's continued trials make their optimizer's variables under the strategy, and the best config
    trains after the search under the same strategy object (a second one failed: "Shape mismatch in the
    collective instance")."""
    from mlflow.tracking import MlflowClient

    from .test_tabular import csv_overrides, write_houses

    path = write_houses(tmp_path / "houses.csv", n=300)
    proc = run_cli("tune", str(ROOT / "configs/examples/csv.yaml"), "--workers", "0", "--then-train", *csv_overrides(
        tmp_path, tfds_dir, path, "train.epochs=2", "train.strategy=mirrored", "train.virtual_cpus=2",
        "tune.algorithm=hyperband", "tune.max_epochs=2", "tune.factor=2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr  # tf.function's retracing notices stay behind `pipeline -v`
    client = MlflowClient(f"sqlite:///{tmp_path / 'work'}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("houses").experiment_id])
    roles = [run.data.tags.get("tune.role", "training") for run in runs]
    assert sorted(set(roles)) == ["parent", "training", "trial"] and roles.count("training") == 1
    trials = [run for run in runs if run.data.tags.get("tune.role") == "trial"]
    assert all(run.info.status == "FINISHED" and "score" in run.data.metrics for run in trials)
    assert any("tuner/trial_id" in run.data.params for run in trials)  # a continued trial, weights loaded
    (run,) = [run for run in runs if "tune.role" not in run.data.tags]
    assert (run.data.tags["strategy"], run.data.tags["replicas"]) == ("MirroredStrategy", "2")
    assert {"loss", "val_loss", "test_rmse"} <= set(run.data.metrics) and run.data.metrics["verify.max_abs_diff"] <= 1e-5


def test_per_replica_batch_and_learning_rate_follow_the_replica_count():
    from pipeline.train.optim import build_optimizer
    from pipeline.train.strategy import global_batch

    assert global_batch(32, "per_replica", 4) == 128 and global_batch(32, "global", 4) == 32
    for rule, factor in (("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)):
        cfg = load(None, ["optimizer.learning_rate=0.01", f"optimizer.scale_lr={rule}"])
        opt = build_optimizer(cfg.optimizer, epochs=1, steps_per_epoch=10, replicas=4)
        assert float(opt.learning_rate) == pytest.approx(0.01 * factor)


def test_last_partial_batch_is_kept_or_dropped_as_configured(tiny_cfg):
    from pipeline.data import dataset

    kept = dataset.load(tiny_cfg("data.batch_size=100", "data.drop_remainder=false"))
    dropped = dataset.load(tiny_cfg("data.batch_size=100", "data.drop_remainder=true"))
    assert (kept.steps_per_epoch, dropped.steps_per_epoch) == (12, 11)  # 1,168 training examples
    assert [len(y) for _, y in dropped.train_epoch()] == [100] * 11
    assert [len(y) for _, y in kept.train_epoch()][-1] == 68


def test_mixed_float16_is_refused_on_a_cpu_with_the_alternative(tiny_cfg):
    from pipeline.jobs.train import train

    with pytest.raises(ConfigError, match=r"`train.precision`: 'mixed_float16' needs a GPU.*mixed_bfloat16"):
        train(tiny_cfg("train.precision=mixed_float16"))


def test_mixed_bfloat16_trains_and_the_export_still_takes_and_returns_float32(tiny_cfg):
    import keras
    import tensorflow as tf

    from pipeline.jobs.train import train

    result = train(tiny_cfg("train.precision=mixed_bfloat16", "train.epochs=1"))
    try:
        assert result.model.get_layer("block1_conv").compute_dtype == "bfloat16"
        assert result.model.get_layer("probabilities").compute_dtype == "float32"
        outputs = tf.saved_model.load(str(result.export_path)).signatures["serving_default"].structured_outputs
        assert outputs["probabilities"].dtype == tf.float32
        assert result.checks["verify.max_abs_diff"] <= 1e-5
    finally:
        keras.mixed_precision.set_global_policy("float32")
