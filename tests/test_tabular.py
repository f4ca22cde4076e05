"""Tabular regression, recommendation and users' own files: the same pipeline, other task families."""

from __future__ import annotations

import collections
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load
from pipeline.errors import DataError

from .conftest import ROOT, with_store

AMES = ROOT / "configs" / "ames.yaml"
MOVIELENS = ROOT / "configs" / "movielens.yaml"


def shrink(tmp_path, tfds_dir, *extra: str) -> list[str]:
    """A shipped table's config for one epoch, without the classical baselines (as ``tiny``)."""
    return [f"workdir={with_store(tmp_path / 'work')}", f"data.data_dir={tfds_dir}", "train.epochs=1", "train.verbose=0",
            "train.baselines=none", *extra]


def _column(ds, name):
    return np.concatenate([x[name].numpy() for x, _ in ds])


# ---- built-in builders -----------------------------------------------------------


def test_a_shipped_table_is_written_in_bulk_as_tfds_own_writer_writes_it(tmp_path):
    """The built-in tables (Ames, MovieLens, the series) keep the rows, order and shards of TFDS's writer, which
    took one Python dict per row: their splits, and so every run's figures, do not move."""
    import tensorflow_datasets as tfds

    from pipeline.data.builders.tables import RdatasetsTable

    class Mixed(RdatasetsTable, skip_registration=True):
        @classmethod
        def frame(cls):
            rng = np.random.default_rng(3)
            n = 700
            return pd.DataFrame({
                "count": rng.integers(-5, 10**12, n), "flag": rng.random(n) > 0.5,
                "price": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
                "city": np.where(rng.random(n) < 0.1, None, rng.choice(["north", "süd", ""], n)),
                "code": pd.Series(rng.integers(0, 5, n), dtype=object)})  # numbers in a text column

    class PerRow(Mixed, skip_registration=True):
        def _download_and_prepare(self, dl_manager, download_config):
            tfds.core.GeneratorBasedBuilder._download_and_prepare(self, dl_manager, download_config)

    built = []
    for kind in (Mixed, PerRow):
        builder = kind(data_dir=str(tmp_path / kind.__name__))
        builder.download_and_prepare()
        built.append((builder.info.splits["train"], list(tfds.as_numpy(builder.as_dataset("train")))))
    (bulk, bulk_rows), (per_row, per_row_rows) = built
    assert bulk.shard_lengths == per_row.shard_lengths and bulk.num_bytes == per_row.num_bytes
    assert len(bulk_rows) == 700
    for mine, theirs in zip(bulk_rows, per_row_rows, strict=True):
        np.testing.assert_equal(mine, theirs)


def test_ames_builder_prepares_a_regression_table_of_raw_columns(tmp_path, tfds_dir):
    from pipeline.data import dataset

    spec = dataset.load(load(AMES, shrink(tmp_path, tfds_dir))).spec
    assert spec.name == "ames_housing" and spec.task == "regression" and spec.label == "Sale_Price"
    assert sum(spec.sizes.values()) == 2930 and len(spec.features) == 73
    kinds = {f.name: (f.kind, f.dtype) for f in spec.features}
    assert kinds["Neighborhood"] == ("categorical", "string")
    assert kinds["Gr_Liv_Area"] == ("numeric", "int64") and kinds["Longitude"] == ("numeric", "float32")


@pytest.mark.slow
def test_movielens_splits_are_fixed_and_disjoint(tmp_path, tfds_dir):
    from pipeline.data import dataset

    cfg = load(MOVIELENS, shrink(tmp_path, tfds_dir))
    data = dataset.load(cfg)
    assert sum(data.spec.sizes.values()) == 100_004

    def pairs(ds):  # one pass: the training split reshuffles every pass
        return {(u, m) for x, _ in ds for u, m in zip(x["userId"].numpy().tolist(), x["movieId"].numpy().tolist())}

    train, val, test = pairs(data.train_epoch()), pairs(data.validation), pairs(data.test)
    assert not (train & val or train & test or val & test)
    assert len(train) + len(val) + len(test) == 100_004
    assert pairs(dataset.load(cfg).test) == test


@pytest.mark.slow
def test_movielens_time_split_trains_on_the_past(tmp_path, tfds_dir):
    from pipeline.data import dataset

    cfg = load(MOVIELENS, shrink(tmp_path, tfds_dir, "data.time_split={column: timestamp, validation: 0.7, test: 0.8}",
                                 "data.columns=[userId, movieId, timestamp]"))
    data = dataset.load(cfg)
    train, val, test = (_column(d, "timestamp") for d in (data.train_epoch(), data.validation, data.test))
    assert train.max() <= val.min() and val.max() <= test.min()
    assert data.spec.sizes == {"train": len(train), "validation": len(val), "test": len(test)}
    assert len(test) == pytest.approx(0.2 * 100_004, rel=0.01)


# ---- preprocessing comes from the training split only ------------------------------


def test_preprocessing_statistics_come_from_the_training_split_only(tmp_path, tfds_dir):
    from pipeline.data import dataset
    from pipeline.models import build_model

    cfg = load(AMES, shrink(tmp_path, tfds_dir))
    data = dataset.load(cfg)
    model = build_model(cfg, data.spec, data.train_columns)
    train_area = _column(data.train_epoch(), "Gr_Liv_Area").astype(float)
    all_area = np.concatenate([train_area, _column(data.validation, "Gr_Liv_Area"), _column(data.test, "Gr_Liv_Area")])
    numbers = [name for name, f in model.feature_info.items() if f["kind"] == "numeric"]  # one layer for them all
    mean = float(np.asarray(model.get_layer("numbers_normalize").mean).reshape(-1)[numbers.index("Gr_Liv_Area")])
    assert mean == pytest.approx(train_area.mean(), rel=1e-6)
    assert abs(mean - all_area.mean()) > 1e-3  # would fail if validation or test leaked in

    counts = collections.Counter(v.decode() for v in _column(data.train_epoch(), "Neighborhood"))
    train_values = {v for v, n in counts.items() if n >= cfg.features.min_count}
    assert set(model.feature_info["Neighborhood"]["vocabulary"][1:]) == train_values  # index 0 is the OOV bucket
    assert len(train_values) < len(counts)  # a neighbourhood of one house is read as an unseen one
    neighborhoods = data.train_columns["Neighborhood"]  # each distinct value held once, however often it occurs
    assert len({id(v) for v in neighborhoods}) == len(set(neighborhoods.tolist())) == len(counts)
    target_mean = float(np.asarray(model.get_layer("prediction").bias)[0])
    assert target_mean == pytest.approx(data.train_columns["Sale_Price"].mean(), rel=1e-5)
    assert 11 < target_mean < 13  # the mean of log(price) over the training split


def test_unseen_category_goes_to_the_oov_bucket_and_nan_to_the_training_mean(tmp_path):
    from pipeline.data.spec import DataSpec, Feature
    from pipeline.models import build_model

    spec = DataSpec("t", "1", {}, {}, "", (Feature("city", "categorical", "string"), Feature("area", "numeric", "float32")),
                    "y", "regression")
    columns = {"city": np.array([b"a", b"b", b"a"]), "area": np.array([1.0, np.nan, 3.0], "float32"),
               "y": np.array([1.0, 2.0, 3.0], "float32")}
    cfg = load(None, ["model.name=tabular_mlp", "model.depth=1", "model.width=4", "features.min_count=1"])
    model = build_model(cfg, spec, columns)
    (city,) = model.get_layer("categorical_lookup")([np.array(["zzz", "b"])])
    assert city.numpy().argmax(axis=1).tolist() == [0, 2]  # the OOV bucket; "b" after it and "a"
    normalize = model.get_layer("numbers_normalize")
    assert float(np.asarray(normalize.mean).reshape(-1)[0]) == pytest.approx(2.0)  # NaN ignored
    out = model({"city": np.array(["a", "zzz"]), "area": np.array([np.nan, 2.0], "float32")})
    assert np.isfinite(np.asarray(out)).all()


