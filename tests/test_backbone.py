"""Transfer learning: pretrained Keras applications under the pipeline's head, fine-tuned in two phases.

No network here: weights come from files by path, or from a file put where Keras
caches its ImageNet downloads, as on an air-gapped training machine.
"""

from __future__ import annotations

import numpy as np
import pytest

BACKBONE = ("model.name=backbone", "model.backbone=mobilenet_v3_small", "model.head_units=16")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A MobileNetV3Small's weights saved by path (Keras' format) and as Keras caches ImageNet files (legacy h5)."""
    import keras

    folder = tmp_path_factory.mktemp("weights")
    keras.utils.set_random_seed(7)
    net = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                              include_preprocessing=True)
    net.save_weights(folder / "mine.weights.h5")
    cache = folder / "keras_home" / "models"
    cache.mkdir(parents=True)
    net.save(cache / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5")  # a whole model: Keras reads its weights
    return folder, [w.numpy() for w in net.weights]


def _same(weights, expected) -> bool:
    return all(np.array_equal(np.asarray(w), e) for w, e in zip(weights, expected, strict=True))


def test_weights_load_by_path_and_from_keras_cache_without_a_download(pretrained, tiny_cfg, monkeypatch):
    from pipeline.models import backbone

    folder, expected = pretrained
    by_path = backbone.application(tiny_cfg(*BACKBONE, f"model.weights={folder / 'mine.weights.h5'}"))
    assert _same(by_path.weights, expected)
    monkeypatch.setenv("KERAS_HOME", str(folder / "keras_home"))
    cached = backbone.application(tiny_cfg(*BACKBONE, "model.weights=imagenet"))
    assert _same(cached.weights, expected)
    random = backbone.application(tiny_cfg(*BACKBONE, "model.weights=none"))
    assert not _same(random.weights, expected)


@pytest.mark.slow
def test_weights_that_do_not_fit_fail_before_any_run_in_one_line_naming_the_file(pretrained, tiny_cfg, tmp_path,
                                                                                 monkeypatch):
    from pipeline.errors import ConfigError
    from pipeline.jobs.train import train

    folder, _ = pretrained
    mine = folder / "mine.weights.h5"
    cfg = tiny_cfg(*BACKBONE, "model.backbone=efficientnet_b0", f"model.weights={mine}")
    with pytest.raises(ConfigError, match=f"^Invalid `model.weights`: {mine} does not fit backbone efficientnet_b0: "):
        train(cfg)
    assert not (tmp_path / "work" / "runs").exists() or not any((tmp_path / "work" / "runs").iterdir())
    with pytest.raises(ConfigError, match="missing.h5 is not a file"):
        train(tiny_cfg(*BACKBONE, f"model.weights={tmp_path / 'missing.h5'}"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))  # no cached file,
    for proxy in ("https_proxy", "HTTPS_PROXY"):  # and the download goes nowhere, network or not
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="on a machine without internet access put "
                                          "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5 in "):
        train(tiny_cfg(*BACKBONE, "model.weights=imagenet"))


# Phase one (epoch 0) trains the head on a frozen backbone, phase two (epochs 1-2) the top 12 layers.
FINE_TUNE = (*BACKBONE, "train.epochs=3", "model.fine_tune.frozen_epochs=1", "model.fine_tune.layers=12",
             "train.early_stopping.enabled=false", "optimizer.learning_rate=0.01", "augment.layers=[]",
             "train.baselines=none", "data.splits.train=train[:15%]", "data.splits.validation=train[15%:25%]")


def _fine_tune(cfg):
    """Train ``cfg``; return the result and the backbone's weights by path after phase one."""
    import keras

    from pipeline.jobs.train import train

    after_phase_one = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                after_phase_one.update({w.path: w.numpy() for w in self.model.get_layer("backbone").weights})

    return train(cfg, callbacks=[Snapshot()]), after_phase_one


