"""Fit diagnosis: curves built to overfit, underfit, fit well or stop short, and real runs made to over- and underfit."""

from __future__ import annotations

import math

import pytest

from pipeline.diagnose import diagnose


def _curves(train, val, accuracy):
    return {"loss": train, "val_loss": val, "accuracy": accuracy}


def test_validation_loss_rising_after_its_minimum_is_overfitting():
    train = [1.0 * 0.8**e for e in range(30)]
    val = [1.0 * 0.85**e for e in range(10)] + [0.85**9 * 1.06**e for e in range(1, 21)]
    d = diagnose(_curves(train, val, [0.99] * 30), "accuracy", True, 0.11, 30, False)
    assert d.verdict == "overfitting"
    assert d.evidence["best_epoch"] == 10 and d.evidence["val_rise_after_best"] > 1.0 and d.evidence["gap_trend"] > 0
    assert any("dropout" in a for a in d.advice) and any("l2" in a for a in d.advice)


def test_validation_loss_rising_while_still_below_the_training_loss_is_not_overfitting():
    """Augmented training batches lose more than the clean validation split; a rise there is not memorising."""
    train = [1.0, 0.6, 0.45, 0.38, 0.34, 0.31, 0.3, 0.29, 0.28, 0.27]
    val = [0.8, 0.4, 0.2, 0.12, 0.09, 0.075, 0.068, 0.07, 0.074, 0.077]  # 13% above its minimum, far below training
    d = diagnose(_curves(train, val, [0.9] * 10), "accuracy", True, 0.33, 10, False)
    assert d.evidence["val_rise_after_best"] > 0.1 and d.verdict != "overfitting"
    assert not any("l2" in a for a in d.advice)


def test_a_wide_and_widening_gap_is_overfitting_while_validation_loss_still_falls_and_advice_fits_the_inputs():
    val = [1.0 * 0.97**e for e in range(10)]
    train = [1.0 * 0.85**e for e in range(10)]
    image = diagnose(_curves(train, val, [0.99] * 10), "accuracy", True, 0.11, 10, False)
    assert image.verdict == "overfitting" and image.evidence["best_epoch"] == 10
    assert "still at its lowest in the last epoch" in image.reasons[0] and "bottomed" not in image.reasons[0]
    assert any("augmentation" in a for a in image.advice)
    table = diagnose(_curves(train, val, [0.99] * 10), "accuracy", True, 0.11, 10, False, augmentable=False)
    assert table.verdict == "overfitting" and not any("augment" in a for a in table.advice)
    assert any("dropout" in a for a in table.advice)


def test_a_gap_widening_in_the_first_epochs_alone_is_no_overfitting():
    """Keras' training loss is an average over the epoch: while it falls fast it lags validation's end-of-epoch loss,
    so any model's gap widens at first (a 3-epoch run of an image folder, its validation loss still falling fast)."""
    train, val = [0.60, 0.35, 0.216], [0.62, 0.45, 0.352]
    d = diagnose(_curves(train, val, [0.70, 0.85, 0.905]), "accuracy", True, 0.5, 3, False)
    assert d.evidence["final_gap_share"] > 0.25 and d.evidence["gap_trend"] > 0
    assert d.verdict == "not converged" and any("more epochs" in a for a in d.advice)


def test_barely_beating_the_majority_class_is_underfitting():
    curve = [2.30, 2.29, 2.29, 2.28]
    d = diagnose(_curves(curve, curve, [0.14, 0.15, 0.16, 0.17]), "accuracy", True, 0.11, 4, False)
    assert d.verdict == "underfitting" and d.evidence["train_skill"] < 0.5
    assert any("capacity" in a for a in d.advice) and any("learning rate" in a for a in d.advice)


def test_regression_skill_is_measured_against_predicting_the_mean():
    d = diagnose({"loss": [0.9, 0.85], "val_loss": [0.9, 0.86], "rmse": [0.95, 0.92]}, "rmse", False, 1.0, 2, False)
    assert d.verdict == "underfitting" and math.isclose(d.evidence["train_skill"], 0.08, abs_tol=1e-3)


