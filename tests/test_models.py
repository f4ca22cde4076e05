"""Models: the registry builds what the config says, regularisation knobs included."""

from __future__ import annotations

import warnings

import pytest

from pipeline.config import load
from pipeline.data.spec import DataSpec, Feature
from pipeline.errors import ConfigError

SPEC = DataSpec("digits", "1.0.0", {}, {}, "", (Feature("image", "image", "uint8", (8, 8, 1)),), "label",
                "classification", 10)


def _model(*overrides: str):
    from pipeline.models import build_model

    return build_model(load(None, ["model.width=4", "model.head_units=8", *overrides]), SPEC)


def _count(model, kind: str) -> int:
    return sum(type(layer).__name__ == kind for layer in model.layers)


@pytest.mark.parametrize("kernel,lambdas", [("l2", ["regularization.l2=0.01"]),
                                            ("l1", ["regularization.l1=0.01"]),
                                            ("l1_l2", ["regularization.l1=0.01", "regularization.l2=0.01"])])
@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_kernel_regularizer_adds_a_penalty_per_kernel(name, kernel, lambdas):
    import numpy as np

    model = _model(f"model.name={name}", f"regularization.kernel={kernel}", *lambdas)
    kernels = [layer for layer in model.layers if hasattr(layer, "kernel")]
    assert len(model.losses) == len(kernels) > 0
    assert all(float(np.asarray(loss)) > 0 for loss in model.losses)


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_no_regularizer_adds_no_penalty(name):
    assert _model(f"model.name={name}").losses == []


