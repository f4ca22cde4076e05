"""Every run beside its classical baselines: fitted on the training split, scored on the model's test examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load
from pipeline.diagnose import Diagnosis, beaten
from tests.conftest import ROOT
from tests.test_tabular import csv_overrides, write_houses

CSV = ROOT / "configs" / "examples" / "csv.yaml"


def test_a_digits_run_is_scored_beside_the_majority_class_and_a_linear_model_on_pixels(trained):
    cfg, result = trained
    m = result.test_metrics
    assert 0.05 < m["baseline.majority.accuracy"] < 0.2  # ten classes
    assert m["baseline.linear.accuracy"] > 0.9  # logistic regression on 64 pixels is strong on digits
    assert not any(k.startswith("baseline.gradient_boosting") for k in m)  # no boosting on raw pixels
    assert m["skill.ratio_low"] <= m["skill.ratio"] <= m["skill.ratio_high"]
    assert m["skill.vs_majority"] < 1 and result.seconds["baselines"] > 0  # even two tiny epochs beat a constant
    assert any("baseline" in reason for reason in result.diagnosis.reasons)


@pytest.fixture(scope="module")
def linear_houses(tmp_path_factory, tfds_dir):
    """Prices that are a linear function of the area and the rooms, and a model trained for one epoch at a crawl."""
    from pipeline.jobs.train import train

    work = tmp_path_factory.mktemp("linear")
    cfg = load(CSV, csv_overrides(work, tfds_dir, write_houses(work / "houses.csv", n=600),
                                  "optimizer.learning_rate=0.00001", "export.enabled=false"))
    return cfg, train(cfg)


def test_a_baseline_that_beats_the_model_beyond_noise_is_in_the_verdict(linear_houses):
    cfg, result = linear_houses
    m = result.test_metrics
    assert m["baseline.linear.rmse"] < m["baseline.mean.rmse"] / 5  # the prices are linear in the features
    assert "baseline.gradient_boosting.rmse" in m
    assert m["skill.ratio_low"] > 1  # the model's error is above the best baseline's, beyond noise
    assert any("baseline beats the model" in reason for reason in result.diagnosis.reasons)
    assert any("baseline" in advice for advice in result.diagnosis.advice)


@pytest.mark.parametrize("overrides, names", [
    (["train.baselines=none"], set()),
    (["train.baselines=[mean]"], {"mean"}),
    (["train.baselines_seconds=0.000001"], {"mean"}),  # the first runs; the budget is then spent
])
def test_baselines_can_be_chosen_turned_off_and_kept_to_a_budget(linear_houses, overrides, names, capsys):
    from pipeline import baselines
    from pipeline.data import dataset
    from pipeline.tasks import task_for

    cfg, result = linear_houses
    cfg = load(CSV, [*csv_overrides(Path(cfg.workdir).parent, cfg.data.data_dir, cfg.data.path), *overrides])
    data = dataset.load(cfg)
    found = baselines.evaluate(result.model, data, cfg, task_for(cfg, data.spec))
    assert {k.split(".")[1] for k in found if k.startswith("baseline.")} == names
    if "seconds" in overrides[0]:
        assert "skipped: the baselines' budget" in capsys.readouterr().err


def _said(verdict: str, low: float) -> Diagnosis:
    test = {"skill.ratio": low + 0.1, "skill.ratio_low": low, "skill.ratio_high": low + 0.2,
            "skill.best_baseline.linear": 1.0}
    return beaten(Diagnosis(verdict, reasons=["curves"], advice=["curve advice"]), test)


def test_the_verdict_names_a_winning_baseline_and_keeps_under_and_overfitting():
    assert _said("good fit", 1.2).verdict == "baseline wins"
    assert _said("not converged", 1.2).verdict == "baseline wins"
    kept = _said("underfitting", 1.2)
    assert kept.verdict == "underfitting" and "linear baseline beats the model" in kept.reasons[-1]
    assert kept.advice[0] == "curve advice" and "baseline" in kept.advice[-1]
    assert _said("good fit", 0.95).verdict == "good fit"  # within noise of the baseline: no verdict of its own


def test_a_baseline_that_cannot_fit_is_skipped_with_its_reason_and_the_run_goes_on(tmp_path, tfds_dir, capsys):
    """One training row: logistic regression refuses a single class; the majority class does not mind."""
    from pipeline.jobs.train import train

    path = write_houses(tmp_path / "houses.csv", n=90)
    cfg = load(CSV, csv_overrides(tmp_path, tfds_dir, path, "data.label_key=city", "train.baselines_rows=1",
                                  "export.enabled=false"))
    result = train(cfg)
    err = capsys.readouterr().err
    assert "note: baseline linear skipped: This solver needs samples of at least 2 classes" in err
    assert "baseline.majority.accuracy" in result.test_metrics and result.export_path is None
    assert not any(k.startswith("baseline.linear") for k in result.test_metrics)