def test_noisy_labels_that_keep_the_training_skill_low_while_validation_pulls_away_are_overfitting():
    """MovieLens' curves (configs/movielens.yaml, seed 42): ratings are noisy, so training RMSE stays far from
    zero, but validation loss bottomed at epoch 5 and the gap widens: more capacity is the wrong advice."""
    loss = [0.9408, 0.7946, 0.7515, 0.7271, 0.7025, 0.6792, 0.6486, 0.6175, 0.5884]
    val = [0.8242, 0.8084, 0.8011, 0.7987, 0.7972, 0.8025, 0.8035, 0.8386, 0.8345]
    rmse = [0.9377, 0.8573, 0.8290, 0.8110, 0.7916, 0.7713, 0.7447, 0.7163, 0.6887]
    d = diagnose({"loss": loss, "val_loss": val, "rmse": rmse}, "rmse", False, 1.059, 40, True, augmentable=False)
    assert d.verdict == "overfitting" and d.evidence["train_skill"] < 0.5 and d.evidence["best_epoch"] == 5
    assert any("noise the features cannot explain" in r for r in d.reasons) and not any("capacity" in a for a in d.advice)


def test_still_falling_when_the_epochs_run_out_is_not_converged():
    val = [1.0 * 0.9**e for e in range(20)]
    d = diagnose(_curves([v * 0.95 for v in val], val, [0.9] * 20), "accuracy", True, 0.11, 20, False)
    assert d.verdict == "not converged" and d.evidence["val_fall_last_fifth"] > 0.01


def test_a_plateau_with_a_small_gap_is_a_good_fit():
    val = [1.0 * 0.7**e for e in range(8)] + [0.7**7] * 8
    d = diagnose(_curves([v * 0.9 for v in val], val, [0.99] * 16), "accuracy", True, 0.11, 60, True)
    assert d.verdict == "good fit" and d.tags()["fit.verdict"] == "good fit"


@pytest.mark.parametrize("overrides, verdict", [
    # 90 training images, a wide unregularised model, no early stopping: memorises, validation loss climbs.
    (["data.splits.train=train[:5%]", "model.width=32", "model.head_units=256", "model.dropout=0",
      "model.batch_norm=false", "regularization.kernel=none", "regularization.l2=0", "augment.layers=[]",
      "data.batch_size=16", "optimizer.learning_rate=0.01", "optimizer.schedule.name=constant", "train.epochs=40",
      "train.early_stopping.enabled=false"], "overfitting"),
    # A learning rate too small to move the weights in two epochs.
    (["optimizer.learning_rate=0.000001", "optimizer.schedule.name=constant", "model.batch_norm=false"], "underfitting"),
], ids=["overfit", "underfit"])
@pytest.mark.slow
def test_real_runs_made_to_overfit_and_underfit_are_named(tiny_cfg, overrides, verdict):
    from pipeline.jobs.train import train

    result = train(tiny_cfg("export.enabled=false", *overrides))
    assert result.diagnosis.verdict == verdict, result.diagnosis.markdown()


def test_tables_show_four_significant_digits_and_whole_counts():
    from pipeline.text import fmt

    assert [fmt(v) for v in (0.123456, "0.98765", 100004, 60.0, None, "overfitting")] == [
        "0.1235", "0.9877", "100004", "60", "-", "overfitting"]


@pytest.mark.parametrize("model, knobs", [("mlp", "model.width or model.depth"),
                                          ("recommender", "model.recommender.factors or model.recommender.tower")])
def test_advice_names_the_knobs_that_size_the_model_in_use(model, knobs):
    from types import SimpleNamespace

    import numpy as np

    from pipeline.config import load
    from pipeline.diagnose import diagnose_run

    history = {"loss": [1.0] * 6, "val_loss": [1.0] * 6, "rmse": [1.0] * 6}  # little better than the mean rating
    data = SimpleNamespace(train_columns={"rating": np.array([1.0, 3.0, 5.0])},
                           spec=SimpleNamespace(label="rating", features=()))
    found = diagnose_run(load(None, [f"model.name={model}"]), history, SimpleNamespace(metric_names=("rmse",)), data)
    assert found.verdict == "underfitting" and found.advice[0] == f"more capacity: raise {knobs}"
