"""Export: TF Serving layout, a pinned contract, verified before publication."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ExportError


def _test_images(cfg):
    from pipeline.data import dataset

    data = dataset.load(cfg)
    return data, np.concatenate([x["image"].numpy() for x, _ in data.test])


def test_export_lands_in_tf_serving_layout_with_its_metadata(trained):
    cfg, result = trained
    assert result.export_path == Path(cfg.export.root) / "digits" / "1"
    assert (result.export_path / "saved_model.pb").is_file() and (result.export_path / "variables").is_dir()
    meta = json.loads((result.export_path / "assets.extra" / "pipeline.json").read_text())
    assert meta["run_id"] == result.run_id and meta["data"]["name"] == "digits"


def test_serving_contract_names_dtypes_and_shapes_are_pinned(trained):
    import tensorflow as tf

    _, result = trained
    loaded = tf.saved_model.load(str(result.export_path))
    assert list(loaded.signatures) == ["serving_default"]  # image_bytes is for image_folder data (test_tabular.py)
    fn = loaded.signatures["serving_default"]
    inputs = fn.structured_input_signature[1]
    assert {k: (v.dtype, v.shape.as_list()) for k, v in inputs.items()} == {"image": (tf.uint8, [None, 8, 8, 1])}
    outputs = fn.structured_outputs
    assert {k: (v.dtype, v.shape.as_list()) for k, v in outputs.items()} == {
        "probabilities": (tf.float32, [None, 10]),
        "class_id": (tf.int64, [None]),
        "class_name": (tf.string, [None]),
    }


FRESH_PROCESS_CHECK = """
import sys, numpy as np, tensorflow as tf
path, images, expected = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3])
serve = tf.saved_model.load(path).signatures["serving_default"]
first = serve(image=tf.constant(images))
second = serve(image=tf.constant(images))
assert np.array_equal(first["probabilities"].numpy(), second["probabilities"].numpy()), "not deterministic"
diff = float(np.max(np.abs(first["probabilities"].numpy() - expected)))
assert diff <= 1e-5, diff
assert np.array_equal(first["class_id"].numpy(), expected.argmax(axis=1))
assert [name.decode() for name in first["class_name"].numpy()] == [str(i) for i in expected.argmax(axis=1)]
assert not any(m == "pipeline" or m.startswith("pipeline.") for m in sys.modules), "project code imported"
print("OK", diff)
"""


@pytest.mark.slow
def test_export_round_trip_in_a_fresh_process_is_deterministic_and_matches_predict(trained, tmp_path):
    cfg, result = trained
    _, images = _test_images(cfg)
    np.save(tmp_path / "images.npy", images.astype(np.uint8))
    np.save(tmp_path / "expected.npy", result.model.predict({"image": images}, verbose=0))
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_CHECK, str(result.export_path), str(tmp_path / "images.npy"),
         str(tmp_path / "expected.npy")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("OK"), proc.stderr[-2000:]


def test_each_export_is_a_new_version_and_leaves_no_temporary_folder(trained):
    from pipeline.export import export, versions

    cfg, result = trained
    data, _ = _test_images(cfg)
    before = versions(result.export_path.parent)
    path, checks = export(result.model, cfg, data.spec, data.test)
    assert versions(path.parent) == [*before, before[-1] + 1] and path.name == str(before[-1] + 1)
    assert checks["verify.max_abs_diff"] <= 1e-5
    assert [p.name for p in path.parent.iterdir() if not p.name.isdigit()] == []


def test_verification_reads_a_bounded_sample_of_the_test_split(trained):
    """A table of millions of rows is verified on the first batches holding export.verify_examples, not all of it."""
    from pipeline.export import verify

    cfg, result = trained
    data, _ = _test_images(cfg)
    bounded = cfg.model_copy(update={"export": cfg.export.model_copy(update={"verify_examples": 1})})
    assert verify(result.export_path, result.model, bounded, data.spec, data.test)["verify.examples"] == \
        cfg.data.batch_size < data.spec.sizes["test"]


def test_verification_rejects_a_model_that_does_not_match(trained, tiny_cfg):
    from pipeline.export import verify
    from pipeline.models import build_model

    cfg, result = trained
    data, _ = _test_images(cfg)
    stranger = build_model(cfg, data.spec)  # same architecture, untrained weights
    with pytest.raises(ExportError, match="differs from model.predict"):
        verify(result.export_path, stranger, cfg, data.spec, data.test)


def test_a_failed_verification_publishes_no_version(trained, monkeypatch):
    from pipeline.export import export, saved_model, versions

    cfg, result = trained
    data, _ = _test_images(cfg)
    before = versions(result.export_path.parent)

    def reject(*args, **kwargs):
        raise ExportError("parity failed")

    monkeypatch.setattr(saved_model, "verify", reject)
    with pytest.raises(ExportError):
        export(result.model, cfg, data.spec, data.test)
    assert versions(result.export_path.parent) == before
    assert [p.name for p in result.export_path.parent.iterdir() if not p.name.isdigit()] == []


def test_only_ascii_digit_folders_inside_the_root_are_versions(trained, tmp_path):
    """A folder named '²' ("²".isdigit() is true) or '١' is no version, and a version linked from outside the
    root is not served; neither stops the scan, publishing, or another model's versions."""
    import shutil

    from pipeline.export import version_of, versions
    from pipeline.export.saved_model import promote
    from serving.models import Repository

    _, result = trained
    root, outside = tmp_path / "exports", tmp_path / "elsewhere"
    shutil.copytree(result.export_path, root / "digits" / "1")
    for odd in ("²", "١"):
        shutil.copytree(result.export_path, root / "digits" / odd)
    shutil.copytree(result.export_path, outside / "7")
    (root / "digits" / "7").symlink_to(outside / "7")

    assert [version_of(root / "digits" / n) for n in ("1", "²", "١")] == [1, None, None]
    assert versions(root / "digits") == [1, 7]
    assert promote(result.export_path, root / "digits").name == "8"  # published next to them

    repository = Repository(root, keep=5)
    repository.scan()
    assert sorted(repository.models()["digits"]) == [1, 8]  # not the link out of the root, not '²'


def test_a_diverged_model_is_named_as_such_and_not_exported(tiny_cfg):
    from pipeline.jobs.train import train

    cfg = tiny_cfg("optimizer.name=sgd", "optimizer.learning_rate=1e30", "train.epochs=1", "tracking.enabled=false")
    with pytest.raises(ExportError, match=r"^Training diverged: the model's probabilities are NaN or infinite"):
        train(cfg)
    model_dir = Path(cfg.export.root) / cfg.export.model_name
    assert not model_dir.exists() or [p for p in model_dir.iterdir() if not p.name.startswith(".")] == []
