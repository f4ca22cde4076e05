"""Export an inference-only SavedModel in TF Serving's layout, verified before it is published.

Layout: ``<root>/<model name>/<version>/`` with increasing integer versions.
A version is written to a hidden temporary folder beside them (TF Serving
ignores names that are not integers), verified with plain TensorFlow, and only
then renamed into place: a reader never sees half a version, and a version
that fails verification never appears.

Serving contract (pinned by tests/test_export.py; clients rely on it):
    signature ``serving_default``
    input   ``<data.image_key>`` (default ``image``): raw pixels, the dataset's dtype
            (uint8 for images), shape [batch, height, width, channels]
    outputs ``probabilities``: float32 [batch, classes]; ``class_id``: int64 [batch]
Augmentation is never active in the export: it calls the model with training=False.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.errors import ExportError

SIGNATURE = "serving_default"
OUTPUTS = ("probabilities", "class_id")


def export(model, cfg, spec, test_ds, metadata: dict | None = None) -> tuple[Path, dict]:
    """Write, verify and publish the next version of ``model``.

    Args:
        model: The trained Keras model (float inputs on the raw pixel scale).
        cfg: The experiment config; ``cfg.export`` sets root, name and checks.
        spec: The DataSpec: input name, shape and dtype of the raw examples.
        test_ds: Batched (images, labels) used to verify parity; the test split.
        metadata: Extra facts written to ``assets.extra/pipeline.json``; default none.

    Returns:
        The published version folder and the verification figures.
    """
    root = Path(cfg.export.root) / cfg.export.model_name
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        _write(model, spec, tmp / "model", metadata or {})
        checks = verify(tmp / "model", model, spec, test_ds, cfg.export.parity_atol) if cfg.export.verify else {}
        return _publish(tmp / "model", root), checks
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify(path: Path, model, spec, test_ds, atol: float) -> dict:
    """Load ``path`` with plain TensorFlow and check determinism and parity with ``model.predict``.

    Raises:
        ExportError: two calls differ, or served probabilities differ from predict by more than ``atol``.
    """
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    worst, count = 0.0, 0
    for images, _ in test_ds:
        raw = tf.cast(images, spec.input_dtype)
        first = serve(**{spec.input_name: raw})["probabilities"].numpy()
        second = serve(**{spec.input_name: raw})["probabilities"].numpy()
        if not np.array_equal(first, second):
            raise ExportError(f"Export at {path} is not deterministic: two calls on the same batch differ.")
        expected = model.predict(tf.cast(raw, tf.float32), verbose=0)
        worst = max(worst, float(np.max(np.abs(first - expected))))
        count += len(first)
    if worst > atol:
        raise ExportError(f"Export at {path} differs from model.predict by {worst:.2e} (> export.parity_atol {atol:.0e}).")
    return {"verify.max_abs_diff": worst, "verify.examples": count}


def _write(model, spec, path: Path, metadata: dict) -> None:
    import keras
    import tensorflow as tf

    def serve(**inputs):
        probabilities = model(tf.cast(inputs[spec.input_name], tf.float32), training=False)
        return {"probabilities": probabilities, "class_id": tf.argmax(probabilities, axis=-1)}

    def serving_fn(image):  # one named argument: the signature's input name comes from the spec
        return serve(**{spec.input_name: image})

    archive = keras.export.ExportArchive()
    archive.track(model)
    signature = tf.TensorSpec((None, *spec.input_shape), tf.as_dtype(spec.input_dtype), name=spec.input_name)
    archive.add_endpoint(SIGNATURE, serving_fn, input_signature=[signature])
    archive.write_out(str(path), verbose=False)
    extra = path / "assets.extra"
    extra.mkdir(exist_ok=True)
    contract = {
        "signature": SIGNATURE,
        "inputs": {spec.input_name: {"dtype": spec.input_dtype, "shape": [None, *spec.input_shape]}},
        "outputs": {"probabilities": {"dtype": "float32", "shape": [None, spec.num_classes]},
                    "class_id": {"dtype": "int64", "shape": [None]}},
        "class_names": spec.class_names,
    }
    (extra / "pipeline.json").write_text(json.dumps({**metadata, "contract": contract}, indent=2, default=str))


def _publish(staged: Path, root: Path) -> Path:
    """Rename ``staged`` to the next free integer version; retry if another writer took it."""
    for _ in range(100):
        version = 1 + max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0)
        target = root / str(version)
        try:
            os.rename(staged, target)
            return target
        except OSError:
            if not target.exists():
                raise
    raise ExportError(f"Could not publish a version under {root}: too many concurrent writers.")


def versions(root: Path) -> list[int]:
    """Published versions under one model folder, oldest first."""
    return sorted(int(p.name) for p in Path(root).iterdir() if p.name.isdigit()) if Path(root).is_dir() else []