@pytest.mark.parametrize("name,depth,expected_blocks", [("cnn", 2, 3), ("mlp", 3, 3)])
@pytest.mark.parametrize("dropout,batch_norm", [(0.0, False), (0.3, False), (0.0, True), (0.3, True)])
def test_dropout_and_batchnorm_layers_exist_exactly_as_configured(name, depth, expected_blocks, dropout, batch_norm):
    model = _model(f"model.name={name}", f"model.depth={depth}", f"model.dropout={dropout}", f"model.batch_norm={batch_norm}")
    assert _count(model, "Dropout") == (expected_blocks if dropout else 0)
    assert _count(model, "BatchNormalization") == (expected_blocks if batch_norm else 0)
    if dropout:
        assert {layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"} == {dropout}


@pytest.mark.parametrize("steps, momentum", [
    (4, 0.75),  # 126 rows in batches of 32: the moving statistics average about one epoch
    (37, 0.9),  # 1,168 rows in batches of 32: 0.9 averages ten steps
    (16, 0.9),  # 126 rows in auto batches of 8
    (1, 0.0),  # one step: the whole training split's statistics
])
def test_batch_norm_statistics_average_about_one_epoch_at_most_ten_steps(steps, momentum):
    from pipeline.models import build_model

    model = build_model(load(None, ["model.batch_norm=true", "model.width=4"]), SPEC, steps_per_epoch=steps)
    assert [round(layer.momentum, 6) for layer in model.layers if type(layer).__name__ == "BatchNormalization"] == [
        momentum] * 3
    chosen = build_model(load(None, ["model.batch_norm=true", "model.batch_norm_momentum=0.99"]), SPEC,
                         steps_per_epoch=steps)
    assert {layer.momentum for layer in chosen.layers if type(layer).__name__ == "BatchNormalization"} == {0.99}


@pytest.mark.parametrize("steps, layers", [(7, 0), (9, 0), (10, 3), (36, 3), (None, 3)])
def test_batch_norm_auto_leaves_the_layers_out_of_epochs_of_fewer_than_ten_steps(steps, layers):
    """A few dozen files in batches of eight: the moving statistics cannot follow the network (bench/README.md)."""
    from pipeline.models import build_model

    auto = build_model(load(None, ["model.batch_norm=auto", "model.width=4"]), SPEC, steps_per_epoch=steps)
    assert _count(auto, "BatchNormalization") == layers
    assert _count(auto, "Conv2D") == 2 and all(c.use_bias == (not layers) for c in auto.layers
                                               if type(c).__name__ == "Conv2D")  # BN's beta stands for the bias
    asked = build_model(load(None, ["model.batch_norm=true", "model.width=4"]), SPEC, steps_per_epoch=steps)
    assert _count(asked, "BatchNormalization") == 3


def test_a_wide_mlp_head_sees_the_encoded_features_beside_the_last_layer():
    deep, wide = _model("model.name=mlp", "model.depth=2"), _model("model.name=mlp", "model.depth=2", "model.wide=true")
    assert deep.get_layer("probabilities").kernel.shape == (4, 10)
    assert wide.get_layer("probabilities").kernel.shape == (64 + 4, 10)  # 8 x 8 pixels beside 4 units


@pytest.mark.parametrize("task, precision, transform", [
    ("regression", "float32", "none"), ("classification", "float32", "none"), ("regression", "mixed_bfloat16", "none"),
    ("regression", "float32", "log")])
def test_a_wide_mlp_starts_as_the_linear_model_fitted_on_its_training_rows(task, precision, transform):
    """Untrained, wide & deep already predicts a linear table as well as the linear fit does; deep alone does not;
    and its deep part's output is scaled to the fit's residual.
    Under mixed precision too (the fit reads the encoded features as float32: SciPy has no bfloat16), and under
    a log target, whose training columns hold the label's log already (it was fitted to the log of that)."""
    import keras
    import numpy as np

    from pipeline.models import build_model

    rng = np.random.default_rng(0)
    area, city = rng.uniform(50, 200, 300).astype("float32"), rng.choice([b"north", b"south", b"east"], 300)
    price = 3 * area + np.where(city == b"north", 100, 0) + rng.normal(0, 1, 300)
    label = price if task == "regression" else (price > np.median(price)).astype("int64")
    if transform == "log":
        label = np.log(price)  # as Splits.train_columns holds it
    spec = DataSpec("t", "1", {}, {}, "", (Feature("area", "numeric", "float32"), Feature("city", "categorical", "string")),
                    "y", task, 2 if task == "classification" else 0)

    built = {}

    def untrained(*overrides: str):
        model = built[overrides] = build_model(load(None, ["model.name=tabular_mlp", "model.width=8", f"features.target_transform={transform}",
                                        *overrides]), spec,
                            {"area": area, "city": city, "y": label})
        out = np.asarray(model({"area": area, "city": city}, training=False))
        return np.sqrt(np.mean((out[:, 0] - label) ** 2)) if task == "regression" else np.mean(out.argmax(1) == label)

    keras.mixed_precision.set_global_policy(precision)
    try:
        wide, deep = untrained("model.wide=true"), untrained()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if transform == "log":  # log prices, 5.0 to 6.6, are a curve in area: the linear fit is close, not exact
        assert wide < 0.1 < deep  # deep alone starts at their mean (0.4 off); fitted to their log, wide was 4.2 off
    elif task == "regression":  # the noise is 1; prices run from 150 to 700 (bfloat16 holds about 3 digits of them)
        assert wide < (1.5 if precision == "float32" else 4) < 100 < deep
    else:
        assert wide > 0.95 > deep  # unstarted: whatever its random weights give
    # the deep part speaks in units of what it has left to learn: the linear start's residual (its deviation: the
    # noise's 1, not the prices' 130), for a regression; a class's logits have no units
    scale = built[("model.wide=true",)].get_layer("deep_scale").scale
    if task == "classification":
        assert scale == 1.0
    elif transform == "none":
        assert 0.8 < scale < 1.5  # bfloat16 encodes the areas to about 3 digits
    else:
        assert 0 < scale < np.std(label) / 3  # log prices curve in area: a residual of 0.07 against 0.38


def test_a_wide_heads_penalty_spares_the_rows_of_its_linear_start():
    """The config's L2 is the deep part's: on the wide rows it would pull the start off the penalty it chose."""
    import numpy as np

    from pipeline.models import build_model

    rng = np.random.default_rng(0)
    area = rng.uniform(50, 200, 300).astype("float32")
    spec = DataSpec("t", "1", {}, {}, "", (Feature("area", "numeric", "float32"),), "y", "regression", 0)
    model = build_model(load(None, ["model.name=tabular_mlp", "model.width=8", "model.wide=true",
                                    "regularization.kernel=l2", "regularization.l2=0.1"]),
                        spec, {"area": area, "y": 3 * area})
    head = model.get_layer("prediction")
    kernel = np.asarray(head.kernel)
    assert kernel.shape == (1 + 8, 1)  # the start: 3 per unit of area, on the standardised area
    assert kernel[0, 0] == pytest.approx(3 * np.std(area), rel=0.05)
    assert float(head.kernel_regularizer(head.kernel)) == pytest.approx(0.1 * np.sum(kernel[1:] ** 2), rel=1e-5)
    deep = model.get_layer("dense1_dense")
    assert float(deep.kernel_regularizer(deep.kernel)) == pytest.approx(0.1 * np.sum(np.asarray(deep.kernel) ** 2),
                                                                        rel=1e-5)


def test_numbers_enter_the_deep_part_also_piecewise_linearly_over_their_training_quantiles():
    """Per bin: 0 below it, 1 above it, the fraction inside; a constant column has no bins; the wide part, and so
    the linear start, sees the numbers alone."""
    import numpy as np

    from pipeline.models import build_model
    from pipeline.models.features import functional

    area, flat = np.arange(101, dtype="float32"), np.full(101, 7.0, dtype="float32")  # quartiles: 0, 25, 50, 75, 100
    spec = DataSpec("t", "1", {}, {}, "", (Feature("area", "numeric", "float32"), Feature("flat", "numeric", "float32")),
                    "y", "regression", 0)
    model = build_model(load(None, ["model.name=tabular_mlp", "model.width=8", "model.wide=true",
                                    "features.piecewise_bins=4"]), spec, {"area": area, "flat": flat, "y": 2 * area})
    deep = functional(model.input, model.get_layer("deep_inputs").output)
    rows = np.asarray(deep({"area": np.float32([0, 12.5, 50, 90, 130]), "flat": np.float32([7] * 5)}))
    np.testing.assert_allclose(rows[:, 2:], [[0, 0, 0, 0], [0.5, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0.6], [1, 1, 1, 1]],
                               atol=1e-5)  # after the two normalised numbers; beyond the training range: saturated
    assert model.get_layer("prediction").kernel.shape == (2 + 8, 1)  # wide: the two numbers beside 8 deep units
    assert float(model.get_layer("prediction").kernel[0, 0]) == pytest.approx(2 * np.std(area), rel=0.05)


def test_width_and_depth_shape_the_cnn():
    model = _model("model.width=4", "model.depth=3")
    filters = [layer.filters for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert filters == [4, 8, 16]


def test_model_takes_raw_pixels_and_returns_float32_probabilities():
    import numpy as np

    model = _model()
    out = np.asarray(model({"image": np.full((2, 8, 8, 1), 255.0, "float32")}))
    assert out.dtype == np.float32 and out.shape == (2, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert model.layers[1].name == "image_rescale"


def test_augmentation_placed_in_the_model_is_inactive_at_inference():
    import numpy as np

    from pipeline.data.augment import build_augmenter
    from pipeline.models import build_model

    cfg = load(None, ["model.width=4", "augment.placement=model", "augment.layers=[{type: gaussian_noise, stddev: 0.5}]"])
    model = build_model(cfg, SPEC, augmenter=build_augmenter(cfg.augment, cfg.seed))
    x = {"image": np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 1)).astype("float32")}
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(model(x, training=False)))
    assert not np.allclose(np.asarray(model(x, training=True)), np.asarray(model(x, training=True)))


