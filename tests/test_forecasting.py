"""Forecasting: windows cut right, split by time without leakage, honest baselines, a skill verdict that can say no.

The series here are built to show one thing each: a pure seasonal signal (the seasonal-naive
baseline is exact), a random walk (nothing beats the last value), and a series whose target
depends on a known covariate non-linearly (a network beats every baseline, ridge included).
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load
from pipeline.errors import ConfigError, DataError
from tests.conftest import series_cfg, write_series

ELECTRICITY = "configs/electricity.yaml"


# ---- windows -----------------------------------------------------------------------------------


def _series(n=100, **extra):
    from pipeline.data.series import _concatenate

    cfg = load(None, ["data.dataset=series", "data.label_key=y", "model.name=mlp", "forecast.input_window=5", "forecast.horizon=3",
                      "forecast.stride=2", "forecast.validation=0.2", "forecast.test=0.2",
                      *[f"{k}={v}" for k, v in extra.items()]])
    y = np.arange(n, dtype=np.float64) + 1.0
    return cfg, _concatenate([(None, np.arange(n, dtype=np.int64) * 60, {"y": y})], cfg)


def test_windows_cover_each_split_from_its_first_label_to_its_last_with_the_stride():
    from pipeline.data.windows import starts, window_arrays

    cfg, s = _series()
    assert s.segments[0].bounds == {"train": (5, 60), "validation": (60, 80), "test": (80, 100)}
    train, test = starts(s, cfg, "train"), starts(s, cfg, "test")
    assert train[0] == 0 and train[1] == 2  # the stride, in training only
    assert train[-1] + 5 + 3 <= 60 < train[-1] + 2 + 5 + 3  # the last window whose labels end in the split
    assert test[0] + 5 == 80 and test[-1] + 5 + 3 == 100 and np.all(np.diff(test) == 1)
    features, labels = window_arrays(s, cfg, test[:1])
    np.testing.assert_array_equal(features["y"][0], [76, 77, 78, 79, 80])  # inputs reach back into validation
    np.testing.assert_array_equal(labels[0], [81, 82, 83])


def test_tf_data_windows_equal_the_numpy_ones_for_every_target_transform():
    from pipeline.data.windows import dataset, starts, window_arrays

    for how in ("level", "difference", "log_return"):
        cfg, s = _series(**{"forecast.target_transform": how})
        ds, n = dataset(s, cfg, "validation")
        got = list(ds.as_numpy_iterator())
        features, labels = window_arrays(s, cfg, starts(s, cfg, "validation"))
        assert n == len(got) == len(labels) == int(ds.cardinality())  # known: Keras' evaluation counts on it
        np.testing.assert_allclose(np.stack([x["y"] for x, _ in got]), features["y"], rtol=1e-6)
        np.testing.assert_allclose(np.stack([y for _, y in got]), labels, rtol=1e-4, atol=1e-6)
    assert labels[0, 0] == pytest.approx(np.log(61 / 60))  # inputs 56..60, so the log return of 61 from 60


def test_seasonal_naive_is_exact_on_a_pure_seasonal_signal_and_naive_on_a_constant():
    from pipeline.data.windows import starts, window_arrays
    from pipeline.forecast import baselines

    cfg, s = _series(n=400, **{"forecast.seasonality": "[7]", "forecast.input_window": 10})
    s.columns["y"] = 5 + np.sin(2 * np.pi * np.arange(400) / 7)
    at = starts(s, cfg, "test")
    features, truth = window_arrays(s, cfg, at)
    found = baselines(s, cfg, at, features, {})
    assert np.abs(found["seasonal_naive_7"] - truth).max() < 1e-12
    assert np.abs(found["naive"] - truth).max() > 0.5


def test_several_series_are_split_each_on_its_own_and_no_window_crosses_two(tmp_path, tfds_dir):
    from pipeline.data import dataset
    from pipeline.data.windows import starts, window_arrays
    from pipeline.models import build_model

    one, two = write_series(tmp_path / "a.csv", steps=300), write_series(tmp_path / "b.csv", steps=200, walk=True)
    north = [f"north,{line}" for line in one.read_text().splitlines()[1:]]
    south = [f"south,{line}" for line in two.read_text().splitlines()[1:]]
    rows = [row for pair in zip(north, south) for row in pair] + north[len(south):]  # interleaved, each in order
    path = tmp_path / "both.csv"
    path.write_text("region,time,load,temp\n" + "\n".join(rows) + "\n")
    cfg = series_cfg(tmp_path / "work", tfds_dir, path, "forecast.series_id=region")
    data = dataset.load(cfg)
    s = data.series
    assert [(seg.key, seg.end - seg.start) for seg in s.segments] == [(b"north", 300), (b"south", 200)]
    assert [seg.bounds["test"] for seg in s.segments] == [(270, 300), (480, 500)]  # each its own last 10%
    features, _ = window_arrays(s, cfg, starts(s, cfg, "train"))
    steps = np.diff(features["time"], axis=1)
    assert (steps == 3600).all()  # consecutive hours: no window runs from one series into the next
    assert set(features["region"]) == {b"north", b"south"}
    assert data.spec.sizes["test"] == (30 - 6 + 1) + (20 - 6 + 1)
    model = build_model(cfg, data.spec, data.train_columns)
    batch, _ = next(iter(data.test))
    assert model(batch).shape == (len(batch["load"]), 6) and "region" in model.input


def test_a_series_too_short_for_the_splits_is_left_out_with_a_note_and_none_long_enough_is_one_line(tmp_path,
                                                                                                  tfds_dir):
    """A panel of stores holds stores opened last month: the run trains on the others and says which it left."""
    from pipeline.data import dataset

    lines = write_series(tmp_path / "a.csv", steps=300).read_text().splitlines()[1:]
    rows = [f"north,{line}" for line in lines] + [f"new,{line}" for line in lines[:40]]
    path = tmp_path / "stores.csv"
    path.write_text("store,time,load,temp\n" + "\n".join(rows) + "\n")
    s = dataset.load(series_cfg(tmp_path / "work", tfds_dir, path, "forecast.series_id=store")).series
    assert [(seg.key, seg.end - seg.start) for seg in s.segments] == [(b"north", 300)]
    assert s.notes() == ["1 of 2 series (`forecast.series_id`) is too short for the input window and the horizon in "
                         "each split and was left out: 'new' (40 steps)"]

    path.write_text("store,time,load,temp\n" + "\n".join(rows[300:] + [f"old,{line}" for line in lines[:50]]) + "\n")
    with pytest.raises(DataError, match=r"^None of the 2 series is long enough for the splits; series 'new' "
                                        r"\(`forecast.series_id`\): The test window \(4 steps"):
        dataset.load(series_cfg(tmp_path / "work2", tfds_dir, path, "forecast.series_id=store"))


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("forecast.horizon=0", "forecast.horizon"),
    ("data.splits.test=train[:10%]", "split by time only"),
    ("data.time_split.column=time", "split by time only"),
    ("model.name=cnn", "`model.name` cnn does not forecast"),
])
def test_config_mistakes_are_refused_before_anything_runs(override, message):
    with pytest.raises(ConfigError, match=message):
        load(ELECTRICITY, [override])


def test_sequence_models_need_a_series():
    with pytest.raises(ConfigError, match="`model.name` lstm forecasts a series: add a `forecast` section"):
        load(None, ["model.name=lstm"])


@pytest.mark.parametrize("rows, message", [
    ([(0, 1.0), (3600, 2.0), (3600, 3.0), (7200, 4.0)], "duplicate timestamps: 3600"),
    ([(0, 1.0), (7200, 2.0), (3600, 3.0), (10800, 4.0)], "not in time order: 3600 at row 3 of the file"),
    ([(0, 1.0), (3600, float("nan")), (7200, 3.0), (10800, 4.0)], "line 3, column 'load': the label is missing"),
    ([(0, 1.0), (3600, 2.0), (14400, 3.0), (18000, 4.0)], "gaps in `time`.*3600 to 14400"),
    # decimal years (R's time()): truncated, they were duplicates; a missing time was a time too
    ([(1749.0, 1.0), (1749.0833, 2.0), (1749.1667, 3.0), (1749.25, 4.0)],
     r"line 3, column 'time' is '1749.0833', but it holds a series' time \(`forecast.time`\): whole epoch seconds, or "
     r"ISO 8601 dates \(convert decimal years to dates\)"),
    ([(0, 1.0), (3600, 2.0), ("", 3.0), (10800, 4.0)], "line 4, column 'time' is empty, but it holds a series' time"),
    # dates with a zone, as databases and JSON logs write them: in UTC, and named as dates
    ([("2024-03-01T00:00:00Z", 1.0), ("2024-03-01T01:00:00.000Z", 2.0), ("2024-03-01T04:00:00Z", 3.0),
      ("2024-03-01T05:00:00Z", 4.0)], r"gaps in `time` \(its step is 3600 s\): the first from 2024-03-01T01:00:00 to "
                                      "2024-03-01T04:00:00 "),
    ([("2024-03-01T00:00:00Z", 1.0), ("2024-03-01T02:00:00+01:00", 2.0), ("2024-03-01T01:00:00Z", 3.0),
      ("2024-03-01T02:00:00Z", 4.0)], "duplicate timestamps: 2024-03-01T01:00:00 at steps 2 and 3"),
    # a spreadsheet's month-first dates, and zones for some times only: the value, or the zones, at fault
    ([("2024-03-01", 1.0), ("2024-03-02", 2.0), ("03/03/2024", 3.0), ("2024-03-04", 4.0)],
     r"time column 'time' \(`forecast.time`\) holds '03/03/2024', which is no ISO 8601 date or time \(2024-01-05, "),
    ([("2024-03-01T00:00:00Z", 1.0), ("2024-03-01T01:00:00", 2.0), ("2024-03-01T02:00:00Z", 3.0),
      ("2024-03-01T03:00:00Z", 4.0)], r"gives a zone \(Z, \+01:00\) for some of its ISO 8601 times and none for others"),
    ([("2024-03-01", 1.0), ("", 2.0), ("2024-03-03", 3.0), ("2024-03-04", 4.0)],
     r"time column 'time' \(`forecast.time`\) has an empty cell, but every step of a series needs its time$"),
])
def test_a_bad_series_is_one_line_naming_the_column(tmp_path, tfds_dir, rows, message):
    from pipeline.data import dataset

    path = tmp_path / "bad.csv"
    body = [f"{t},{'' if np.isnan(v) else v},{v}" for t, v in rows]
    path.write_text("time,load,temp\n" + "\n".join(body) + "\n")
    cfg = series_cfg(tmp_path / "work", tfds_dir, path, "forecast.input_window=1", "forecast.horizon=1",
                     "forecast.validation=0.25", "forecast.test=0.25")
    with pytest.raises(DataError, match=message) as info:
        dataset.load(cfg)
    assert "\n" not in str(info.value)


def test_calendar_features_refuse_a_time_column_of_milliseconds(tmp_path, tfds_dir):
    """Read as seconds they give every hour a meaningless time of day, and nothing else would say so."""
    from pipeline.data import dataset

    path = tmp_path / "ms.csv"
    hours = 1_700_000_000 + 3600 * np.arange(200)
    path.write_text("time,load,temp\n" + "".join(f"{t * 1000},{i % 24},1.0\n" for i, t in enumerate(hours)))
    with pytest.raises(DataError, match=r"`forecast.calendar` reads `time` as epoch seconds, but it holds "
                                        r"1700716400000, past the year 3000 in seconds: milliseconds\? divide them"):
        dataset.load(series_cfg(tmp_path / "work", tfds_dir, path))


@pytest.mark.parametrize("overrides, message", [
    (["data.label_key=state"], r"the target 'state' \(`data.label_key`\) holds text; a series forecasts a number"),
    (["forecast.past_covariates=[state]"], r"Invalid `forecast.past_covariates`: 'state' holds text; a series' "
                                           r"inputs are numbers"),
    (["data.exclude=[stat]"], r"^Invalid `data.exclude`: 'stat' is not a feature of series; it has time, load, temp, "
                              r"state\.$"),  # the builder's own row column is not offered
])
def test_text_or_a_column_the_series_lacks_is_refused_in_one_line(tmp_path, tfds_dir, overrides, message):
    from pipeline.data import dataset

    path = tmp_path / "states.csv"
    path.write_text("time,load,temp,state\n" + "".join(f"{3600 * i},{i % 5},1.0,{'on' if i % 2 else 'off'}\n"
                                                         for i in range(60)))
    with pytest.raises(DataError, match=message):
        dataset.load(series_cfg(tmp_path / "work", tfds_dir, path, "forecast.input_window=3", "forecast.horizon=1",
                                "forecast.seasonality=[2]", "forecast.known_covariates=[]", *overrides))


def test_skipped_rows_of_a_series_are_counted_as_a_tables_are(tmp_path, tfds_dir):
    from pipeline.data import dataset

    path = write_series(tmp_path / "s.csv", steps=500)
    lines = path.read_text().splitlines()
    lines[100] = lines[100].split(",")[0] + ",," + lines[100].split(",")[2]  # no target at one step
    path.write_text("\n".join(lines) + "\n")
    cfg = series_cfg(tmp_path / "work", tfds_dir, path, "data.on_bad_input=skip", "forecast.gaps=fill")
    assert dataset.load(cfg).spec.skipped == 1  # the run's warning and data.skipped come from it


@pytest.mark.parametrize("overrides, message", [
    (["forecast.input_window=400"], "input_window.*longer than the training split"),
    (["forecast.horizon=30", "forecast.test=0.01"], "test window .* shorter than `forecast.horizon`"),
])
def test_windows_that_do_not_fit_the_splits_are_refused(tmp_path, tfds_dir, overrides, message):
    from pipeline.data import dataset

    path = write_series(tmp_path / "s.csv", steps=500)
    with pytest.raises(DataError, match=message):
        dataset.load(series_cfg(tmp_path / "work", tfds_dir, path, *overrides))


def test_gaps_can_be_filled_forward_on_the_series_step(tmp_path, tfds_dir):
    import tensorflow as tf

    from pipeline.data.series import read

    cfg = series_cfg(tmp_path, tfds_dir, tmp_path / "x.csv", "forecast.gaps=fill", "forecast.input_window=1",
                     "forecast.horizon=1", "forecast.validation=0.2", "forecast.test=0.2")
    times = [0, 3600, 10800, 14400, 18000, 21600, 25200, 28800, 32400]
    ds = tf.data.Dataset.from_tensor_slices({"time": np.array(times, np.int64),
                                             "load": np.arange(9, dtype=np.float32), "temp": np.zeros(9, np.float32)})
    s = read(ds, cfg)
    np.testing.assert_array_equal(s.time[:4], [0, 3600, 7200, 10800])
    np.testing.assert_array_equal(s.columns["load"][:4], [0, 1, 1, 2])
    assert s.notes() == ["`forecast.gaps: fill` carried the row before each gap forward into 1 missing step"]


def _monthly(tmp_path, tfds_dir, dates: list[str], *extra: str):
    """A series of the given dates (one per row) read through ``series.read`` as dates."""
    import tensorflow as tf

    from pipeline.data.series import read

    cfg = series_cfg(tmp_path, tfds_dir, tmp_path / "x.csv", "forecast.input_window=1", "forecast.horizon=1",
                     "forecast.validation=0.2", "forecast.test=0.2", *extra)
    n = len(dates)
    seconds = np.array(dates, dtype="datetime64[s]").astype(np.int64)
    ds = tf.data.Dataset.from_tensor_slices({"time": seconds, "load": np.arange(n, dtype=np.float32),
                                             "temp": np.zeros(n, np.float32)})
    s = read(ds, cfg, dates=True)
    return [str(t) for t in s.time.astype("datetime64[s]")], s.columns["load"].tolist()


def test_monthly_quarterly_and_month_end_series_step_in_calendar_months(tmp_path, tfds_dir):
    """Months last 28 to 31 days: a monthly series is regular all the same, and its gaps count in months."""
    months = [f"2023-{m:02d}-01" for m in range(1, 13)]
    assert _monthly(tmp_path, tfds_dir, months)[0][:3] == ["2023-01-01T00:00:00", "2023-02-01T00:00:00",
                                                           "2023-03-01T00:00:00"]
    quarters = [f"{y}-{m:02d}-15T09:30:00" for y in (2021, 2022, 2023) for m in (1, 4, 7, 10)]
    assert len(_monthly(tmp_path, tfds_dir, quarters)[0]) == 12
    ends = ["2023-01-31", "2023-02-28", "2023-03-31", "2023-04-30", "2023-06-30", "2023-07-31", "2023-08-31",
            "2023-09-30", "2023-10-31", "2023-11-30", "2023-12-31"]  # May is missing
    with pytest.raises(DataError, match=r"1 gaps in `time` \(its step is 1 month\): the first from "
                                        r"2023-04-30T00:00:00 to 2023-06-30T00:00:00"):
        _monthly(tmp_path, tfds_dir, ends)
    times, load = _monthly(tmp_path, tfds_dir, ends, "forecast.gaps=fill")
    assert times[3:6] == ["2023-04-30T00:00:00", "2023-05-31T00:00:00", "2023-06-30T00:00:00"]  # May's end, filled
    assert load[3:6] == [3.0, 3.0, 4.0]  # with April's row carried forward


# ---- statistics from the past only ------------------------------------------------------------------


def test_normalisation_and_baselines_see_the_training_stretch_only(tmp_path, tfds_dir):
    """The test stretch is shifted by +1000: no statistic the model is built from may move."""
    from pipeline.data import dataset
    from pipeline.models import build_model

    plain = write_series(tmp_path / "plain.csv", steps=600)
    shifted = write_series(tmp_path / "shifted.csv", steps=600, shift_after=540)
    built = {}
    for name, path in (("plain", plain), ("shifted", shifted)):
        cfg = series_cfg(tmp_path / name, tfds_dir, path)
        data = dataset.load(cfg)
        assert data.train_columns["load"].max() < 100  # statistics' windows: training stretch only
        model = build_model(cfg, data.spec, data.train_columns)
        built[name] = {w.path: w.numpy() for w in model.weights if "normalize" in w.path or "forecast" in w.path}
    assert built["plain"].keys() == built["shifted"].keys() and built["plain"]
    for key, value in built["plain"].items():
        if "kernel" not in key and "bias" not in key:  # fixed statistics, not initialised weights
            np.testing.assert_allclose(built["shifted"][key], value, rtol=1e-6, err_msg=key)


# ---- training: skill, no skill, backtest -------------------------------------------------------------


@pytest.mark.slow
def test_a_learnable_series_gets_a_skill_verdict_against_every_baseline(forecast_run):
    cfg, result = forecast_run
    m = result.test_metrics
    assert m["test_mae"] < 0.7 * min(m["baseline.naive.mae"], m["baseline.seasonal_naive_24.mae"])
    assert m["test_mae"] < m["baseline.ridge.mae"]
    assert m["skill.ratio_high"] < 1 and "skill.best_baseline.ridge" in m
    assert result.diagnosis.verdict != "no skill"
    assert 0 < m["test_smape"] < 0.2 and 0 < m["test_mase"] < 1


@pytest.mark.parametrize("folds", [0, -2])
def test_a_backtest_of_no_folds_is_refused_before_any_run(tmp_path, tfds_dir, folds):
    from pipeline.errors import ConfigError
    from pipeline.jobs.backtest import backtest

    cfg = series_cfg(tmp_path / "work", tfds_dir, write_series(tmp_path / "s.csv", steps=300))
    with pytest.raises(ConfigError, match=rf"^Invalid number of folds \(--folds\): {folds}; a backtest needs at least 1$"):
        backtest(cfg, folds=folds)  # 0 was taken as "the default" and ran five


@pytest.mark.slow
def test_a_random_walk_gets_no_skill_and_a_backtest_nests_its_folds(tmp_path, tfds_dir):
    from mlflow import MlflowClient

    from pipeline.jobs.backtest import backtest

    path = write_series(tmp_path / "walk.csv", steps=900, walk=True)
    cfg = series_cfg(tmp_path / "work", tfds_dir, path, "forecast.target_transform=difference",
                     "forecast.known_covariates=[]", "forecast.calendar=[]", "forecast.test=0.15", "train.epochs=8")
    outcome = backtest(cfg, folds=2)
    assert outcome.verdict == "no skill", outcome.reason
    assert [r["fold"] for r in outcome.rows] == [1, 2, "pooled"]
    assert outcome.rows[-1]["windows"] == outcome.rows[0]["windows"] + outcome.rows[1]["windows"]
    client = MlflowClient(cfg.tracking.uri)
    children = client.search_runs([client.get_experiment_by_name("demand").experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'")
    assert sorted(r.data.tags["backtest.fold"] for r in children) == ["1", "2"]
    assert all(r.info.status == "FINISHED" and r.data.tags["fit.verdict"] == "no skill" for r in children)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.tags["backtest.verdict"] == "no skill"
    assert parent.data.metrics["pooled.skill.ratio_high"] >= 1
    assert "| pooled |" in outcome.table.read_text()


# ---- the skill verdict ---------------------------------------------------------------------------


def _errors(model_scale: float, noise: float, n: int = 400):
    from pipeline.skill import Errors

    rng = np.random.default_rng(0)
    base = rng.gamma(2.0, 1.0, n)
    model = base * model_scale * (1 + rng.normal(0, noise, n)).clip(0.01)
    figures = {"mae": {"model": model, "naive": base, "ridge": base * 1.5}, "mse": {"model": model**2,
               "naive": base**2, "ridge": (base * 1.5) ** 2}}
    return Errors(figures, "mae", horizon=4)


def test_a_test_stretch_of_few_windows_is_resampled_in_several_blocks_so_its_interval_is_not_a_certainty():
    """13 windows of a 12-step horizon: blocks of 12 drew nearly all 13 windows every time (an interval of almost no
    width); a model better on the stretch's first half and worse on its second is not surely either."""
    from pipeline.skill import Errors, skill

    model = np.array([1.0] * 7 + [3.0] * 6)
    errors = Errors({"mae": {"model": model, "ridge": np.full(13, 2.0)}, "mse": {"model": model**2,
                     "ridge": np.full(13, 4.0)}}, "mae", horizon=12)
    figures = skill(errors, resamples=500, seed=1)
    assert figures["skill.ratio"] == pytest.approx(25 / 26)
    assert figures["skill.ratio_low"] < 0.8 and figures["skill.ratio_high"] > 1.2


@pytest.mark.parametrize("scale, noise, verdict, why", [
    (0.5, 0.1, "good fit", "skill: "),  # half the best baseline's error: skill, the curves' verdict stands
    (1.0, 0.5, "no skill", "not distinguishable from"),  # the baseline's error give or take noise
    (0.995, 0.0, "no skill", "not surely 1% better than"),  # certainly better, but by half a percent: below min_skill
])
def test_the_skill_interval_decides_between_skill_and_no_skill(scale, noise, verdict, why):
    from pipeline.diagnose import Diagnosis, no_skill
    from pipeline.skill import skill

    figures = skill(_errors(scale, noise), resamples=500, seed=1)
    assert "skill.best_baseline.naive" in figures  # ridge's errors are higher
    assert figures["skill.ratio_low"] <= figures["skill.ratio"] <= figures["skill.ratio_high"]
    diagnosis = no_skill(Diagnosis("good fit"), figures, min_skill=0.01)
    assert diagnosis.verdict == verdict and why in diagnosis.reasons[0]