@pytest.fixture(scope="module")
def fine_tuned(pretrained, tmp_path_factory, tfds_dir):
    """One uninterrupted fine-tuning with model.fit, exported (two phases of a pretrained network are
    the slowest training here: the tests of the phases and of resuming in phase two share it)."""
    from pipeline.config import load

    from .conftest import DIGITS, tiny

    folder, _ = pretrained
    workdir = tmp_path_factory.mktemp("fine_tuned") / "work"
    return _fine_tune(load(DIGITS, tiny(workdir, tfds_dir, *FINE_TUNE, f"model.weights={folder / 'mine.weights.h5'}")))


def _assert_phases(result, after_phase_one, expected) -> None:
    """Phase one leaves the backbone as loaded; phase two changes its top layers only, never batch norm statistics."""
    import keras

    from pipeline.models import backbone

    net = result.model.get_layer("backbone")
    tuned = {w.path for layer in backbone.tuned_layers(result.model, 12) for w in layer.weights}
    assert tuned and not any(isinstance(layer, keras.layers.BatchNormalization)
                             for layer in backbone.tuned_layers(result.model, 12))
    before = dict(zip([w.path for w in net.weights], expected, strict=True))
    assert all(np.array_equal(after_phase_one[path], value) for path, value in before.items())  # phase one: frozen
    changed = {w.path for w in net.weights if not np.array_equal(w.numpy(), before[w.path])}
    assert changed and changed <= tuned  # phase two: the top layers only
    statistics = [w for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights]
    assert statistics and all(np.array_equal(w.numpy(), before[w.path]) for w in statistics)


@pytest.mark.slow
def test_fine_tuning_trains_the_head_then_the_top_layers_and_never_batch_norm_statistics(pretrained, fine_tuned):
    _assert_phases(*fine_tuned, pretrained[1])
    result, _ = fine_tuned
    assert result.checks["verify.max_abs_diff"] < 1e-4  # the export takes the digits' raw 8x8 grey pixels


@pytest.mark.slow
def test_the_multi_worker_loop_fine_tunes_in_the_same_two_phases(pretrained, tiny_cfg):
    folder, expected = pretrained
    cfg = tiny_cfg(*FINE_TUNE, f"model.weights={folder / 'mine.weights.h5'}", "train.epochs=2", "train.loop=custom",
                   "export.enabled=false")
    _assert_phases(*_fine_tune(cfg), expected)


@pytest.mark.slow
def test_a_run_that_crashes_in_phase_two_resumes_there_and_ends_as_an_uninterrupted_one(pretrained, fine_tuned,
                                                                                         tiny_cfg):
    import keras

    from pipeline.jobs.train import train
    from pipeline.models import backbone

    folder, _ = pretrained
    reference, _ = fine_tuned

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # phase two's first epoch is done and saved
                raise RuntimeError("the machine went away")

    cfg = tiny_cfg(*FINE_TUNE, f"model.weights={folder / 'mine.weights.h5'}", "export.enabled=false")
    with pytest.raises(RuntimeError, match="went away"):
        train(cfg, callbacks=[Crash()])
    resumed = train(cfg)  # the same command again: phase two goes on with the restored optimizer and lowered rate
    assert all(layer.trainable for layer in backbone.tuned_layers(resumed.model, 12))
    assert resumed.history["val_loss"] == pytest.approx(reference.history["val_loss"], abs=1e-5)
    for mine, theirs in zip(resumed.model.weights, reference.model.weights, strict=True):
        # exactly: the top layers' phase-two steps are tiny here (random "pretrained" weights), and deterministic
        # ops in one process repeat them bit for bit
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs), err_msg=mine.path)


def test_resnet_preprocessing_inside_the_model_matches_keras_preprocess_input():
    import keras

    from pipeline.models.backbone import _caffe

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    inputs = keras.Input((4, 4, 3))
    inside = keras.Model(inputs, _caffe(inputs))(pixels)
    expected = keras.applications.resnet50.preprocess_input(pixels.copy())
    np.testing.assert_allclose(np.asarray(inside), expected, atol=1e-4)