def test_text_categoricals_share_one_lookup_table_and_encode_as_each_columns_own_string_lookup():
    """One table (a SavedModel saves, restores and traces functions for each) gives the vectors of one per column."""
    from keras import layers

    from pipeline.data.spec import DataSpec, Feature
    from pipeline.models import build_model

    names = ["city", "plan", "empty"]
    spec = DataSpec("t", "1", {}, {}, "", tuple(Feature(n, "categorical", "string") for n in names), "y", "regression")
    columns = {"city": np.array([b"a", b"b", b"a", b"c"]), "plan": np.array([b"b", b"x\x1fy", b"", b"b"]),
               "empty": np.array([b""] * 4), "y": np.ones(4, "float32")}
    model = build_model(load(None, ["model.name=tabular_mlp", "model.depth=1", "model.width=4"]), spec, columns)
    assert [layer.name for layer in model.layers if "lookup" in layer.name] == ["categorical_lookup"]
    batch = {"city": np.array(["c", "zzz", "a"]), "plan": np.array(["x\x1fy", "b", "a"]), "empty": np.array(["", "", "q"])}
    vectors = model.get_layer("categorical_lookup")([batch[n] for n in names])
    for name, vector in zip(names, vectors):
        vocabulary = model.feature_info[name]["vocabulary"][1:]
        own = layers.StringLookup(vocabulary=vocabulary, num_oov_indices=1, output_mode="one_hot")
        np.testing.assert_array_equal(vector.numpy(), own(batch[name]).numpy())


def test_each_column_keeps_its_place_in_the_feature_vector_though_numbers_and_texts_are_encoded_together():
    """Numbers next to each other (without is-missing flags) reach the network as one block: a table of a thousand
    numeric columns is one tensor there, not a thousand slices joined again."""
    import keras

    from pipeline.data.spec import DataSpec, Feature
    from pipeline.models import build_model

    spec = DataSpec("t", "1", {}, {}, "", (Feature("area", "numeric", "float32"), Feature("city", "categorical", "string"),
                                           Feature("sizes", "numeric", "float32", (2,)), Feature("rooms", "numeric", "int64"),
                                           Feature("floors", "numeric", "float32")),
                    "y", "regression")
    columns = {"area": np.array([1.0, np.nan, 3.0], "float32"), "city": np.array([b"a", b"b", b"a"]),
               "sizes": np.array([[0, 1], [0, 2], [0, 3]], "float32"), "rooms": np.array([1, 2, 6]),
               "floors": np.array([1, 1, 4], "float32"), "y": np.ones(3, "float32")}
    model = build_model(load(None, ["model.name=tabular_mlp", "model.depth=1", "model.width=4", "features.min_count=1"]),
                        spec, columns)
    features = keras.Model(model.inputs, model.get_layer("features").input)  # the vector the network sees
    batch = {"area": np.array([np.nan, 4.0], "float32"), "city": np.array(["b", "zzz"]),
             "sizes": np.array([[5, 2], [0, 4]], "float32"), "rooms": np.array([3, 9]), "floors": np.array([2, 0], "float32")}
    pieces = features(batch)
    assert len(pieces) == 4  # area, its flag, city, and sizes, rooms and floors as one block
    s, r, f = np.sqrt(2 / 3), np.sqrt(14 / 3), np.sqrt(2)  # deviations of sizes[1], rooms, floors (sizes[0]: constant)
    expected = [[(2 - 2) / 1, 1, 0, 0, 1, 5, (2 - 2) / s, (3 - 3) / r, (2 - 2) / f],  # area (NaN: the mean), its flag,
                [(4 - 2) / 1, 0, 1, 0, 0, 0, (4 - 2) / s, (9 - 3) / r, (0 - 2) / f]]  # city, sizes, rooms, floors
    np.testing.assert_allclose(np.concatenate([np.asarray(v) for v in pieces], -1), expected, rtol=1e-6)


def test_categoricals_are_one_hot_up_to_one_hot_max_values_and_embedded_above():
    from pipeline.data.spec import DataSpec, Feature
    from pipeline.models import build_model

    spec = DataSpec("t", "1", {}, {}, "", (Feature("city", "categorical", "string"),
                                           Feature("customer", "categorical", "string")), "y", "regression")
    columns = {"city": np.array([b"a", b"b", b"c"] * 700), "customer": np.array([b"%d" % i for i in range(2100)]),
               "y": np.ones(2100, "float32")}
    model = build_model(load(None, ["model.name=tabular_mlp", "model.depth=1", "model.width=4", "features.min_count=1"]),
                        spec, columns)
    assert {n: f["encoding"] for n, f in model.feature_info.items()} == {"city": "one_hot", "customer": "embedding"}
    assert model.get_layer("customer_embedding").input_dim == 2101  # every value kept, and the OOV bucket
    model = build_model(load(None, ["model.name=tabular_mlp", "model.depth=1", "model.width=4", "features.min_count=1",
                                    "features.one_hot_max=3000"]), spec, columns)
    assert model.feature_info["customer"]["encoding"] == "one_hot"


# ---- users' own files ----------------------------------------------------------------


