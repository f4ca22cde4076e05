"""Every run beside its classical baselines: fitted on the training split, scored on the model's test examples."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

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
    """Prices that are a linear function of the area and the rooms, and a model trained for one epoch at a crawl
    (without the wide part, which would start as the linear fit)."""
    from pipeline.jobs.train import train

    work = tmp_path_factory.mktemp("linear")
    cfg = load(CSV, csv_overrides(work, tfds_dir, write_houses(work / "houses.csv", n=600),
                                  "train.baselines=auto", "optimizer.learning_rate=0.00001", "export.enabled=false",
                                  "model.wide=false"))
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
def test_baselines_can_be_chosen_turned_off_and_kept_to_a_budget(linear_houses, overrides, names, capsys,
                                                                  monkeypatch):
    """Also: from ANNOUNCED_ROWS training rows on, a line says which baselines are fitted, before the first epoch."""
    from pipeline import baselines
    from pipeline.data import dataset
    from pipeline.tasks import task_for

    monkeypatch.setattr(baselines, "ANNOUNCED_ROWS", 10)
    cfg, result = linear_houses
    cfg = load(CSV, [*csv_overrides(Path(cfg.workdir).parent, cfg.data.data_dir, cfg.data.path, "train.baselines=auto"),
                     *overrides])
    data = dataset.load(cfg)
    task = task_for(cfg, data.spec)
    found = baselines.fit(data, cfg, task).against(result.model, data, task)
    assert {k.split(".")[1] for k in found if k.startswith("baseline.")} == names
    err = capsys.readouterr().err
    assert ("fitting the baselines (" in err) == bool(names)
    if "seconds" in overrides[0]:
        assert "skipped: the baselines' budget" in err


def _said(verdict: str, low: float) -> Diagnosis:
    test = {"skill.ratio": low + 0.1, "skill.ratio_low": low, "skill.ratio_high": low + 0.2,
            "skill.best_baseline.linear": 1.0}
    return beaten(Diagnosis(verdict, reasons=["curves"], advice=["curve advice"]), test)


def test_the_verdict_names_a_winning_baseline_and_keeps_under_overfitting_and_not_converged():
    assert _said("good fit", 1.2).verdict == "baseline wins"
    for verdict in ("underfitting", "overfitting", "not converged"):  # a model still improving is not to shrink
        kept = _said(verdict, 1.2)
        assert kept.verdict == verdict and "linear baseline beats the model" in kept.reasons[-1]
        assert kept.advice[0] == "curve advice" and "baseline" in kept.advice[-1]
    assert _said("good fit", 0.95).verdict == "good fit"  # within noise of the baseline: no verdict of its own
    # Surely behind, but by under 1% of the error (a million test rows tell 0.1% apart): a tie, not a loss.
    tie = _said("good fit", 1.005)
    assert tie.verdict == "good fit" and tie.reasons[-1].startswith("against the baselines: test error 1.105x")
    assert _said("underfitting", 0.95).verdict == "underfitting"  # a linear model's match says nothing of capacity


def test_gradient_boosting_ahead_of_an_mlp_on_numbers_brings_the_advice_of_piecewise_bins():
    """Trees take a threshold at once: when they beat the MLP beyond noise, the advice names the bins (or the search),
    unless the model has them, has no numbers, or the winner is a linear model."""
    from pipeline.data.spec import DataSpec, Feature
    from pipeline.diagnose import THRESHOLDS, bins_may_help

    def advice(best: str, *overrides: str, kind: str = "numeric", verdict: str = "good fit") -> list[str]:
        test = {"skill.ratio": 1.2, "skill.ratio_low": 1.1, "skill.ratio_high": 1.3, f"skill.best_baseline.{best}": 1.0}
        spec = DataSpec("t", "1", {}, {}, "", (Feature("x", kind, "float32" if kind == "numeric" else "string"),), "y",
                        "regression", 0)
        curves = Diagnosis(verdict, reasons=["curves"], advice=["curve advice"])
        return beaten(curves, test, bins_may_help(load(CSV, list(overrides)), spec)).advice

    assert advice("gradient_boosting")[0] == THRESHOLDS and "features.piecewise_bins: 16" in THRESHOLDS
    assert advice("gradient_boosting", verdict="not converged")[:2] == ["curve advice", THRESHOLDS]  # then the baseline
    assert THRESHOLDS not in advice("linear")
    assert THRESHOLDS not in advice("gradient_boosting", "features.piecewise_bins=16")
    assert THRESHOLDS not in advice("gradient_boosting", kind="categorical")


def test_an_underfitting_model_that_gradient_boosting_does_not_beat_is_a_good_fit_on_noisy_labels():
    """Noisy labels (churn, clicks) keep every learner far from its training data: when a flexible baseline
    fitted on the same rows does no better, more capacity is not the advice."""
    test = {"skill.ratio": 0.999, "skill.ratio_low": 0.99, "skill.ratio_high": 1.007,
            "skill.best_baseline.gradient_boosting": 1.0, "baseline.gradient_boosting.accuracy": 0.7691}
    found = beaten(Diagnosis("underfitting", reasons=["curves"], advice=["more capacity"]), test)
    assert found.verdict == "good fit" and "noise in the labels" in found.reasons[-1]
    assert "more capacity" not in found.advice
    beaten_by_it = beaten(Diagnosis("underfitting", reasons=["curves"], advice=["more capacity"]),
                          {**test, "skill.ratio": 1.1, "skill.ratio_low": 1.05, "skill.ratio_high": 1.15})
    assert beaten_by_it.verdict == "underfitting" and beaten_by_it.advice[0] == "more capacity"
    ahead_within_noise = beaten(Diagnosis("underfitting", reasons=["curves"], advice=["more capacity"]),
                                {**test, "skill.ratio": 1.227, "skill.ratio_low": 1.0, "skill.ratio_high": 1.404})
    assert ahead_within_noise.verdict == "underfitting" and ahead_within_noise.advice == ["more capacity"]
    assert ahead_within_noise.reasons[-1].startswith("against the baselines: test error 1.227x")


def test_a_baseline_that_cannot_fit_is_skipped_with_its_reason_and_the_run_goes_on(tmp_path, tfds_dir, capsys):
    """One training row: logistic regression refuses a single class; the majority class does not mind."""
    from pipeline.jobs.train import train

    path = write_houses(tmp_path / "houses.csv", n=90)
    cfg = load(CSV, csv_overrides(tmp_path, tfds_dir, path, "data.label_key=city", "train.baselines=auto",
                                  "train.baselines_rows=1", "export.enabled=false"))
    result = train(cfg)
    err = capsys.readouterr().err
    assert "note: baseline linear skipped: This solver needs samples of at least 2 classes" in err
    assert "baseline.majority.accuracy" in result.test_metrics and result.export_path is None
    assert not any(k.startswith("baseline.linear") for k in result.test_metrics)


def test_a_solver_stopped_before_converging_is_one_note_and_its_figure_still_counts(tmp_path, tfds_dir, capsys,
                                                                                     monkeypatch):
    from pipeline import design
    from pipeline.jobs.train import train

    monkeypatch.setattr(design, "LOGISTIC_ITERATIONS", 1)
    path = write_houses(tmp_path / "houses.csv", n=90)
    result = train(load(CSV, csv_overrides(tmp_path, tfds_dir, path, "data.label_key=city", "train.baselines=auto",
                                           "train.epochs=1", "export.enabled=false")))
    err = capsys.readouterr().err
    assert err.count("note: baseline linear stopped at its solver's iteration limit before converging") == 1
    assert "ConvergenceWarning" not in err and "Increase the number of iterations" not in err  # scikit-learn's advice
    assert "baseline.linear.accuracy" in result.test_metrics


def test_text_categories_outside_ascii_are_one_hot_columns_of_the_baselines():
    """Cities such as Köln or Zürich arrive as UTF-8 bytes; the baselines read them as text, not as ASCII."""
    import numpy as np

    from pipeline import baselines
    from pipeline.data.spec import DataSpec, Feature
    from pipeline.design import Design

    rng = np.random.default_rng(0)
    city = rng.choice(["Köln", "Zürich", "Ulm"], 600)
    columns = {"city": np.array([c.encode() for c in city], dtype=object)}
    y = (city == "Köln").astype(np.int64)
    spec = DataSpec("t", "1", {}, {}, "", (Feature("city", "categorical", "string"),), "y", "classification", 2)
    design = Design(spec, columns, images=True)
    assert sorted(design.parts[0][2].tolist()) == ["Köln", "Ulm", "Zürich"]
    assert (design(columns).sum(axis=1) == 1).all()  # every row in its city's column
    for name in ("linear", "gradient_boosting"):  # the label is the city: both get every row right
        assert (baselines.BASELINES[name].fit(columns, y, spec, load(None, []))(columns) == y).all()


def test_an_empty_column_is_left_out_of_the_baselines_design_and_boosting_still_fits(recwarn):
    """A column with no value in any training row (an export's unused field) once made gradient boosting
    skip with numpy's "window shape cannot be larger than input array shape", and the mean warn."""
    import numpy as np

    from pipeline import baselines
    from pipeline.data.spec import DataSpec, Feature
    from pipeline.design import Design

    rng = np.random.default_rng(0)
    area = rng.uniform(30, 200, 600).astype(np.float32)
    columns = {"area": area, "unused": np.full(600, np.nan, np.float32)}
    y = 1000.0 * area
    spec = DataSpec("t", "1", {}, {}, "", (Feature("area", "numeric", "float32"), Feature("unused", "numeric", "float32")),
                    "y", "regression")
    assert [name for name, _, _ in Design(spec, columns, images=False).parts] == ["area"]
    for name in ("linear", "gradient_boosting"):
        predicted = baselines.BASELINES[name].fit(columns, y, spec, load(None, []))(columns)
        assert np.sqrt(np.mean((predicted - y) ** 2)) < 0.05 * y.std(), name
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    for images in (False, True):  # boosting's design, the linear model's
        with pytest.raises(ValueError, match=r"^every feature column is empty in the training rows \(area, unused\)$"):
            Design(spec, {"area": columns["unused"], "unused": columns["unused"]}, images=images)


def test_the_pixel_baseline_takes_as_many_images_as_its_pixel_budget_holds_not_none(trained, monkeypatch):
    """A folder of 100,000 pictures is over the budget whole: the linear model on pixels fits its first images."""
    from pipeline import baselines
    from pipeline.data import dataset

    cfg, _ = trained
    monkeypatch.setattr(baselines, "MAX_PIXELS", 100 * 64)  # a hundred of digits' 8x8 images
    columns, labels = baselines._train_rows(cfg, dataset.load(cfg))
    assert len(labels) == 100 and columns["image"].shape == (100, 8, 8, 1)


@pytest.mark.parametrize("kinds, chosen", [
    (("audio",), ["majority"]),  # no note on every speech run: a waveform is no design for either model
    (("image",), ["majority", "linear"]),  # pixels, but no table for boosting
    (("numeric", "categorical"), ["majority", "linear", "gradient_boosting"]),
])
def test_a_baseline_is_chosen_only_for_data_with_a_feature_it_reads(kinds, chosen):
    from pipeline import baselines
    from pipeline.data.spec import DataSpec, Feature

    features = tuple(Feature(f"f{i}", kind, "float32") for i, kind in enumerate(kinds))
    spec = DataSpec("t", "1", {}, {}, "", features, "y", "classification", 2)
    assert baselines._chosen(load(None, []), spec) == chosen


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_the_linear_baseline_on_one_hot_columns_keeps_them_sparse_and_fits_as_the_centred_design(task):
    """Scaled, not centred, the one-hot columns stay zeros: a CSR design whose ridge fit (its covariance
    route) is the centred one's, in a fraction of the memory (no dense copy of the rows). Numbers alone stay dense."""
    import numpy as np
    from scipy import sparse as sp
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pipeline import baselines
    from pipeline.data.spec import DataSpec, Feature
    from pipeline.design import Design, linear_model, row_blocks, stacked

    rng = np.random.default_rng(0)
    n = 3000
    columns = {"x": rng.normal(size=n).astype(np.float32),
               "city": rng.choice([b"oslo", b"rome", b"lima", b"kyiv"], n).astype(object)}
    y = 2 * columns["x"] + (columns["city"] == b"rome") + rng.normal(0, 0.3, n)
    y = (y > np.median(y)).astype(np.int64) if task == "classification" else y
    spec = DataSpec("t", "1", {}, {}, "", (Feature("x", "numeric", "float32"), Feature("city", "categorical", "string")),
                    "y", task)
    design = Design(spec, columns, images=True)
    matrix = stacked(design(rows) for rows in row_blocks(columns, size=1000))
    assert sp.issparse(matrix) and matrix.shape == (n, 5) and matrix.nnz == 2 * n  # x and one city per row
    numbers = stacked(design(rows)[:, :1] for rows in row_blocks(columns, size=1000))
    assert not sp.issparse(numbers) and numbers.shape == (n, 1)  # no zeros to skip: stays dense

    predict = baselines.BASELINES["linear"].fit(columns, y, spec, None)
    centred = make_pipeline(StandardScaler(), linear_model(task, design(columns).shape)).fit(design(columns), y)
    if task == "regression":
        np.testing.assert_allclose(predict(columns), centred.predict(design(columns)), rtol=1e-9, atol=1e-9)
    else:
        assert (predict(columns) != centred.predict(design(columns))).mean() < 0.002


def test_the_logistic_regression_chooses_its_penalty_unless_a_class_is_too_rare_for_its_folds():
    """A threshold the classes sit on either side of wants a weak penalty: at scikit-learn's default C=1 the
    linear baseline (and a wide model's start) would be worse than a linear model can be."""
    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV

    from pipeline.design import CS, linear_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2))
    y = (x[:, 0] > 0).astype(np.int64)  # separable: the best C is the largest offered
    fit = linear_model("classification", x.shape, y).fit(x, y)
    assert isinstance(fit, LogisticRegressionCV) and fit.C_ == CS.max() > 1
    assert np.mean(fit.predict(x) == y) > 0.99
    rare = np.r_[y[:-2], 2, 2]  # a third class of two rows cannot be in each of three folds
    assert not isinstance(linear_model("classification", x.shape, rare), LogisticRegressionCV)