OPTIMIZERS = ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad"]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_with_clipping(name):
    from pipeline.train.optim import build_optimizer

    cfg = load(None, [f"optimizer.name={name}", "optimizer.clipnorm=1.0"])
    opt = build_optimizer(cfg.optimizer, epochs=2, steps_per_epoch=10)
    assert opt.clipnorm == 1.0
    if name in ("momentum", "nesterov"):
        assert opt.momentum == 0.9 and opt.nesterov == (name == "nesterov")
    if name == "adamw":
        assert opt.weight_decay > 0


@pytest.mark.parametrize("schedule,start,end", [("constant", 1e-2, 1e-2), ("cosine", 1e-2, 1e-4), ("exponential", 1e-2, 1e-2 * 0.5**2)])
def test_schedules_decay_per_epoch(schedule, start, end):
    from pipeline.train.optim import build_optimizer

    cfg = load(None, ["optimizer.learning_rate=0.01", f"optimizer.schedule.name={schedule}",
                      "optimizer.schedule.alpha=0.01", "optimizer.schedule.decay_rate=0.5"])
    opt = build_optimizer(cfg.optimizer, epochs=2, steps_per_epoch=10)

    def at(step: int) -> float:
        opt.iterations.assign(step)
        return float(opt.learning_rate)

    assert at(0) == pytest.approx(start)
    assert at(20) == pytest.approx(end, rel=1e-3)