def write_houses(path, n: int = 120, bad_rows: dict | None = None):
    """A small house-price CSV; ``bad_rows`` maps a row index to a bad 'area' value."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"area": rng.uniform(50, 200, n).round(1), "rooms": rng.integers(1, 6, n),
                          "city": rng.choice(["north", "south", "east"], n)})
    frame["price"] = (frame.area * 1000 + frame.rooms * 5000 + rng.normal(0, 5000, n)).round()
    frame = frame.astype(str)
    for row, value in (bad_rows or {}).items():
        frame.loc[row, "area"] = value
    frame.to_csv(path, index=False)
    return path


def csv_overrides(tmp_path, tfds_dir, path, *extra):
    """configs/examples/csv.yaml on the table at ``path`` for one epoch, without the classical baselines (as ``tiny``)."""
    return ["name=houses", f"workdir={with_store(tmp_path / 'work')}", f"data.data_dir={tfds_dir}", f"data.path={path}",
            "train.epochs=1", "train.verbose=0", "train.baselines=none", *extra]


@pytest.mark.slow
def test_a_table_of_numbers_in_piecewise_bins_exports_with_the_models_very_outputs(tmp_path, tfds_dir):
    """Prices of thousands, with a step at a threshold: computed in a graph as in eager calls, the bins agree to
    the last bit (a division by each bin's width had been the graph's product by its inverse: 1 float32 unit off)."""
    import tensorflow as tf

    from pipeline.jobs.train import train

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"speed": rng.choice([25, 33, 50, 66, 75, 100], 1000), "disk": rng.integers(80, 2100, 1000),
                          "ram": rng.choice([2, 4, 8, 16, 32], 1000), "screen": rng.choice([14, 15, 17], 1000),
                          "month": rng.integers(1, 36, 1000)})
    table["price"] = (1500 + 3 * table.speed + 0.5 * table.disk + 20 * table.ram - 40 * table.month
                      + 300 * (table.disk > 1000) + rng.normal(0, 100, 1000)).round()
    table.to_csv(tmp_path / "computers.csv", index=False)
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, tmp_path / "computers.csv",
                                                                 "data.label_key=price", "features.piecewise_bins=16"))
    result = train(cfg)
    assert result.checks["verify.max_abs_diff"] == 0.0 and result.checks["verify.examples"] == 150
    served = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    price = served(speed=tf.constant([50], tf.int64), disk=tf.constant([1500], tf.int64),
                   ram=tf.constant([8], tf.int64), screen=tf.constant([15], tf.int64), month=tf.constant([10], tf.int64))
    assert 2100 < float(next(iter(price.values()))[0]) < 2800  # the table's own rule: 2,460


def test_csv_with_a_bad_value_names_file_line_and_column(tmp_path, tfds_dir):
    from pipeline.data import dataset

    path = write_houses(tmp_path / "houses.csv", bad_rows={17: "abc"})
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, path))
    with pytest.raises(DataError, match=r"houses\.csv: line 19, column 'area': 'abc' is not a number"):
        dataset.load(cfg)


@pytest.mark.slow
def test_csv_skipping_bad_rows_counts_them_in_the_run(tmp_path, tfds_dir):
    from mlflow.tracking import MlflowClient

    from pipeline.jobs.train import train

    path = write_houses(tmp_path / "houses.csv", bad_rows={3: "n/a?", 40: "big", 41: "12 m2"})
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, path, "data.on_bad_input=skip"))
    result = train(cfg)
    params = MlflowClient(cfg.tracking.uri).get_run(result.run_id).data.params
    assert params["data.skipped"] == "3"
    assert sum(int(params[f"data.size.{s}"]) for s in ("train", "validation", "test")) == 117


def test_csv_missing_label_column_is_named(tmp_path, tfds_dir):
    from pipeline.data import dataset

    path = write_houses(tmp_path / "houses.csv")
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, path, "data.label_key=cost"))
    with pytest.raises(DataError, match=r"^\S*houses\.csv: missing label column 'cost'"):  # not TFDS' "Failed to ..."
        dataset.load(cfg)


def test_a_misspelt_column_among_hundreds_is_refused_in_a_short_line_that_names_the_closest(tmp_path, tfds_dir):
    from pipeline.data import checks

    path = tmp_path / "wide.csv"
    names = [f"sensor_{i}" for i in range(300)] + ["price"]
    path.write_text(",".join(names) + "\n" + "\n".join(",".join(["1"] * len(names)) for _ in range(5)) + "\n")
    for override, message in [("data.label_key=Price", r"missing label column 'Price' .*\(the closest to 'Price': price\)"),
                              ("data.exclude=[sensor_3000]", r"'sensor_3000' is not a feature .*\(the closest to "
                                                             r"'sensor_3000': sensor_300?\b")]:
        cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, path, override))
        with pytest.raises(DataError, match=message) as refused:
            checks.check(cfg) if override.startswith("data.label_key") else checks.named_columns(cfg, names, "csv")
        assert "sensor_0, sensor_1," in str(refused.value) and " and 281 more" in str(refused.value)
        assert len(str(refused.value)) < 500, str(refused.value)


def test_a_row_number_an_id_and_a_constant_column_are_noted_and_data_exclude_leaves_them_out(tmp_path, tfds_dir):
    from pipeline.data import columns, dataset, stats

    path = write_houses(tmp_path / "houses.csv", n=200)
    frame = pd.read_csv(path)
    frame.insert(0, "row", range(1, 201))
    frame["serial"] = [f"S-{i:05d}" for i in np.random.default_rng(1).permutation(200)]
    frame["site"] = "plant-7"
    frame["unused"] = np.nan  # written as empty cells
    frame["sold"] = [f"{1 + i % 28:02d}.{1 + i % 12:02d}.2024" for i in range(200)]  # a German spreadsheet's dates
    frame["fee"] = [f"${1000 + 7 * (i % 50):,}.50" for i in range(200)]  # a report's money: text, not numbers
    frame["tax"] = [f"{1000 + 7 * (i % 50):,}.25" for i in range(200)]  # digits grouped: data.thousands reads them
    frame["grade"] = ["Good", "good ", "poor"] * 66 + ["poor"] * 2  # typed by hand: one word two ways
    frame.to_csv(path, index=False)
    notes = stats.column_notes(dataset.load(load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, path))))
    assert len(notes) == 8, notes  # not area, rooms or city
    row, serial, site, unused, sold, fee, tax, grade = (
        next(n for n in notes if n.startswith(f"column '{c}'"))
        for c in ("row", "serial", "site", "unused", "sold", "fee", "tax", "grade"))
    assert grade == ("column 'grade' holds values that differ only in case or spaces ('Good', 'good'): each is a "
                     "category of its own; write them alike in the file to train them as one")
    assert re.fullmatch(r"column 'fee' holds numbers written as \$1,\d{3}\.50: as text each value is a category; "
                        r"write plain numbers \(1234\.5\) to train on them as numbers", fee)
    assert re.fullmatch(r"column 'tax' holds numbers written as 1,\d{3}\.25: .*say how the file groups digits "
                        r"\(`data.thousands`\) to train on them as numbers", tax)
    assert "is empty in all 140 training rows" in unused and "`data.exclude: [unused]`" in unused
    assert re.fullmatch(r"column 'sold' holds dates written as \d\d\.\d\d\.2024: as text each date is a category, .*"
                        r"write them as ISO 8601 \(2020-12-31\) to train on their time", sold)
    assert "like a row number (from " in row and "in each of the 140 training rows" in row
    assert "like a row id" in serial and "`data.exclude: [serial]`" in serial
    assert "has one value, plant-7, in all 140 training rows" in site

    with pytest.MonkeyPatch.context() as patch:  # a table past the rows read for statistics: they are a sample
        patch.setattr(columns, "MAX_STAT_ROWS", 50)
        sampled = stats.column_notes(dataset.load(load(ROOT / "configs/examples/csv.yaml",
                                                       csv_overrides(tmp_path, tfds_dir, path))))
    assert any(n.startswith("column 'row'") and "in each of the 50 training rows read" in n for n in sampled), sampled

    kept = dataset.load(load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, path,
                                                                                  "data.exclude=[row, serial, site, unused, sold, fee, tax, grade]")))
    assert [f.name for f in kept.spec.features] == ["area", "rooms", "city"] and not stats.column_notes(kept)
    with pytest.raises(DataError, match=r"^Invalid `data.exclude`: 'serail' is not a feature of csv; it has row, "):
        dataset.load(load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, path, "data.exclude=[serail]")))


def write_image_folder(root, per_class: int = 12, broken: bool = False):
    """Two classes of random images of mixed sizes, some grey-scale, some RGB."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, (lo, hi) in {"dark": (0, 90), "bright": (160, 256)}.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(6, 30, 2))
            if i % 3 == 0:
                Image.fromarray(rng.integers(lo, hi, (h, w), dtype=np.uint8), mode="L").save(root / name / f"{i}.png")
            else:
                Image.fromarray(rng.integers(lo, hi, (h, w, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    if broken:
        (root / "dark" / "broken.png").write_bytes(b"not an image")
    return root


@pytest.mark.slow
def test_image_folder_of_mixed_sizes_and_grey_scale_trains_end_to_end(tmp_path, tfds_dir):
    import tensorflow as tf
    from PIL import Image

    from pipeline.jobs.train import train

    root = write_image_folder(tmp_path / "pictures", broken=True)
    deep = np.linspace(0, 65535, 20 * 24).reshape(20, 24).astype(np.uint16)  # a 16-bit grey scan: not white
    Image.fromarray(deep).save(root / "dark" / "90.png")
    cfg = load(ROOT / "configs/examples/image_folder.yaml",
               csv_overrides(tmp_path, tfds_dir, root, "name=pictures", "data.on_bad_input=skip", "train.epochs=2"))
    result = train(cfg)
    assert result.test_metrics["test_accuracy"] >= 0.0
    loaded = tf.saved_model.load(str(result.export_path))
    sig = loaded.signatures["serving_default"]
    assert sig.structured_input_signature[1]["image"].shape.as_list() == [None, 16, 16, 3]
    # The files themselves (PNG and JPEG, 6 to 30 pixels a side) are served as their prepared pixels are.
    from pipeline.data.builders.folders import _decode

    files = sorted(root.glob("*/[0-9]*.*"))
    assert 100 < _decode(root / "dark" / "90.png", (16, 16), 3).mean() < 155  # its top 8 bits, 0 to 255
    by_pixels = sig(image=tf.constant(np.stack([_decode(f, (16, 16), 3) for f in files])))["probabilities"].numpy()
    by_file = loaded.signatures["image_bytes"](image_bytes=tf.constant([f.read_bytes() for f in files]))
    np.testing.assert_array_equal(by_file["probabilities"].numpy(), by_pixels)
    # The class by its folder's name, beside its id (the folders sorted: bright, dark).
    assert [n.decode() for n in by_file["class_name"].numpy()] == [("bright", "dark")[i] for i in by_pixels.argmax(1)]
    from .test_images import _png_claiming

    # Three files of 20M pixels each (by their headers): within the budget one by one, not together.
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 40,000,000 pixels a request"):
        loaded.signatures["image_bytes"](image_bytes=tf.constant([_png_claiming(5_000, 4_000)] * 3))


def test_image_folder_unreadable_image_is_named(tmp_path, tfds_dir):
    from pipeline.data import dataset

    root = write_image_folder(tmp_path / "pictures", per_class=3, broken=True)
    cfg = load(ROOT / "configs/examples/image_folder.yaml", csv_overrides(tmp_path, tfds_dir, root, "name=pictures"))
    with pytest.raises(DataError, match=r"Unreadable image .*dark/broken\.png"):
        dataset.load(cfg)


def test_a_decompression_bomb_in_an_image_folder_is_named_as_unreadable(tmp_path, tfds_dir, monkeypatch):
    """PIL refuses an image of more than twice MAX_IMAGE_PIXELS (a small PNG that unpacks to gigabytes): lowered here,
    the folder's 6 to 30 pixel images are such files."""
    from PIL import Image

    from pipeline.data import dataset

    root = write_image_folder(tmp_path / "pictures", per_class=3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    cfg = load(ROOT / "configs/examples/image_folder.yaml", csv_overrides(tmp_path, tfds_dir, root, "name=pictures"))
    with pytest.raises(DataError, match=r"Unreadable image .*\.(png|jpg): Image size \(\d+ pixels\) exceeds limit"):
        dataset.load(cfg)


@pytest.mark.parametrize("per_class, message", [
    (1, r"^The split 'train\[85%:\]' holds none of the 2 examples: too few to split"),  # one picture a class
    (0, r"pictures/bright: a class folder without a \.bmp .* file \(add its files, or move it out of "),
])
def test_a_folder_too_small_to_split_or_with_an_empty_class_is_one_line(tmp_path, tfds_dir, per_class, message):
    from pipeline.data import dataset

    root = write_image_folder(tmp_path / "pictures", per_class=per_class)
    if not per_class:
        write_image_folder(tmp_path / "other", per_class=2)
        shutil.move(tmp_path / "other" / "dark", root / "dark" / "more")
    cfg = load(ROOT / "configs/examples/image_folder.yaml", csv_overrides(tmp_path, tfds_dir, root, "name=pictures"))
    with pytest.raises(DataError, match=message):
        dataset.load(cfg)


def test_a_folder_of_split_folders_is_refused_and_class_folders_grouped_inside_are_not(tmp_path, tfds_dir):
    """train/dark, test/dark would train a model to tell train from test; dark/2019, dark/2020 are one class."""
    from pipeline.data import dataset
    from pipeline.data.builders.folders import labelled_files

    root = tmp_path / "pictures"
    for split in ("train", "test"):
        write_image_folder(root / split, per_class=3)
    cfg = load(ROOT / "configs/examples/image_folder.yaml", csv_overrides(tmp_path, tfds_dir, root, "name=pictures"))
    with pytest.raises(DataError, match=r"pictures: its subfolders \(test, train\) are splits, each with the same "
                                        r"class folders \(bright, dark\): point `data.path` at one of them"):
        dataset.load(cfg)
    grouped = tmp_path / "grouped"
    for year in ("2019", "2020"):
        write_image_folder(tmp_path / year, per_class=3)
        for label in ("dark", "bright"):
            (grouped / label).mkdir(parents=True, exist_ok=True)
            (tmp_path / year / label).rename(grouped / label / year)
    assert {label for label, _ in labelled_files(grouped, {".png", ".jpg"})} == {"dark", "bright"}


def test_files_of_a_class_folder_that_are_not_images_are_left_out_with_a_note_naming_them_and_os_leftovers_unsaid(tmp_path, capsys):
    from pipeline.data.builders.folders import labelled_files

    root = write_image_folder(tmp_path / "pictures", per_class=2)
    (root / "dark" / "IMG_0001.HEIC").write_bytes(b"\x00")  # a phone's photo: a format the pipeline does not read
    (root / "bright" / "notes.txt").write_text("shot on a cloudy day")
    (root / "bright" / ".DS_Store").write_bytes(b"\x00")  # hidden files are no one's data,
    (root / "bright" / "._0.png").write_bytes(b"\x00\x05\x16\x07Mac OS X")  # even with an image's suffix (macOS)
    (root / "dark" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")  # nor are the operating systems' leftovers
    (root / "__MACOSX" / "dark").mkdir(parents=True)  # a zip made on a Mac: no class
    (root / "__MACOSX" / "dark" / "._1.jpg").write_bytes(b"\x00\x05\x16\x07")
    (root / "dark" / "@eaDir" / "1.jpg").mkdir(parents=True)  # a NAS's thumbnails, real JPEG files: not the class's
    shutil.copy(next((root / "dark").glob("*.jpg")), root / "dark" / "@eaDir" / "1.jpg" / "SYNOFILE_THUMB_S.jpg")
    files = labelled_files(root, {".png", ".jpg"})
    assert sorted(path.name for _, path in files) == ["0.png", "0.png", "1.jpg", "1.jpg"]
    assert capsys.readouterr().err == (f"note: {root}: left out 2 files of other types than .jpg .png: "
                                       "bright/notes.txt, dark/IMG_0001.HEIC\n")


# ---- export with raw named inputs ------------------------------------------------------


@pytest.mark.slow
def test_ames_export_takes_raw_named_columns_and_returns_dollars(tmp_path, tfds_dir):
    import tensorflow as tf

    from pipeline.jobs.train import train

    cfg = load(AMES, shrink(tmp_path, tfds_dir, "model.width=16"))
    result = train(cfg)
    serve = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    inputs = serve.structured_input_signature[1]
    assert inputs["Neighborhood"].dtype == tf.string and inputs["Gr_Liv_Area"].dtype == tf.int64
    assert set(serve.structured_outputs) == {"prediction"}

    from pipeline.data import dataset
    from pipeline.export.evaluate import evaluate_export
    from pipeline.tasks import task_for

    data = dataset.load(cfg)
    features, labels = next(iter(data.test))
    served = serve(**features)["prediction"].numpy()
    expected = np.exp(result.model.predict(features, verbose=0).reshape(-1))
    np.testing.assert_allclose(served, expected, rtol=1e-5)
    assert np.median(served) > 10_000  # dollars, not log dollars
    # The run's errors in dollars (computed in the graph) are the export's, computed in NumPy from what it serves.
    dollars = evaluate_export(result.export_path, data, task_for(cfg, data.spec))
    m = result.test_metrics
    assert m["test_rmse_original"] > 1000 and m["test_rmse_log"] < 1.0
    np.testing.assert_allclose([m["test_rmse_original"], m["test_mae_original"], m["test_rmse_log"]],
                               [dollars["rmse"], dollars["mae"], dollars["rmse_log"]], rtol=1e-4)


@pytest.mark.slow
def test_recommend_signature_returns_k_distinct_unseen_items(tmp_path, tfds_dir):
    import tensorflow as tf

    from pipeline.data import dataset
    from pipeline.jobs.train import train

    cfg = load(MOVIELENS, shrink(tmp_path, tfds_dir, "model.recommender.factors=4"))
    result = train(cfg)
    loaded = tf.saved_model.load(str(result.export_path))
    assert set(loaded.signatures) == {"serving_default", "recommend"}
    out = loaded.signatures["recommend"](user_id=tf.constant([1, 2], tf.int64), k=tf.constant(10))
    ids = out["item_ids"].numpy()
    assert ids.shape == (2, 10) and out["scores"].shape == (2, 10)
    assert all(len(set(row)) == 10 for row in ids)
    data = dataset.load(cfg)
    seen = set(data.train_columns["movieId"][data.train_columns["userId"] == 1].tolist())
    assert not seen & set(ids[0].tolist())
    assert np.all(np.diff(out["scores"].numpy(), axis=1) <= 0)
    everything = loaded.signatures["recommend"](user_id=tf.constant([1], tf.int64), k=tf.constant(100_000))
    catalogue = len(np.unique(data.train_columns["movieId"]))
    assert everything["item_ids"].shape == (1, catalogue - len(seen))  # all it has not rated, and no more
    assert np.isfinite(everything["scores"].numpy()).all()
    assert 0 <= result.test_metrics["test_recall_at_10"] <= 1 and result.test_metrics["test_ranking_users"] > 100
    # Its scores are the model's ratings of those movies, with their features as training first saw them
    # and the rating's time (model.recommender.context) at the latest in training.
    columns = data.train_columns
    first = {movie: row for row, movie in reversed(list(enumerate(columns["movieId"].tolist())))}
    rows = [first[movie] for movie in ids[0].tolist()]
    asked = {"userId": np.full(10, 1), "movieId": ids[0], "genres": columns["genres"][rows],
             "year": columns["year"][rows], "timestamp": np.full(10, columns["timestamp"].max())}
    rated = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in asked.items()})["prediction"]
    np.testing.assert_allclose(rated.numpy(), out["scores"].numpy()[0], rtol=1e-5)


@pytest.mark.slow
def test_users_and_items_named_by_text_ids_are_recommended_by_those_ids(tmp_path, tfds_dir):
    """Production ids are text ("u00042", UUIDs): ``recommend`` takes and returns them as the table holds them."""
    import tensorflow as tf

    from pipeline.data import dataset
    from pipeline.jobs.train import train

    rng = np.random.default_rng(0)
    ratings = pd.DataFrame({"user": [f"u{u:03d}" for u in rng.integers(0, 60, 3000)],
                            "item": [f"tt{i:04d}" for i in rng.integers(0, 80, 3000)],
                            "rating": rng.integers(1, 6, 3000).astype(float)}).drop_duplicates(["user", "item"])
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    cfg = load(MOVIELENS, shrink(tmp_path, tfds_dir, "data.dataset=csv", f"data.path={tmp_path / 'ratings.csv'}",
                                 "data.columns=[user,item]", "features.kinds={}", "data.shuffle_buffer=1000",
                                 "model.recommender={user: user, item: item, factors: 4, tower: [8], implicit: true}"))
    result = train(cfg)
    assert 0 <= result.test_metrics["test_recall_at_10"] <= 1
    out = tf.saved_model.load(str(result.export_path)).signatures["recommend"](
        user_id=tf.constant(["u007", "someone new"]), k=tf.constant(5))
    ids = out["item_ids"].numpy().astype(str)
    assert ids.shape == (2, 5) and all(i.startswith("tt") for i in ids.ravel())
    columns = dataset.load(cfg).train_columns
    rated = columns["item"][columns["user"] == b"u007"].astype(str)
    assert len(rated) and not set(ids[0]) & set(rated)  # none it rated in training
    assert len(set(ids[1])) == 5  # a user unseen in training gets the best items of all


def test_a_parquet_table_loads_like_a_csv(tmp_path, tfds_dir):
    from pipeline.data import dataset

    frame = pd.read_csv(write_houses(tmp_path / "houses.csv"))
    frame.to_parquet(tmp_path / "houses.parquet")
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, tmp_path / "houses.parquet"))
    spec = dataset.load(cfg).spec
    assert {f.name: (f.kind, f.dtype) for f in spec.features} == {
        "area": ("numeric", "float32"), "rooms": ("numeric", "int64"), "city": ("categorical", "string")}
    assert spec.task == "regression" and sum(spec.sizes.values()) == 120


def test_parquet_times_are_seconds_categories_text_yes_no_features_numbers_and_a_yes_no_label_two_classes(
        tmp_path, tfds_dir):
    """What pandas writes: timestamps with a zone, dates, durations, a category dtype, bool features (one with
    gaps), a bool label. A bool feature is 0 and 1, marked so that serving also takes false and true."""
    from pipeline.data import dataset

    frame = pd.read_csv(write_houses(tmp_path / "houses.csv"))
    frame["listed"] = pd.Timestamp("2024-03-01T12:00:00Z") + pd.to_timedelta(np.arange(120), unit="h")
    frame["built"] = [pd.Timestamp(2000 + i % 20, 1, 1).date() for i in range(120)]
    frame["on_market"] = pd.to_timedelta(np.arange(120) % 7, unit="D")
    frame["city"] = frame["city"].astype("category")
    frame["sold"] = frame["price"] > frame["price"].median()
    frame["garden"] = np.arange(120) % 3 == 0
    frame["pool"] = pd.array([None if i % 10 == 0 else i % 2 == 0 for i in range(120)], dtype="boolean")
    frame.drop(columns="price").to_parquet(tmp_path / "houses.parquet")
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, tmp_path / "houses.parquet",
                                                                   "data.label_key=sold"))
    data = dataset.load(cfg)
    assert data.spec.task == "classification" and data.spec.class_names == ["false", "true"]
    kinds = {f.name: (f.kind, f.dtype) for f in data.spec.features}
    assert kinds["listed"] == kinds["built"] == kinds["on_market"] == ("numeric", "float32")
    assert kinds["city"] == ("categorical", "string")
    assert (kinds["garden"], kinds["pool"]) == (("numeric", "int64"), ("numeric", "float32"))
    assert [f.name for f in data.spec.features if f.boolean] == ["garden", "pool"]
    assert set(data.train_columns["garden"].tolist()) == {0, 1}
    pool = data.train_columns["pool"]
    assert set(pool[~np.isnan(pool)].tolist()) == {0.0, 1.0} and np.isnan(pool).any()
    listed = data.train_columns["listed"]  # seconds since 1970 (UTC), as float32 holds them
    assert listed.min() >= 1709294400 - 256 and listed.max() <= 1709294400 + 119 * 3600 + 256
    assert set(data.train_columns["on_market"].tolist()) <= {d * 86400.0 for d in range(7)}

    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, tmp_path / "houses.parquet",
                                                                   "data.label_key=sold", "data.dtypes={city: float}"))
    with pytest.raises(DataError, match=r"houses.parquet: column 'city' holds dictionary<.*> values, which are no "
                                        r"float numbers \(declare it with `data.dtypes: \{city: string\}`\)"):
        dataset.load(cfg)


