"""Studies: variants of a base config, each a nested tracked run, compared in a table and plots."""

from __future__ import annotations

import csv

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.jobs.study import load_study, run_study

from .conftest import ROOT, tiny


def _study(tmp_path, variants: dict, overrides: dict = (), **extra) -> str:
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump({"base": str(ROOT / "configs" / "digits.yaml"),
                                    "overrides": {"export.enabled": False, **dict(overrides)}, "variants": variants,
                                    **extra}, sort_keys=False))
    return str(path)


@pytest.mark.slow
def test_a_two_variant_study_writes_its_table_plots_and_nested_runs(tmp_path, tfds_dir):
    from mlflow.tracking import MlflowClient

    path = _study(tmp_path, {"no_dropout": {"model.dropout": 0.0}, "dropout": {"model.dropout": 0.5}},
                  target={"metric": "val_accuracy", "value": 0.05})
    study = run_study(path, tiny(tmp_path / "work", tfds_dir, "train.epochs=1"))
    rows = list(csv.DictReader(open(study.table)))
    assert [r["variant"] for r in rows] == ["no_dropout", "dropout"]
    assert all(0 <= float(r["test_accuracy"]) <= 1 and r["epochs_to_target"] == "1" for r in rows)
    assert "| no_dropout |" in study.markdown and (study.table.parent / "mini_curves.png").stat().st_size > 1000

    client = MlflowClient(f"sqlite:///{tmp_path / 'work'}/mlflow.db")
    parent = client.get_run(study.parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{study.parent_run_id}'")
    assert sorted(c.data.tags["study.variant"] for c in children) == ["dropout", "no_dropout"]
    assert {"mini.csv", "mini.md", "mini_curves.png"} <= {a.path for a in client.list_artifacts(study.parent_run_id)}


@pytest.mark.slow
def test_a_search_study_compares_strategies_by_best_score_against_trials_and_time(tmp_path, tfds_dir):
    from mlflow.tracking import MlflowClient

    search = {"tune.max_trials": 2, "tune.trial": {}, "tune.space": {"model.dropout": [0.0, 0.5]}}
    path = _study(tmp_path, {"grid": {"tune.algorithm": "grid"}, "random": {"tune.algorithm": "random"}},
                  overrides=search, kind="tune")
    study = run_study(path, tiny(tmp_path / "work", tfds_dir, "train.epochs=1"))
    rows = list(csv.DictReader(open(study.table)))
    assert [(r["variant"], r["algorithm"], r["trials"]) for r in rows] == [("grid", "grid", "2"), ("random", "random", "2")]
    for r in rows:
        assert 0 <= float(r["best_val_accuracy"]) <= 1 and 1 <= int(r["trials_to_best"]) <= 2
        assert 0 < float(r["seconds_to_best"]) <= float(r["seconds"])
    assert (study.table.parent / "mini_curves.png").stat().st_size > 1000

    client = MlflowClient(f"sqlite:///{tmp_path / 'work'}/mlflow.db")
    experiment = client.get_run(study.parent_run_id).info.experiment_id
    searches = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{study.parent_run_id}'")
    assert sorted((s.data.tags["study.variant"], s.data.tags["tune.role"]) for s in searches) == [
        ("grid", "parent"), ("random", "parent")]
    for s in searches:  # each search's trials nest under it
        trials = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{s.info.run_id}'")
        assert len(trials) == 2 and {t.info.status for t in trials} == {"FINISHED"}


def test_a_search_study_needs_a_tune_section(tmp_path, tfds_dir):
    path = _study(tmp_path, {"grid": {}}, kind="tune")
    with pytest.raises(ConfigError, match="variant 'grid'.*needs a `tune` section"):
        load_study(path, tiny(tmp_path / "w", tfds_dir, "tune=null"))


def test_a_bad_variant_is_named_before_anything_trains(tmp_path, tfds_dir):
    with pytest.raises(ConfigError, match="variant 'bad'.*model.dropout"):
        load_study(_study(tmp_path, {"ok": {}, "bad": {"model.dropout": 3}}), tiny(tmp_path / "w", tfds_dir))


@pytest.mark.parametrize("name", ["regularization", "sparsity", "batch_norm", "optimizers", "batch_size",
                                  "early_stopping", "search_strategies", "speech_augmentation"])
def test_the_shipped_studies_are_valid(name):
    study, configs = load_study(ROOT / "configs" / "studies" / f"{name}.yaml")
    assert len(configs) == len(study.variants) >= 2


def test_a_study_file_is_checked_like_a_config_before_anything_trains(tmp_path, tfds_dir):
    overrides = tiny(tmp_path / "w", tfds_dir)
    with pytest.raises(ConfigError, match=r"Invalid study .*mini\.yaml: `target.metric`: Unknown metric 'val_f1'"):
        load_study(_study(tmp_path, {"ok": {}}, target={"metric": "val_f1", "value": 0.9}), overrides)
    with pytest.raises(ConfigError, match=r"Invalid study .*mini\.yaml: Unknown key `varaints`; did you mean `variants`\?"):
        load_study(_study(tmp_path, {"ok": {}}, varaints={}), overrides)