def test_a_wide_mlp_forecasts_from_the_start_as_the_linear_fit_on_its_training_windows():
    """The same start for a series: each step ahead is the ridge fit of the window, in the units of the head's
    Dense (standardised labels, which its Normalization takes back to the series'). On short series that
    start is what beats ridge and seasonal naive (docs/results.md#forecasting)."""
    import numpy as np

    from pipeline.models import build_model

    rng, n, w = np.random.default_rng(0), 600, 8
    y = np.zeros(n + w + 2)
    for t in range(2, len(y)):  # AR(2): each value a linear function of the last two, plus noise of 1
        y[t] = 1.5 * y[t - 1] - 0.7 * y[t - 2] + rng.normal()
    at = np.arange(n)
    window, ahead = y[at[:, None] + np.arange(w)].astype("float32"), y[at[:, None] + w + np.arange(2)]
    spec = DataSpec("s", "1", {}, {}, "", (Feature("y", "sequence", "float32", (w,)),), "y_ahead", "forecasting")

    def untrained(*overrides: str):
        cfg = load(None, ["data.dataset=series", "data.label_key=y", "forecast.time=t", f"forecast.input_window={w}",
                          "forecast.horizon=2", "model.name=mlp", "model.width=8", *overrides])
        out = np.asarray(build_model(cfg, spec, {"y": window, "y_ahead": ahead})({"y": window}, training=False))
        return np.sqrt(np.mean((out - ahead) ** 2, axis=0))  # per step ahead

    wide, deep = untrained("model.wide=true"), untrained()
    assert np.all(wide < [1.1, 2.0]) and np.all(deep > 2.5)  # the noise is 1 (a second step adds 1.5 of it)
    with pytest.raises(ConfigError, match="model `lstm` has none"):  # no layers to put the window beside
        load(None, ["data.dataset=series", "data.label_key=y", "forecast.time=t", "model.name=lstm", "model.wide=true"])

def test_a_wide_forecasts_penalty_is_the_one_its_validation_windows_prefer():
    """Leave-one-out among overlapping windows sees each one's neighbours, and a later stretch may want a stronger
    penalty than the past shows: given validation windows, the start's ridge alpha is the one they prefer."""
    import numpy as np
    from sklearn.linear_model import Ridge

    from pipeline.design import ALPHAS, ridge_chosen_on
    from pipeline.models import build_model

    rng, w = np.random.default_rng(0), 8
    x = rng.normal(size=(80, w)).astype("float32")  # few windows, many lags that only carry noise...
    y = np.stack([x[:, -1] + rng.normal(0, 2, 80)] * 2, axis=1)
    x_val = rng.normal(size=(200, w)).astype("float32")
    y_val = np.stack([x_val[:, -1]] * 2, axis=1)  # ...which the later windows show
    chosen = ridge_chosen_on(x, y, x_val, y_val)
    errors = {a: np.mean((Ridge(alpha=a).fit(x, y).predict(x_val) - y_val) ** 2) for a in ALPHAS}
    assert chosen.alpha == min(errors, key=errors.get) and chosen.alpha > ALPHAS[0]
    with warnings.catch_warnings():  # collinear inputs (a calendar's waves repeat with the window): the weak penalties'
        warnings.simplefilter("error")  # ill-conditioned solves are no news for the user
        ridge_chosen_on(np.hstack([x, x, 1000 * x]), y, np.hstack([x_val, x_val, 1000 * x_val]), y_val)

    spec = DataSpec("s", "1", {}, {}, "", (Feature("y", "sequence", "float32", (w,)),), "y_ahead", "forecasting")
    cfg = load(None, ["data.dataset=series", "data.label_key=y", "forecast.time=t", f"forecast.input_window={w}",
                      "forecast.horizon=2", "model.name=mlp", "model.width=8", "model.wide=true"])

    def start_error(held_out) -> float:  # the untrained wide model's error on the validation windows
        model = build_model(cfg, spec, {"y": x, "y_ahead": y}, held_out=held_out)
        return float(np.mean((np.asarray(model({"y": x_val}, training=False)) - y_val) ** 2))

    # without them, leave-one-out's alpha keeps more of the training windows' noise (0.52 against 0.36 here)
    assert start_error({"y": x_val, "y_ahead": y_val}) < 0.9 * start_error(None)
    assert start_error({"y": x_val[:0], "y_ahead": y_val[:0]}) == start_error(None)  # no validation window