def test_iso_dates_in_a_csv_are_seconds_as_parquet_times_are_and_a_value_that_is_no_date_is_named(
        tmp_path, tfds_dir, monkeypatch):
    """A date as a category would make every future date unseen; as seconds since 1970 (UTC) it orders."""
    from pipeline.data import dataset, sources

    monkeypatch.setattr(sources, "SAMPLE_ROWS", 60)  # the types come from the dates; the zoned times come later
    frame = pd.read_csv(write_houses(tmp_path / "houses.csv")).drop(columns="price")
    frame["kind"] = np.where(frame.area > frame.area.median(), "big", "small")
    when = pd.Timestamp("2024-03-01") + pd.to_timedelta(np.arange(120) * 30, unit="h")
    seconds = (when - pd.Timestamp("1970-01-01")).total_seconds().to_numpy()
    frame["listed"] = [t.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if i >= 60 else "") for i, t in enumerate(when)]
    frame.to_csv(tmp_path / "dated.csv", index=False)
    frame.assign(listed=when.astype("datetime64[ns]")).to_parquet(tmp_path / "dated.parquet")  # pandas' nanoseconds
    for name in ("dated.csv", "dated.parquet"):
        data = dataset.load(load(ROOT / "configs/examples/csv.yaml",
                                 csv_overrides(tmp_path, tfds_dir, tmp_path / name, "data.label_key=kind")))
        listed = {f.name: f for f in data.spec.features}["listed"]
        assert (listed.kind, listed.dtype, listed.date) == ("numeric", "float32", True)  # the export takes ISO text
        listed = data.train_columns["listed"].astype(np.float64)
        assert np.abs(listed[:, None] - seconds[None, :]).min(axis=1).max() <= 256  # float32 holds seconds to 256

    frame.loc[100, "listed"] = "soon"
    frame.to_csv(tmp_path / "dated.csv", index=False)
    with pytest.raises(DataError, match=r"dated\.csv: line 102, column 'listed': 'soon' is not a date"):
        dataset.load(load(ROOT / "configs/examples/csv.yaml",
                          csv_overrides(tmp_path, tfds_dir, tmp_path / "dated.csv", "data.label_key=kind")))