@pytest.mark.slow  # a 60,000-row design, fitted four times
def test_on_large_designs_ridge_and_boosting_hold_out_rows_without_another_copy_of_the_design(monkeypatch):
    """Past LOO_VALUES design values ridge chooses its alpha on a held-out fifth (leave-one-out holds a rows x
    columns product per alpha), and boosting's early stopping gets a split made from the columns, not a copy
    of the dense design: the same fits within noise, in a fraction of the memory."""
    import tracemalloc

    import numpy as np
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV

    from pipeline import baselines
    from pipeline import design as design_module
    from pipeline.data.spec import DataSpec, Feature
    from pipeline.design import Design, linear_model

    rng = np.random.default_rng(0)
    n, cities = 60_000, np.array([f"c{i}".encode() for i in range(50)], dtype=object)
    columns = {"x": rng.normal(size=n).astype(np.float32), "city": cities[rng.integers(0, 50, n)]}
    y = 2 * columns["x"] + (columns["city"] == b"c1") + rng.normal(0, 0.3, n)
    spec = DataSpec("t", "1", {}, {}, "", (Feature("x", "numeric", "float32"), Feature("city", "categorical", "string")),
                    "y", "regression")
    test = {k: v[-5000:] for k, v in columns.items()}
    train, labels, truth = {k: v[:-5000] for k, v in columns.items()}, y[:-5000], y[-5000:]
    rmse = lambda guess: float(np.sqrt(np.mean((guess - truth) ** 2)))  # noqa: E731
    cfg = SimpleNamespace(seed=0)

    assert linear_model("regression", (1000, 51)).cv is None  # small: leave-one-out
    monkeypatch.setattr(design_module, "LOO_VALUES", 10_000)
    held_out = rmse(baselines.BASELINES["linear"].fit(train, labels, spec, cfg)(test))
    design = Design(spec, train, images=False, fill=False)
    loo = RidgeCV(alphas=design_module.ALPHAS).fit(design(train), labels)
    assert held_out == pytest.approx(rmse(loo.predict(design(test))), rel=0.002)

    dense = design(train).nbytes
    tracemalloc.start()
    guess = baselines.BASELINES["gradient_boosting"].fit(train, labels, spec, cfg)(test)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * dense, peak / dense  # 6.5 times with scikit-learn's own split of the design
    own = HistGradientBoostingRegressor(random_state=0).fit(design(train), labels).predict(design(test))
    assert rmse(guess) == pytest.approx(rmse(own), rel=0.02)

    stopped = []  # just past scikit-learn's threshold, its held-out tenth leaves fewer rows than that: still on
    fit = HistGradientBoostingRegressor.fit
    monkeypatch.setattr(HistGradientBoostingRegressor, "fit", lambda self, *a, **k: stopped.append(
        fit(self, *a, **k).do_early_stopping_) or self)
    rows = baselines.EARLY_STOPPING_ROWS + 500
    baselines.BASELINES["gradient_boosting"].fit({k: v[:rows] for k, v in train.items()}, labels[:rows], spec, cfg)
    assert stopped == [True]