def test_categories_in_fewer_training_rows_than_min_count_share_the_unseen_bucket_and_a_column_of_none_is_left_out():
    """A value seen once can only be memorised (a car's model name in a table of cars): below ``features.min_count``
    rows it is read as a value never seen; a column with no value that common adds nothing, yet the export takes it."""
    import numpy as np

    from pipeline.models import build_model

    spec = DataSpec("t", "1", {}, {}, "", (Feature("city", "categorical", "string"), Feature("name", "categorical", "string"),
                                           Feature("tags", "multi_hot", "string"), Feature("code", "categorical", "int64")),
                    "y", "regression", 0)
    columns = {"city": np.array([b"a", b"a", b"b", b"b", b"c"]), "name": np.array([b"v", b"w", b"x", b"y", b"z"]),
               "tags": np.array([b"p|q", b"p", b"q", b"r", b"p|q"]), "code": np.array([7, 7, 8, 9, 7]),
               "y": np.arange(5, dtype="float32")}
    model = build_model(load(None, ["model.name=tabular_mlp", "model.width=4", "features.min_count=2"]), spec, columns)
    info = model.feature_info
    assert info["city"]["vocabulary"] == ["[UNK]", "a", "b"] and info["name"]["encoding"] == "none"
    assert info["tags"]["vocabulary"][-2:] == ["p", "q"] and "r" not in info["tags"]["vocabulary"]
    assert [v for v in info["code"]["vocabulary"] if v != -1] == [7]

    def predict(**changed):
        batch = {"city": np.array(["a"]), "name": np.array(["v"]), "tags": np.array(["p"]), "code": np.array([7])}
        return float(np.asarray(model({**batch, **{k: np.array([v]) for k, v in changed.items()}}))[0, 0])

    assert predict(city="c") == predict(city="never seen") != predict(city="a")
    assert predict(name="z") == predict(name="anything") == predict()  # the column is in the export, and unused
    assert predict(code=9) == predict(code=123)


def test_whole_numbers_that_are_codes_also_enter_one_hot_and_the_linear_start_learns_each_codes_effect():
    """A school written as a number: its order means nothing, each school's own level is what predicts. An age
    of as many values varies smoothly and stays a number only; so does a price with cents."""
    import keras
    import numpy as np

    from pipeline.models import build_model
    from pipeline.models.codes import code_values, notes

    rng = np.random.default_rng(0)
    ids = rng.choice(np.arange(100, 900), 40, replace=False)
    effect = dict(zip(ids, rng.normal(0, 2, 40)))
    school, age = rng.choice(ids, 2000), rng.integers(18, 81, 2000)
    price = rng.uniform(1, 9, 2000).round(2)
    y = np.array([effect[s] for s in school]) + 0.05 * age + price + rng.normal(0, 0.3, 2000)
    spec = DataSpec("t", "1", {}, {}, "", tuple(Feature(n, "numeric", "float32") for n in ("school", "age", "price")),
                    "y", "regression", 0)
    columns = {"school": school.astype("float32"), "age": age.astype("float32"), "price": price.astype("float32"),
               "y": y.astype("float32")}
    model = build_model(load(None, ["model.name=tabular_mlp", "model.width=4", "model.wide=true"]), spec, columns)
    info = model.feature_info
    assert info["school"]["codes"] == 40 and "codes" not in info["age"] and "codes" not in info["price"]
    assert notes(info)[0].startswith("column 'school' holds whole numbers whose 40 values predict the label")

    def predict(**changed):
        batch = {"school": float(ids[0]), "age": 30.0, "price": 5.0, **changed}
        return float(np.asarray(model({k: np.array([v], "float32") for k, v in batch.items()}))[0, 0])

    a, b = ids[:2]
    assert abs((predict(school=a) - predict(school=b)) - (effect[a] - effect[b])) < 0.2  # fitted by the start
    one_hot = keras.Model(model.input, model.get_layer("school_codes").output)
    for unseen in (np.nan, 5.0, 5.4):  # no value, or one never seen: the out-of-vocabulary bucket
        batch = {"school": np.array([unseen], "float32"), "age": np.array([30.0]), "price": np.array([5.0])}
        assert np.asarray(one_hot(batch)).tolist() == [[1.0] + [0.0] * 40]
    off = build_model(load(None, ["model.name=tabular_mlp", "model.width=4", "features.codes=none"]), spec, columns)
    assert not any("codes" in i for i in off.feature_info.values())
    labels = np.where(np.array([effect[s] for s in school]) > 0, "yes", "no")  # classes: the same test, per class
    cfg = load(None, [])
    assert len(code_values(spec.feature("school"), columns["school"], labels, "classification", cfg)) == 40
    assert code_values(spec.feature("age"), columns["age"], labels, "classification", cfg) == []
    day = Feature("day", "numeric", "int64", date=True)  # the same values as dates: the days to come are unseen
    assert code_values(day, columns["school"], labels, "classification", cfg) == []