def test_serving_takes_a_date_input_as_the_iso_text_training_read_and_a_boolean_one_as_false_and_true(tmp_path):
    """What the export's contract marks a date (the CSV held ISO 8601 text) also comes as that text over REST, and
    what it marks boolean (a Parquet bool column) as JSON's false and true; other numbers refuse booleans."""
    import json

    import tensorflow as tf

    from serving.inputs import Input, RequestError, signature_inputs, to_array
    from serving.models import _contract_inputs

    (tmp_path / "assets.extra").mkdir()
    (tmp_path / "assets.extra" / "pipeline.json").write_text(json.dumps({"contract": {"inputs": {
        "listed": {"dtype": "float32", "shape": [None], "date": True}, "area": {"dtype": "float32", "shape": [None]},
        "garden": {"dtype": "int64", "shape": [None], "boolean": True}}}}))
    signature = tf.function(lambda **kw: kw, autograph=False).get_concrete_function(
        listed=tf.TensorSpec([None], tf.float32), area=tf.TensorSpec([None], tf.float32),
        garden=tf.TensorSpec([None], tf.int64))
    inputs = signature_inputs(signature, _contract_inputs(tmp_path))
    assert [(i.name, i.date, i.boolean) for i in inputs.values()] == [
        ("area", False, False), ("garden", False, True), ("listed", True, False)]
    assert _contract_inputs(tmp_path / "elsewhere") == {}
    garden = Input("garden", np.dtype("int64"), (None,), None, boolean=True)
    np.testing.assert_array_equal(to_array(garden, [True, False, 1, 0]), np.array([1, 0, 1, 0], "int64"))
    pool = Input("pool", np.dtype("float32"), (None, 1), None, boolean=True)
    np.testing.assert_array_equal(to_array(pool, [[True], [None]]), np.array([[1], [np.nan]], "float32"))
    with pytest.raises(RequestError, match=r"input 'area': expected numbers \(float32\), got booleans"):
        to_array(Input("area", np.dtype("float32"), (None,), None), [1.5, True])
    listed = Input("listed", np.dtype("float32"), (None,), None, date=True)
    got = to_array(listed, ["2024-01-05", "2024-01-05T01:00:00+01:00", 1704412800, None])
    np.testing.assert_array_equal(got, np.array([1704412800, 1704412800, 1704412800, np.nan], "float32"))
    with pytest.raises(RequestError, match=r"input 'listed': 'yesterday' is no ISO 8601 date"):
        to_array(listed, ["2024-01-05", "yesterday"])
    with pytest.raises(RequestError, match=r"input 'area': expected numbers"):
        to_array(Input("area", np.dtype("float32"), (None,), None), ["2024-01-05"])