def test_the_skill_interval_resamples_blocks_of_examples_the_same_for_every_baseline():
    import numpy as np

    from pipeline.skill import Errors, skill

    rng = np.random.default_rng(1)
    model = rng.normal(1.0, 0.1, 2000) ** 2
    noisy = model * rng.uniform(0.5, 2.5, 2000)
    errors = Errors({"mse": {"model": model, "same": model.copy(), "worse": model * 2, "noisy": noisy}}, "rmse",
                    horizon=1)
    figures = skill(errors, resamples=200, seed=3)
    assert figures["skill.best_baseline.same"] == 1.0
    # the same resamples for both baselines: against an identical one the ratio never moves
    assert figures["skill.vs_same_low"] == figures["skill.vs_same_high"] == 1.0
    assert figures["skill.vs_worse_low"] == figures["skill.vs_worse_high"] == pytest.approx(2 ** -0.5)
    assert figures["skill.vs_noisy_low"] < figures["skill.vs_noisy"] < figures["skill.vs_noisy_high"] < 1
    assert skill(errors, resamples=200, seed=3) == figures  # seeded
    perfect = Errors({"mae": {"model": np.zeros(50), "boosting": np.zeros(50)}}, "mae", horizon=1)
    assert skill(perfect, resamples=20, seed=3)["skill.ratio"] == 1.0  # a tie without an error, not a ratio of 0
    # one mistake each, on different examples: a resample without the baseline's has no bound, said as such
    apart = Errors({"mae": {"model": np.eye(1, 90, 3)[0], "linear": np.eye(1, 90, 7)[0]}}, "mae", horizon=1)
    found = skill(apart, resamples=200, seed=3)
    assert found["skill.ratio"] == 1.0 and found["skill.ratio_low"] == 0.0 and found["skill.ratio_high"] == np.inf
    from pipeline.diagnose import Diagnosis, beaten
    said = beaten(Diagnosis("good fit", {}, [], []), found).reasons[-1]
    assert said.endswith("test error 1.000x that of linear (95% interval 0.000 to inf)"), said
    flawless = Errors({"mae": {"model": np.eye(1, 90, 3)[0], "linear": np.zeros(90)}}, "mae", horizon=1)
    said = beaten(Diagnosis("good fit", {}, [], []), skill(flawless, resamples=200, seed=3)).reasons[-1]
    assert said.endswith("test error above 0 where linear's is 0 (95% interval 1.000 to inf)"), said

    # three test windows of a 12-step horizon: blocks of a horizon would be one block, resampled alike
    short = Errors({"mae": {"model": np.array([1.0, 2.0, 4.0]), "naive": np.array([2.0, 2.0, 2.0])}}, "mae",
                   horizon=12)
    figures = skill(short, resamples=200, seed=3)
    assert figures["skill.ratio_low"] < figures["skill.ratio"] < figures["skill.ratio_high"]  # not a width of 0


def test_the_summary_sets_a_share_beside_a_baselines_in_points_and_an_error_in_percent():
    from pipeline.report.summary import _beside_baselines

    said = _beside_baselines({"test_accuracy": 0.9777, "baseline.majority.accuracy": 0.078,
                              "test_rmse": 0.3, "baseline.mean.rmse": 2.5})
    assert said == {"majority": "accuracy 0.0780 (model 0.9777, +90.0 points)",  # not +1153.5%
                    "mean": "rmse 2.5000 (model 0.3000, -88.0%)"}
    tie = _beside_baselines({"test_accuracy": 0.7857142857, "baseline.linear.accuracy": 0.78571430,
                             "test_rmse": 0.3, "baseline.linear.rmse": 0.30000001})
    assert tie == {"linear": "accuracy 0.7857 (model 0.7857, +0.0 points); rmse 0.3000 (model 0.3000, +0.0%)"}
