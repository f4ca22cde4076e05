"""Data: the TFDS digits builder, fixed disjoint splits, augmentation on the training split only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import DataError

from .conftest import ROOT


def _ids(cfg, split: str) -> list[int]:
    import tensorflow_datasets as tfds

    import pipeline.data.builders  # noqa: F401

    ds = tfds.load(cfg.data.dataset, split=getattr(cfg.data.splits, split), data_dir=cfg.data.data_dir)
    return [int(ex["id"]) for ex in ds.as_numpy_iterator()]


def test_digits_builder_prepares_every_example_as_uint8_images(tiny_cfg):
    from pipeline.data import dataset
    from pipeline.data.spec import Feature

    spec = dataset.load(tiny_cfg()).spec
    assert (spec.name, spec.version) == ("digits", "1.0.0")
    assert sum(spec.sizes.values()) == 1797
    assert spec.features == (Feature("image", "image", "uint8", (8, 8, 1)),)
    assert spec.task == "classification"
    assert spec.num_classes == 10 and spec.class_names == [str(d) for d in range(10)]


def test_splits_are_fixed_across_loads_and_disjoint(tiny_cfg):
    from pipeline.data import dataset

    cfg = tiny_cfg()
    ids = {split: _ids(cfg, split) for split in ("train", "validation", "test")}
    again = {split: _ids(cfg, split) for split in ("train", "validation", "test")}
    assert ids == again
    sets = {k: set(v) for k, v in ids.items()}
    assert not (sets["train"] & sets["validation"] or sets["train"] & sets["test"] or sets["validation"] & sets["test"])
    assert set().union(*sets.values()) == set(range(1797))
    assert dataset.load(cfg).spec.digest == dataset.load(cfg).spec.digest


def test_a_prepared_example_is_written_the_same_in_every_process_so_the_same_data_has_one_digest(tiny_cfg):
    """Protobuf writes a map (an example's features) in its hash table's order, which differs from process to
    process: the digits prepared in six processes had four digests. Each record must be protobuf's
    deterministic (key-sorted) form of itself, the same bytes wherever it is prepared."""
    import tensorflow as tf

    from pipeline.data import dataset

    cfg = tiny_cfg()
    dataset.load(cfg)
    files = sorted(Path(cfg.data.data_dir).rglob("digits-*.tfrecord*"))
    records = [r.numpy() for r in tf.data.TFRecordDataset([str(f) for f in files])]
    assert len(records) == 1797
    assert all(r == tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in records)


def test_digest_changes_with_the_split(tiny_cfg):
    from pipeline.data import dataset

    a = dataset.load(tiny_cfg()).spec.digest
    b = dataset.load(tiny_cfg("data.splits.test=train[90%:]")).spec.digest
    assert a != b


def _first_batch(ds):
    x, y = next(iter(ds))
    return x["image"].numpy(), y.numpy()


def test_augmentation_touches_the_training_split_only(tiny_cfg):
    from pipeline.data import dataset
    from pipeline.data.augment import build_augmenter

    cfg = tiny_cfg("data.shuffle_buffer=0", "augment.layers=[{type: gaussian_noise, stddev: 0.1}]")
    plain = dataset.load(cfg)
    augmented = dataset.load(cfg, augmenter=build_augmenter(cfg.augment, cfg.seed))
    for split in ("validation", "test"):
        np.testing.assert_array_equal(_first_batch(getattr(plain, split))[0], _first_batch(getattr(augmented, split))[0])
    x_plain, y_plain = _first_batch(plain.train)
    x_aug, y_aug = _first_batch(augmented.train)
    np.testing.assert_array_equal(y_plain, y_aug)
    assert not np.allclose(x_plain, x_aug)


def test_augmentation_differs_between_epochs_but_replays_with_the_same_seed(tiny_cfg):
    from pipeline.data import dataset
    from pipeline.data.augment import build_augmenter

    cfg = tiny_cfg("data.shuffle_buffer=0", "augment.layers=[{type: rotation, degrees: 30}]")

    def two_epochs():
        import keras

        keras.utils.set_random_seed(cfg.seed)
        train = dataset.load(cfg, augmenter=build_augmenter(cfg.augment, cfg.seed)).train
        return _first_batch(train)[0], _first_batch(train)[0]

    first, second = two_epochs()
    assert not np.allclose(first, second)  # a fresh draw each epoch (tensorflow issue 35682)
    replay_first, replay_second = two_epochs()
    np.testing.assert_array_equal(first, replay_first)
    np.testing.assert_array_equal(second, replay_second)


def test_unknown_dataset_is_a_data_error_naming_the_field(tiny_cfg):
    from pipeline.data import dataset

    with pytest.raises(DataError, match=r"Unknown dataset `data.dataset`: 'no_such_data'"):
        dataset.load(tiny_cfg("data.dataset=no_such_data"))


def test_a_path_given_to_a_dataset_that_reads_none_is_refused_before_any_work(tiny_cfg):
    """A user's table under the default dataset (``dataset: csv`` forgotten) would train digits named after it."""
    from pipeline.data.checks import check

    with pytest.raises(DataError, match=r"^`data.path` \(sales.csv\) is read by the csv, series, image_folder and "
                                        r"audio_folder datasets only; `data.dataset` is 'digits', which reads no path"):
        check(tiny_cfg("data.path=sales.csv"))


@pytest.mark.parametrize("override, key, name", [
    ("data.columns=[pixels]", "data.columns", "pixels"),
    ("features.kinds={pixels: numeric}", "features.kinds", "pixels"),
    ("data.dtypes={pixels: float}", "data.dtypes", "pixels"),
])
def test_a_key_naming_a_feature_the_data_lacks_is_one_error_naming_the_key(tiny_cfg, override, key, name):
    from pipeline.data import dataset

    with pytest.raises(DataError, match=rf"^Invalid `{key}`: '{name}' is not a feature of digits; it has id, image, label\.$"):
        dataset.load(tiny_cfg(override))


def test_a_recommenders_ids_and_context_must_be_features_the_model_sees(tiny_cfg):
    from pipeline.data import dataset

    with pytest.raises(DataError, match=r"^Invalid `model.recommender.user`: 'userId' is not among the model's features "
                                        r"\(image; `data.columns` and `data.exclude` choose them\)\.$"):
        dataset.load(tiny_cfg("model.name=recommender"))
    with pytest.raises(DataError, match=r"^Invalid `model.recommender.context`: 'id' is not among the model's features "
                                        r"\(image; "):  # a feature of the data, but not one that `data.columns` takes
        dataset.load(tiny_cfg("model.name=recommender", "model.recommender={user: image, item: image, context: [id]}"))


def test_augment_preview_writes_a_png_grid(tiny_cfg, tmp_path):
    from PIL import Image

    from pipeline.data.augment import preview

    cfg = tiny_cfg()
    out = preview(cfg, tmp_path / "grid.png", n_images=3)
    with Image.open(out) as img:
        width, height = img.size
    # original + 3 configured layers + all combined, one row per image
    assert width / height == pytest.approx(5 / 3, rel=0.1)


def test_picking_features_runs_on_blocks_of_table_rows_with_the_same_examples_in_order(monkeypatch):
    """A map that only picks features costs tf.data more per call than the rows it moves: a table's is called on
    blocks; images too large for a block, or of varying shapes, stay one per call. Same examples, same order,
    the count still known."""
    import tensorflow as tf

    from pipeline.data import columns, tfds_reader

    monkeypatch.setattr(tfds_reader, "BLOCK", 7)
    calls = []

    def pick(ex):
        calls.append(ex["x"].shape)  # traced once: the shape it is called on
        return {"x": ex["x"], "city": ex["city"]}, ex["y"]

    rows = {"x": np.arange(50, dtype=np.float32), "city": np.array([f"c{i % 3}" for i in range(50)]),
            "y": np.arange(50) % 2, "unused": np.zeros(50)}
    table = columns.blockwise(tf.data.Dataset.from_tensor_slices(rows), pick)
    assert calls == [tf.TensorShape([None])] and int(table.cardinality()) == 50
    assert [float(x["x"]) for x, _ in table.as_numpy_iterator()] == list(range(50))

    big = {"x": np.zeros((20, 1)), "city": np.array(["a"] * 20), "y": np.zeros(20),
           "image": np.zeros((20, 512, 512, 3), np.uint8)}
    calls.clear()
    assert len(list(columns.blockwise(tf.data.Dataset.from_tensor_slices(big), pick))) == 20
    assert calls == [tf.TensorShape([1])]  # an example at a time: 7 such images are 5 MB
    ragged = tf.data.Dataset.from_generator(lambda: ({"x": np.zeros(n), "city": "a", "y": 0} for n in (1, 2, 3)),
                                            output_signature={"x": tf.TensorSpec([None], tf.float64),
                                                              "city": tf.TensorSpec([], tf.string),
                                                              "y": tf.TensorSpec([], tf.int64)})
    calls.clear()
    assert [len(x["x"]) for x, _ in columns.blockwise(ragged, pick).as_numpy_iterator()] == [1, 2, 3]
    assert calls == [tf.TensorShape([None])]  # varying shapes: one per call


def test_a_wide_tables_columns_travel_packed_one_tensor_per_dtype_and_arrive_as_columns():
    """tf.data's shuffle, cache and batch cost per tensor of an element: 300 columns would pay it 300 times a row.
    A column named like a packed tensor keeps its own name."""
    import tensorflow as tf

    from pipeline.data import columns
    from pipeline.data.spec import DataSpec, Feature

    features = (Feature("a", "numeric", "float32"), Feature("packed:float32", "numeric", "float32"),
                Feature("b", "numeric", "float32"), Feature("city", "categorical", "string"),
                Feature("zip", "categorical", "string"), Feature("rooms", "numeric", "int64"),
                Feature("history", "sequence", "float32", (3,)))
    spec = DataSpec("t", "1", {}, {}, "", features, "y", "regression")
    n = 10
    rows = {"a": np.arange(n, dtype=np.float32), "packed:float32": -np.arange(n, dtype=np.float32),
            "b": np.ones(n, np.float32), "city": np.array([f"c{i % 3}".encode() for i in range(n)]),
            "zip": np.array([f"z{i}".encode() for i in range(n)]), "rooms": np.arange(n),
            "history": np.zeros((n, 3), np.float32), "y": np.arange(n, dtype=np.float32)}
    examples = columns.pairs(tf.data.Dataset.from_tensor_slices(rows), spec)
    assert sorted(examples.element_spec[0]) == ["history", "packed_0:float32", "packed_0:string", "rooms"]
    assert examples.element_spec[0]["packed_0:float32"].shape == [3]
    for x, y in examples.batch(4).take(1):
        for batch in (x, {k: v.numpy() for k, v in x.items()}):  # in the graph and in NumPy alike
            got = columns.unpacked(batch, spec)
            assert sorted(got) == sorted(f.name for f in features)
            for name in got:
                np.testing.assert_array_equal(np.asarray(got[name]), rows[name][:4])
        np.testing.assert_array_equal(y.numpy(), rows["y"][:4])


def test_a_prepared_dataset_is_found_without_tensorflow(tiny_cfg, tmp_path):
    """`pipeline train --workers N` asks this before it would prepare: a launcher that only waits on its
    workers then never starts TensorFlow (seconds of CPU and hundreds of MB for the whole training)."""
    from pipeline.data import dataset

    cfg = tiny_cfg()
    dataset.prepare(cfg)
    script = ("import sys; from pipeline.config import load; from pipeline.data.dataset import is_prepared\n"
              "found = [is_prepared(load('configs/digits.yaml', [f'data.data_dir={d}'])) for d in sys.argv[1:]]\n"
              "print(*found, 'tensorflow' in sys.modules)")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run([sys.executable, "-c", script, cfg.data.data_dir, str(tmp_path / "empty")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "TMPDIR": str(scratch)})
    assert proc.stdout.split() == ["True", "False", "False"], proc.stderr[-2000:]
    assert not proc.stderr  # TFDS' notices (no dataset_info.json in the empty folder) stay quiet
    assert not list(scratch.iterdir())  # nor a temporary folder per question, which a nightly job would pile up


def test_a_launcher_checks_the_config_against_a_prepared_dataset_before_any_worker_starts(tiny_cfg, tmp_path):
    """One line, exit 3, no worker started, and still no TensorFlow in the launcher."""
    from pipeline.data import dataset

    cfg = tiny_cfg()
    dataset.prepare(cfg)
    workdir = tmp_path / "work"
    script = ("import sys; from pipeline.cli import main\n"
              f"rc = main(['train', 'configs/digits.yaml', 'data.data_dir={cfg.data.data_dir}', 'workdir={workdir}', "
              "'data.columns=[nope]', '--workers', '2'])\n"
              "print(rc, 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["3", "False"], proc.stderr[-2000:]
    assert proc.stderr.splitlines() == ["error: Invalid `data.columns`: 'nope' is not a feature of digits; it has id, "
                                        "image, label."]
    assert not (workdir / "workers").exists()