def test_a_label_of_one_class_or_one_value_is_refused_before_training(tmp_path, tfds_dir):
    from pipeline.data import dataset

    path = write_houses(tmp_path / "houses.csv")
    frame = pd.read_csv(path)
    frame["kind"] = "house"  # a text label with one value: classification of one class
    frame["fee"] = 250.0  # a number label with one value: a perfect, meaningless regression
    frame.to_csv(path, index=False)
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, path, "data.label_key=kind"))
    with pytest.raises(DataError, match=r"^The training split's label `kind` has 1 class \('house'\): classification "
                                        r"needs at least two"):
        dataset.load(cfg)
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path / "fee", tfds_dir, path, "data.label_key=fee"))
    with pytest.raises(DataError, match=r"^The training split's label `fee` has the same value in all 84 training rows: "
                                        r"regression has nothing to learn \(check `data.label_key`"):
        dataset.load(cfg)


def test_a_time_split_on_a_column_of_text_or_with_gaps_is_one_line_naming_the_setting(tmp_path, tfds_dir):
    """Dates written as 12/31/2020 are text: cutting by them stopped in numpy's "could not convert string to float";
    rows without a time fell in no split, which then read as "fewer than one batch"."""
    from pipeline.data import dataset

    path = write_houses(tmp_path / "houses.csv")
    frame = pd.read_csv(path)
    frame["sold"] = [f"{1 + i % 12:02d}/{1 + i % 28:02d}/2024" for i in range(len(frame))]
    frame.to_csv(path, index=False)
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, path, "data.time_split={column: sold}"))
    with pytest.raises(DataError, match=r"^Invalid `data.time_split.column`: 'sold' holds text, not times; it must hold "
                                        r"numbers or ISO 8601 dates \(2020-12-31\)"):
        dataset.load(cfg)
    frame["sold"] = [np.nan if i % 10 == 0 else 1.7e9 + 3600 * i for i in range(len(frame))]  # seconds, some missing
    frame.to_csv(path, index=False)
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path / "gaps", tfds_dir, path,
                                                                 "data.time_split={column: sold}"))
    with pytest.raises(DataError, match=r"^Invalid `data.time_split.column`: 'sold' is missing in 12 of 120 rows; a "
                                        r"split by time needs a time on every row"):
        dataset.load(cfg)


def test_a_table_too_small_for_its_classes_is_refused_with_the_numbers(tmp_path, tfds_dir):
    from pipeline.data import dataset, stats

    path = write_houses(tmp_path / "houses.csv", n=8)
    frame = pd.read_csv(path)
    frame["kind"] = ["flat", "house", "villa"] * 2 + ["flat", "house"]  # 8 rows, 3 classes: fewer than 3 x 3
    frame.to_csv(path, index=False)
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, path, "data.label_key=kind"))
    with pytest.raises(DataError, match=r"^The data has 8 rows for 3 classes of `kind`: too few to split into train, "
                                        r"validation and test \(at least 3 per class, 9\)$"):
        dataset.load(cfg)
    frame["cost"] = [f"${100_000 + 1000 * i:,}" for i in range(8)]  # a price label written for people: text classes
    frame.to_csv(path, index=False)
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path / "cost", tfds_dir, path, "data.label_key=cost"))
    with pytest.raises(DataError, match=r"^The data has 8 rows for 8 classes of `cost`: too few .*; its values are "
                                        r"numbers written as \$10\d,000: write plain numbers \(1234\.5\) for a regression$"):
        dataset.load(cfg)
    frame["cost"] = ["$1,100", "$1,200"] * 4  # enough rows for its two "classes": trained, and noted
    frame.to_csv(path, index=False)
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path / "two", tfds_dir, path, "data.label_key=cost"))
    assert "label `cost` holds numbers written as $1,100 and trains as 2 classes; write plain numbers (1234.5) for a " \
           "regression" in stats.column_notes(dataset.load(cfg))


