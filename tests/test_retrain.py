"""Registry and scheduled retraining: champion/challenger, data checks, promotion only when better, one job at a time."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.config import DriftConfig, load
from pipeline.data.stats import compare
from pipeline.errors import ConfigError, DataError, PipelineError

from .conftest import DIGITS, ROOT, run_cli, tiny


def _cfg(workdir, tfds_dir, epochs: int, *extra: str):
    return load(DIGITS, tiny(workdir, tfds_dir, f"train.epochs={epochs}", "train.early_stopping.enabled=false",
                             "retrain.thresholds={}", *extra))


def _registry(cfg):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    versions = {str(v.version): v for v in client.search_model_versions("name = 'digits'")}
    alias = lambda a: str(client.get_model_version_by_alias("digits", a).version)  # noqa: E731
    return client, versions, alias


@pytest.mark.slow
def test_retraining_promotes_a_better_challenger_and_keeps_the_champion_against_a_worse_one(tmp_path, tfds_dir):
    from pipeline.export import versions as served_versions
    from pipeline.jobs.retrain import lock, retrain
    from pipeline.jobs.train import train

    workdir = tmp_path / "work"
    weak = train(_cfg(workdir, tfds_dir, 1))  # `pipeline train`: registered, and it serves, so it is the champion
    client, registered, alias = _registry(weak_cfg := _cfg(workdir, tfds_dir, 1))
    assert alias("champion") == "1" and registered["1"].tags["export.version"] == "1"
    assert float(registered["1"].tags["test_accuracy"]) == pytest.approx(weak.test_metrics["test_accuracy"], abs=1e-6)
    root = workdir / "exports" / "digits"

    with lock(better := _cfg(workdir, tfds_dir, 8)):
        promoted = retrain(better)
    assert promoted.promoted and promoted.exit_code() == 0
    assert promoted.challenger["accuracy"] > promoted.champion["accuracy"]
    assert served_versions(root) == [1, 2] and promoted.served == root / "2"
    client, registered, alias = _registry(weak_cfg)
    assert alias("champion") == promoted.version == "2" and registered["2"].tags["serving.version"] == "2"

    with lock(worse := _cfg(workdir, tfds_dir, 1)):
        kept = retrain(worse)
    assert not kept.promoted and kept.exit_code() == 0 and kept.exit_code(on_kept=10) == 10
    assert "does not beat" in kept.reason
    assert served_versions(root) == [1, 2]  # nothing new serves
    client, registered, alias = _registry(weak_cfg)
    assert alias("champion") == "2" and alias("challenger") == kept.version == "3"

    for decision, outcome in ((promoted, "promoted"), (kept, "kept")):
        run = client.get_run(decision.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["decision"] == outcome
        assert {"challenger_accuracy", "champion_accuracy"} <= set(run.data.metrics)
        assert "drift_report.md" in {a.path for a in client.list_artifacts(decision.run_id)}
        children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{decision.run_id}'")
        assert [c.data.tags["pipeline.role"] for c in children] == ["challenger"]


@pytest.mark.slow
def test_a_missing_champion_or_a_broken_schema_stops_retraining_before_it_trains(tmp_path, tfds_dir):
    from pipeline.jobs.retrain import lock, retrain
    from pipeline.jobs.train import train

    workdir = tmp_path / "work"
    train(_cfg(workdir, tfds_dir, 1))
    served = workdir / "exports" / "digits" / "1"
    served.rename(tmp_path / "elsewhere")  # the champion serves from a folder this machine does not have
    with pytest.raises(PipelineError, match=f"^Champion version 1 of 'digits' serves from {served}, which holds no "
                                            "SavedModel on this machine"):
        retrain(_cfg(workdir, tfds_dir, 1))
    (tmp_path / "elsewhere").rename(served)
    with pytest.raises(ConfigError, match=r"^Invalid `retrain.thresholds`: 'acuracy' is no metric of a classification "
                                          r"task; choose one of accuracy$"):  # before a run opens: no retrain run
        retrain(_cfg(workdir, tfds_dir, 1, "retrain.thresholds={acuracy: 0.9}"))
    changed = _cfg(workdir, tfds_dir, 1, "data.columns=[image, id]")  # a feature the champion never saw
    with pytest.raises(DataError, match="feature 'id' is new"), lock(changed):
        retrain(changed)
    client, registered, alias = _registry(changed)
    assert list(registered) == ["1"] and alias("champion") == "1"  # nothing trained, nothing registered
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id], "tags.`pipeline.job` = 'retrain'")
    assert [r.info.status for r in runs] == ["FAILED"]


@pytest.mark.parametrize("now,message", [
    (["x", "y", "z"], r"classes are not those of champion version 3 \(new: z\)"),
    (["a", "x", "y"], r"\(new: a\)"),  # a class sorted first: every id would name another class
    (["x"], r"\(gone: y\)"),
])
def test_a_label_whose_classes_changed_stops_retraining_naming_them(tmp_path, now, message):
    import json

    from pipeline.jobs.retrain import _check_classes

    (tmp_path / "assets.extra").mkdir()
    (tmp_path / "assets.extra" / "pipeline.json").write_text(json.dumps({"contract": {"class_names": ["x", "y"]}}))
    champion = SimpleNamespace(path=str(tmp_path), version="3")
    data = lambda names: SimpleNamespace(spec=SimpleNamespace(task="classification", class_names=names))  # noqa: E731
    _check_classes(champion, data(["x", "y"]))  # the same classes: nothing to say
    with pytest.raises(DataError, match=message):
        _check_classes(champion, data(now))


def test_drift_beyond_the_limits_is_a_warning_naming_the_feature():
    from pipeline.data.spec import Feature

    def splits(area, city, log_price=None):
        spec = SimpleNamespace(features=[Feature(name="area", kind="numeric", dtype="float32", shape=()),
                                         Feature(name="city", kind="categorical", dtype="string", shape=())],
                               label="price", task="regression", name="houses", version="1", digest="d", sizes={})
        columns = {"area": np.asarray(area, dtype=np.float32), "city": np.asarray(city, dtype=object),
                   "price": np.full(len(area), 12.0, np.float32) if log_price is None else log_price}
        return SimpleNamespace(spec=spec, train_columns=columns, validation=[])

    from pipeline.data.stats import statistics

    rng = np.random.default_rng(0)
    reference = statistics(splits(rng.uniform(50, 200, 500), [b"north", b"south"] * 250))
    same = compare(reference, splits(rng.uniform(50, 200, 500), [b"south", b"north"] * 250), DriftConfig())
    assert same.errors == [] and same.warnings == []
    shifted = compare(reference, splits(rng.uniform(150, 400, 500), [b"north", b"west"] * 250), DriftConfig())
    assert shifted.errors == []
    assert any("'area'" in w and "outside the champion's range" in w for w in shifted.warnings)
    assert any("'area'" in w and "mean moved" in w for w in shifted.warnings)
    assert any("'city'" in w and "never saw" in w and "west" in w for w in shifted.warnings)
    # A log target's training column holds the log: its messages say so, or its range [10.8, 13.1] reads as dollars
    reference = statistics(splits(area := rng.uniform(50, 200, 500), [b"north"] * 500,
                                  rng.uniform(10.8, 13.1, 500).astype(np.float32)), label_scale="log")
    dearer = compare(reference, splits(area, [b"north"] * 500, rng.uniform(12.0, 14.0, 500).astype(np.float32)),
                     DriftConfig(), label_scale="log")
    assert any(w.startswith("feature 'label:price' (its log): ") and "outside the champion's range [10.8" in w
               for w in dearer.warnings), dearer.warnings
    assert not any("'area'" in w for w in dearer.warnings)
    # A champion trained on the log and a challenger on the label itself (the config changed): not compared
    raw = compare(reference, splits(area, [b"north"] * 500, rng.uniform(5e4, 5e5, 500).astype(np.float32)),
                  DriftConfig())
    assert raw.warnings == [] and raw.errors == []
    assert any(r["check"] == "scale" and "trained on its log and this run on its values" in r["message"]
               for r in raw.rows)


@pytest.mark.slow
def test_a_second_retraining_is_refused_by_the_lock_at_once(tmp_path, tfds_dir):
    args = ["retrain", str(DIGITS), *tiny(tmp_path / "work", tfds_dir, "train.epochs=50",
                                          "train.early_stopping.enabled=false", "retrain.thresholds={}")]
    first = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lockfile = tmp_path / "work" / "locks" / "retrain-digits.lock"
    deadline = time.time() + 60
    while not (lockfile.exists() and lockfile.read_text().startswith("pid")):
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.1)
    started = time.time()
    second = run_cli(*args, timeout=60)
    assert second.returncode == 75 and time.time() - started < 10
    assert "Another retraining of 'digits' is running (pid" in second.stderr
    first.terminate()  # a crash mid-job: nothing was published
    assert first.wait(timeout=60) == 143
    assert not (tmp_path / "work" / "exports").exists()


def test_a_challenger_below_the_absolute_threshold_is_never_promoted():
    from pipeline.jobs.retrain import decide

    promoted, reason = decide("accuracy", 0.0, {"accuracy": 0.97}, {"accuracy": 0.96}, None)
    assert not promoted and "misses the threshold 0.97" in reason
    promoted, reason = decide("rmse_log", 0.01, {}, {"rmse_log": 0.125}, {"rmse_log": 0.13})
    assert not promoted and "does not beat" in reason  # better, but not by more than the margin
    assert decide("rmse_log", 0.01, {}, {"rmse_log": 0.11}, {"rmse_log": 0.13})[0]


def test_a_lead_within_the_test_splits_noise_keeps_the_champion():
    from pipeline.jobs.retrain import decide

    ahead, behind = {"accuracy": 0.91}, {"accuracy": 0.90}
    promoted, reason = decide("accuracy", 0.0, {}, ahead, behind, share=0.71, confidence=0.95)
    assert not promoted and "does not beat" in reason and "in 71% of 500 resamples" in reason and "noise" in reason
    promoted, reason = decide("accuracy", 0.0, {}, ahead, behind, share=0.99, confidence=0.95)
    assert promoted and "in 99% of 500 resamples of the test examples, 95% needed" in reason
    assert decide("accuracy", 0.0, {}, ahead, behind, share=0.71, confidence=0.0)[0]  # on the figures alone
    promoted, reason = decide("accuracy", 0.0, {}, behind, ahead, share=0.0, confidence=0.95)
    assert not promoted and "gain -0.0100" in reason and "noise" not in reason  # behind is no lead at all


@pytest.mark.parametrize("examples, lead, leads", [(100, 1, False), (300, 3, False), (300, 30, True)])
def test_a_challenger_leads_beyond_noise_when_its_lead_holds_in_paired_resamples(monkeypatch, examples, lead, leads):
    """Served predictions of two exports on the same test split: one right on ``lead`` more examples."""
    from types import SimpleNamespace

    import numpy as np

    from pipeline.export import evaluate
    from pipeline.tasks import Classification

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, examples)
    old = np.where(rng.random(examples) < 0.7, labels, 1 - labels)  # right on about 70%
    new = old.copy()
    fixed = np.flatnonzero(new != labels)[:lead]
    new[fixed] = labels[fixed]
    monkeypatch.setattr(evaluate, "predict_split", lambda path, *_: ({"new": new, "old": old}[path], labels))
    task = Classification(None, SimpleNamespace(num_classes=2))
    challenger, champion, share = evaluate.compare_exports("new", "old", SimpleNamespace(spec=None, test=None),
                                                           task, "accuracy", 0.0, horizon=1, seed=0)
    assert challenger["accuracy"] - champion["accuracy"] == pytest.approx(lead / examples)
    assert (share >= 0.95) == leads


def test_the_cronjob_manifest_treats_a_kept_champion_as_success_and_never_retries():
    """A schema check of serving/k8s/retrain-cronjob.yaml: what Kubernetes would do with each exit."""
    import yaml

    from .conftest import ROOT

    job = yaml.safe_load((ROOT / "serving/k8s/retrain-cronjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "CronJob")
    spec = job["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["schedule"].count(" ") == 4
    template = spec["jobTemplate"]["spec"]
    assert template["backoffLimit"] == 0 and "podFailurePolicy" not in template  # exit 0 is success: no rule needed
    pod = template["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"][:2] == ["pipeline", "retrain"] and "--exit-code-on-kept" not in container["command"]


def test_a_rerun_closes_its_dead_decision_run_and_re_parents_the_challenger_it_resumes(tmp_path):
    """A retraining killed by SIGKILL left its decision run and its challenger RUNNING: the rerun ends the
    decision KILLED (saying why) and the resumed challenger continues under the new decision."""
    import os
    import socket

    from mlflow.entities import Metric

    from pipeline.track.mlflow import start_run, tracking_client
    from pipeline.track.owners import OWNER_HOST, OWNER_PID

    cfg = load(DIGITS, [f"workdir={tmp_path}"])
    client, experiment = tracking_client(cfg)
    dead = subprocess.Popen(["true"])
    dead.wait()
    owner = {OWNER_HOST: socket.gethostname(), OWNER_PID: str(dead.pid)}
    decision = client.create_run(experiment, tags=owner).info.run_id
    challenger = client.create_run(experiment, tags={**owner, "mlflow.parentRunId": decision}).info.run_id
    client.log_batch(challenger, metrics=[Metric("loss", 1.0, 0, 1)])

    with start_run(cfg, run_name="decision") as new_decision:
        with start_run(cfg, tags={"mlflow.parentRunId": new_decision.id}, resume_id=challenger, resume_epoch=1):
            pass
    old = client.get_run(decision)
    assert old.info.status == "KILLED" and str(dead.pid) in old.data.tags["pipeline.ended_by"]
    resumed = client.get_run(challenger)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["mlflow.parentRunId"] == new_decision.id
    assert resumed.data.tags[OWNER_PID] == str(os.getpid())


def test_a_damaged_metadata_file_of_the_served_version_is_named(tmp_path):
    from pipeline.jobs.retrain import _reconcile

    cfg = load(DIGITS, [f"workdir={tmp_path}"])
    meta = tmp_path / "exports" / "digits" / "1" / "assets.extra" / "pipeline.json"
    meta.parent.mkdir(parents=True)
    meta.write_text('{"run_id": "abc')  # cut short
    with pytest.raises(DataError, match=r"^The served version's metadata is damaged: .*1/assets.extra/pipeline.json"):
        _reconcile(cfg)