def test_a_log_target_over_labels_at_or_below_zero_is_refused_at_data_time(tmp_path, tfds_dir, monkeypatch):
    """Counted in the rows the statistics read: the whole training split, or its first rows when it is larger."""
    from pipeline.data import columns, dataset

    path = write_houses(tmp_path / "houses.csv")
    frame = pd.read_csv(path)
    frame.loc[::3, "price"] = 0.0
    frame.to_csv(path, index=False)
    cfg = load(ROOT / "configs/examples/csv.yaml",
               csv_overrides(tmp_path, tfds_dir, path, "features.target_transform=log"))
    with pytest.raises(DataError, match=r"^`features.target_transform: log` needs labels above 0, but `price` has \d+ "
                                        r"at or below 0 in the training split \(min 0\): use target_transform none$"):
        dataset.load(cfg)
    monkeypatch.setattr(columns, "MAX_STAT_ROWS", 50)
    with pytest.raises(DataError, match=r"has \d+ at or below 0 in the training split's first 50 rows \(min 0\)"):
        dataset.load(cfg)


def test_a_label_of_classes_typed_two_ways_is_noted(tmp_path, tfds_dir):
    """'Yes' and 'yes' are two classes to the model, which is then scored on telling them apart."""
    from pipeline.data import dataset, stats

    path = write_houses(tmp_path / "houses.csv")
    frame = pd.read_csv(path)
    frame["sold"] = np.where(frame.price > frame.price.median(), "Yes", "no")
    frame.loc[::5, "sold"] = "yes"
    frame.to_csv(path, index=False)
    data = dataset.load(load(ROOT / "configs/examples/csv.yaml", csv_overrides(
        tmp_path, tfds_dir, path, "data.label_key=sold", "data.exclude=[price]")))
    assert data.spec.class_names == ["Yes", "no", "yes"]
    assert "label `sold` has classes that differ only in case or spaces ('Yes', 'yes'): each is a class of its " \
           "own, and the model is scored on telling them apart; write them alike in the file" in stats.column_notes(data)


def test_a_class_of_fewer_than_two_training_rows_is_noted(tmp_path, tfds_dir):
    """A class of one row in the file lands in one split: the model cannot learn it, and elsewhere it is an error."""
    from pipeline.data import dataset, stats

    path = write_houses(tmp_path / "houses.csv")
    frame = pd.read_csv(path)
    frame["sold"] = np.where(frame.price > frame.price.median(), "high", "low")
    frame.loc[7, "sold"] = "auction"
    frame.to_csv(path, index=False)
    data = dataset.load(load(ROOT / "configs/examples/csv.yaml", csv_overrides(
        tmp_path, tfds_dir, path, "data.label_key=sold", "data.exclude=[price]")))
    counts = np.bincount(data.train_columns["sold"], minlength=3)
    assert data.spec.class_names == ["auction", "high", "low"] and counts[0] < 2 <= min(counts[1:])
    (note,) = [n for n in stats.column_notes(data) if "fewer than two training rows" in n]
    assert note.startswith(f"label `sold` has classes of fewer than two training rows: 'auction' "
                           f"({'none' if counts[0] == 0 else 'one'}); the model cannot learn to predict them")


def test_a_number_label_of_a_few_whole_values_says_how_to_make_it_classes(tmp_path, tfds_dir):
    """A churn flag of 0 and 1 is a number, so regression: the log target's refusal, and a run's notes
    without it, name the declaration that makes it classification, which then trains classes."""
    from pipeline.data import dataset, stats
    from pipeline.tasks import task_for

    path = write_houses(tmp_path / "houses.csv")
    frame = pd.read_csv(path)
    frame["sold"] = (frame.price > frame.price.median()).astype(int)
    frame.to_csv(path, index=False)
    flag = csv_overrides(tmp_path, tfds_dir, path, "data.label_key=sold", "data.exclude=[price]")
    fix = r"label `sold` holds 2 whole values \(0, 1\) and trains as regression; if they are classes, declare " \
          r"`data.dtypes: \{sold: string\}` for classification"
    with pytest.raises(DataError, match=rf"\(min 0\): {fix}, or use target_transform none$"):
        dataset.load(load(ROOT / "configs/examples/csv.yaml", [*flag, "features.target_transform=log"]))
    data = dataset.load(load(ROOT / "configs/examples/csv.yaml", [*flag, "features.target_transform=none"]))
    assert any(re.fullmatch(fix, note) for note in stats.column_notes(data))
    frame.assign(sold=frame.sold + 1).to_csv(tmp_path / "sold12.csv", index=False)  # 1 and 2: a log target
    cfg = load(ROOT / "configs/examples/csv.yaml", csv_overrides(  # trains them; the note stays
        tmp_path, tfds_dir, tmp_path / "sold12.csv", "data.label_key=sold", "data.exclude=[price]",
        "features.target_transform=log"))
    data = dataset.load(cfg)
    labels = task_for(cfg, data.spec).label_values(data.train_columns["sold"])  # as the train job hands them over
    assert any(note.startswith("label `sold` holds 2 whole values (1, 2)") for note in stats.column_notes(data, labels))
    assert not any("whole values" in note for note in stats.column_notes(data))  # its log, 0.69, is no whole value
    classes = dataset.load(load(ROOT / "configs/examples/csv.yaml", [*flag, "data.dtypes={sold: string}"]))
    assert classes.spec.task == "classification" and not stats.column_notes(classes)
    assert stats.classes_hint(np.array([1.5, 2.0, 3.0]), "stars") is None  # not whole: a measurement


def test_data_errors_that_need_no_tensorflow_come_before_it(tmp_path):
    """A missing file, a label absent from the header, an unknown dataset: one line, exit 3, TensorFlow not imported."""
    import subprocess
    import sys

    path = write_houses(tmp_path / "houses.csv")
    base = ["train", str(ROOT / "configs/examples/csv.yaml"), f"workdir={tmp_path / 'work'}"]
    cases = [[*base, f"data.path={tmp_path / 'nope.csv'}"], [*base, f"data.path={path}", "data.label_key=cost"],
             [*base, f"data.path={path}", "data.dataset=nope"], [*base, "data.path=https://example.com/houses.csv"]]
    script = ("import sys; from pipeline.cli import main\n"
              f"codes = [main(args) for args in {cases!r}]\n"
              "print(codes, 'TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED')")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "[3, 3, 3, 3] TF_NOT_IMPORTED" in proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert "file not found" in lines[0] and "missing label column 'cost'" in lines[1]
    assert lines[2].startswith("error: Unknown dataset `data.dataset`: 'nope'")
    assert "https://example.com/houses.csv is a URL, and `data.path` is read with this machine's file calls" in lines[3]


@pytest.mark.parametrize("header,rows,message", [
    ("area,price/m2,price_m2,price", 5, r"columns 'price/m2' and 'price_m2' would both be the model input "
                                        r"'price_m2' \(a character other than ASCII letters, digits and _ is written"),
    ("area, ,price", 5, r"column 2 has no name in the header; a column becomes a model input, which needs one"),
    (",area,price", 5, r"column 1 has no name in the header \(pandas writes its index so: to_csv\(index=False\)"),
    ("area,area,price", 5, r"columns 1 and 2 are both named 'area'"),
    ("area;rooms;price", 5, r"its header is one column, 'area;rooms;price': its fields are separated by ';', not ',' "
                            r"\(set `data.delimiter: ';'`\)"),
    ("area\trooms\tprice", 5, r"its fields are separated by tab, not ',' \(set `data.delimiter: tab`\)"),
    ("area,rooms,price", 0, r"0 data rows under the header; a table needs at least 3"),
    ("", 0, r"t\.csv: the file is empty: no header line naming its columns$"),
    ("area,rooms,price", 1, r"1 data row under the header"),
])
def test_tables_whose_columns_or_rows_cannot_train_are_refused_before_tensorflow(tmp_path, header, rows, message):
    from pipeline.data.checks import check

    path = tmp_path / "t.csv"
    path.write_text(header + "\n" + "".join("1,2,3\n" for _ in range(rows)))
    cfg = load(ROOT / "configs/examples/csv.yaml", [f"data.path={path}", f"workdir={tmp_path}"])
    with pytest.raises(DataError, match=message):
        check(cfg)


def test_a_type_declared_for_a_column_the_table_lacks_is_refused_before_tensorflow(tmp_path):
    from pipeline.data.checks import check

    path = tmp_path / "t.csv"
    path.write_text("area,rooms,price\n" + "1,2,3\n" * 5)
    cfg = load(ROOT / "configs/examples/csv.yaml", [f"data.path={path}", f"workdir={tmp_path}", "data.dtypes={room: int}"])
    with pytest.raises(DataError, match=r"^Invalid `data.dtypes`: 'room' is not a column of \S+t\.csv; it has area, "
                                        r"rooms, price\.$"):  # a misspelt name would otherwise be ignored
        check(cfg)


def test_a_header_of_spaces_brackets_slashes_and_leading_digits_trains_and_serves_under_input_names(
        tmp_path, tfds_dir, capsys):
    """A column keeps its file's name in the config and the data; the model and the export take it under its input
    name, the same in Python, in the SavedModel's signature (TF Serving's) and in ``pipeline serve`` (which also takes
    the file's name); the run says which, and the contract names both."""
    import json

    import tensorflow as tf

    from pipeline.data.spec import input_name
    from pipeline.export.saved_model import read_metadata
    from pipeline.jobs.train import train
    from serving.app import _predict
    from serving.inputs import RequestError
    from serving.models import Servable

    assert [input_name(c) for c in ("floor area (m²)", "1st/2nd rooms", "_id", "Gr_Liv_Area")] == [
        "floor_area__m__", "arg_1st_2nd_rooms", "arg__id", "Gr_Liv_Area"]
    frame = pd.read_csv(write_houses(tmp_path / "houses.csv"))
    frame.rename(columns={"area": "floor area (m²)", "rooms": "1st/2nd rooms"}).to_csv(tmp_path / "odd.csv", index=False)
    result = train(load(ROOT / "configs/examples/csv.yaml", csv_overrides(tmp_path, tfds_dir, tmp_path / "odd.csv")))
    assert ("note: the export takes 'floor area (m²)' as 'floor_area__m__', '1st/2nd rooms' as 'arg_1st_2nd_rooms' "
            in capsys.readouterr().err)
    inputs = read_metadata(result.export_path)["contract"]["inputs"]
    assert inputs["floor_area__m__"]["column"] == "floor area (m²)" and "column" not in inputs["city"]
    names = {"floor_area__m__", "arg_1st_2nd_rooms", "city"}
    signature = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:  # TF Serving's loader: the SavedModel's own signature
        saved = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(result.export_path))
    assert set(saved.signature_def["serving_default"].inputs) == set(signature.structured_input_signature[1]) == names

    servable = Servable("houses", 1, result.export_path)
    rows = {"floor_area__m__": [120.5, 60.0], "arg_1st_2nd_rooms": [3, 1], "city": ["north", "east"]}
    served = servable.call("serving_default", servable.convert("serving_default", rows, 16)[0])["prediction"]
    columns = {"floor area (m²)": tf.constant([120.5, 60.0]), "1st/2nd rooms": tf.constant([3, 1], tf.int64),
               "city": tf.constant(["north", "east"])}  # the model's inputs keep the columns' names
    np.testing.assert_allclose(served, result.model(columns, training=False).numpy().reshape(-1), rtol=1e-5)
    assert json.dumps(servable.metadata()).count("floor_area__m__") >= 1

    # `pipeline serve` also takes the file's names, as rows or columns, and refuses a column given under both
    by_file = {"floor area (m²)": [120.5, 60.0], "1st/2nd rooms": [3, 1], "city": ["north", "east"]}
    as_rows = [dict(zip(by_file, row)) for row in zip(*by_file.values())]
    assert _predict(servable, {"instances": as_rows}, 16)[0]["predictions"] == served.tolist()
    assert _predict(servable, {"inputs": by_file}, 16)[0]["outputs"] == served.tolist()
    with pytest.raises(RequestError, match=r"^instances\[1\]: '1st/2nd rooms' and 'arg_1st_2nd_rooms' are the same "):
        _predict(servable, {"instances": [as_rows[0], {**as_rows[1], "arg_1st_2nd_rooms": 1}]}, 16)
    # a mistake names an input by both names, since the client may know either
    with pytest.raises(RequestError, match=r"^instances\[1\]: missing input 'arg_1st_2nd_rooms' \(column '1st/2nd "
                                           r"rooms'\)$"):
        _predict(servable, {"instances": [as_rows[0], {k: v for k, v in as_rows[1].items() if k != "1st/2nd rooms"}]}, 16)
    with pytest.raises(RequestError, match=r"^input 'floor_area__m__' \(column 'floor area \(m²\)'\): expected "
                                           r"numbers \(float32\), got strings$"):
        _predict(servable, {"inputs": {**by_file, "floor area (m²)": ["big", "small"]}}, 16)


def test_a_huge_text_cell_costs_its_size_in_the_statistics_not_its_size_times_the_rows():
    import tracemalloc

    from pipeline.data.stats import MAX_TEXT, _summary

    values = np.array([b"north", b"south", b"x" * 5_000_000] + [b"east"] * 5_000, dtype=object)
    tracemalloc.start()
    summary = _summary(values, "categorical")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50_000_000  # np.unique over fixed-width text would take 5,003 x 5 M characters x 4 bytes
    assert summary["cardinality"] == 4 and max(len(c) for c in summary["categories"]) == MAX_TEXT


def test_a_csv_saved_with_a_byte_order_mark_keeps_its_first_column_name(tmp_path):
    from pipeline.data.checks import check, header

    path = tmp_path / "excel.csv"
    path.write_bytes("area,rooms,price\n1,2,3\n4,5,6\n7,8,9\n".encode("utf-8-sig"))
    assert header(path) == ["area", "rooms", "price"]
    check(load(ROOT / "configs/examples/csv.yaml", [f"data.path={path}", f"workdir={tmp_path}"]))  # nothing raised


def test_a_users_implicit_vector_is_the_sum_of_their_rated_items_scaled_by_the_root_of_their_count():
    """SVD++'s |N(u)|^-1/2 sum: a user who rated 4 distinct items weighs each by 1/2 (a repeated rating counts
    once); a user who rated nothing gets zeros; a user asked for on several rows gets the same vector on each."""
    from pipeline.models.recommender import _implicit, _rated

    layer = _implicit(_rated(np.array([1, 1, 1, 1, 1, 2]), np.array([3, 4, 5, 6, 6, 3]), n_users=4), n_items=8,
                      factors=2, reg=None)
    layer.build((None,))
    embeddings = np.arange(16, dtype=np.float32).reshape(8, 2)
    layer.embeddings.assign(embeddings)
    vectors = np.asarray(layer(np.array([[2, 1], [1, 0]])))
    one, two = embeddings[[3, 4, 5, 6]].sum(axis=0) / 2, embeddings[3]
    np.testing.assert_allclose(vectors, [[two, one], [one, [0, 0]]])
