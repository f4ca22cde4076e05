"""Export an inference-only SavedModel in TF Serving's layout, verified before it is published.

Layout: ``<root>/<model name>/<version>/`` with increasing integer versions.
A version is written to a hidden temporary folder beside them (TF Serving
ignores names that are not integers), verified with plain TensorFlow, and only
then renamed into place: a reader never sees half a version, and a version
that fails verification never appears.

Serving contract (pinned by tests; clients rely on it):
    signature ``serving_default``
    inputs  one per feature, named as in the dataset, with its stored dtype and shape
            (digits: ``image`` uint8 [batch, 8, 8, 1]; tables: one [batch] tensor per column; a column
            named otherwise than ASCII letters, digits and _ from a letter by its ``spec.input_name``:
            ``Sale Price`` -> ``Sale_Price``, and the contract's ``column`` gives the file's name; it marks
            ``date`` and ``boolean`` the inputs that ``pipeline serve`` also takes as ISO text or false and true)
    outputs classification: ``probabilities`` float32 [batch, classes], ``class_id`` int64 [batch] and its
            ``class_name`` string [batch];
            regression: ``prediction`` float32 [batch], on the label's own scale
            (a log target transform is inverted inside);
            forecasting: ``forecast`` float32 [batch, horizon] in the series' units, and
            ``target`` [batch, horizon], the model's own (level, change or log return)
            forecasting inputs: the target's past window and past covariates [batch, input_window],
            known covariates (and the time column, for calendar features) [batch, input_window + horizon]
Model families may add signatures (the recommender's ``recommend``; ``wav`` for audio and ``image_bytes``
for images, which take encoded files ``[batch]`` as strings).
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
METADATA = Path("assets.extra") / "pipeline.json"  # beside the SavedModel: what serving and retraining read
VERIFY_BATCH_BYTES = 64 * 2**20  # the most input one verification batch holds


def export(model, cfg, spec, test_ds, metadata: dict | None = None, signatures: dict | None = None) -> tuple[Path, dict]:
    """Write, verify and publish the next version of ``model``.

    Args:
        model: The trained Keras model (float inputs on the raw pixel scale).
        cfg: The experiment config; ``cfg.export`` sets root, name and checks.
        spec: The DataSpec: input name, shape and dtype of the raw examples.
        test_ds: Batched (images, labels) used to verify parity; the test split.
        metadata: Extra facts written to ``assets.extra/pipeline.json``; default none.
        signatures: Extra named signatures, name -> (function, input signature); default none.

    Returns:
        The published version folder and the verification figures.
    """
    root = Path(cfg.export.root) / cfg.export.model_name
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        _write(model, cfg, spec, tmp / "model", metadata or {}, signatures or {})
        checks = verify(tmp / "model", model, cfg, spec, test_ds) if cfg.export.verify else {}
        return _publish(tmp / "model", root), checks
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify(path: Path, model, cfg, spec, test_ds) -> dict:
    """Load ``path`` with plain TensorFlow and check determinism and parity with ``model.predict``.

    On the first ``export.verify_examples`` test examples: the checks are about the export, not
    the data, and a bounded sample keeps their cost the same for a table of any length.

    Raises:
        ExportError: two calls differ, or served probabilities differ from predict by more than ``atol``.
    """
    import numpy as np
    import tensorflow as tf

    from pipeline.tasks import task_for

    task = task_for(cfg, spec)
    output = task.outputs[0]
    serve = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    worst, count = 0.0, 0
    atol, limit = cfg.export.parity_atol, cfg.export.verify_examples
    for features, _ in _large_batches(test_ds, limit):
        if count >= limit:
            break
        raw = as_served(spec, features)
        first = serve(**raw)[output].numpy()
        if not np.all(np.isfinite(first)):
            raise ExportError(f"Training diverged: the model's {output} are NaN or infinite on test examples, so "
                              "nothing was exported (lower optimizer.learning_rate, or clip: optimizer.clipnorm)")
        second = serve(**raw)[output].numpy()
        if not np.array_equal(first, second):
            raise ExportError(f"Export at {path} is not deterministic: two calls on the same batch differ.")
        # Calling the model (as model.predict does, batch by batch) also works under any strategy.
        expected = np.asarray(task.serve(model(features, training=False), features)[output])
        worst = max(worst, float(np.max(np.abs(first - expected))))
        count += len(first)
    if worst > atol:
        raise ExportError(f"Export at {path} differs from model.predict by {worst:.2e} (> export.parity_atol {atol:.0e}).")
    return {"verify.max_abs_diff": worst, "verify.examples": count}


def _large_batches(test_ds, limit: int):
    """The test batches joined into batches of up to ``limit`` examples and VERIFY_BATCH_BYTES (text counted as
    nothing): the checks call the model eagerly, which costs per layer, not per example (bench/README.md)."""
    import tensorflow as tf

    def joined(batches):
        return tf.nest.map_structure(lambda *parts: tf.concat(parts, 0), *batches)

    example = sum((s.shape[1:].num_elements() or 1) * s.dtype.size for s in tf.nest.flatten(test_ds.element_spec[0]))
    most = max(1, min(limit, VERIFY_BATCH_BYTES // max(1, example)))
    pending, rows = [], 0
    for features, labels in test_ds:
        pending.append((features, labels))
        rows += int(tf.nest.flatten(features)[0].shape[0])
        if rows >= most:
            yield joined(pending)
            pending, rows = [], 0
    if pending:
        yield joined(pending)


def predict_split(path: Path, spec, dataset, output: str):
    """(``output`` of the export's serving signature over ``dataset``, the labels), as NumPy arrays.

    This is how clients see the model: raw features in their stored dtypes. Labels are as the
    dataset yields them (on the training scale, e.g. log price).
    """
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    predictions, labels = [], []
    for features, y in dataset:
        predictions.append(serve(**as_served(spec, features))[output].numpy())
        labels.append(y.numpy())
    return np.concatenate(predictions), np.concatenate(labels)


def as_served(spec, features: dict) -> dict:
    """A batch of the dataset's ``features`` as the export's signature takes them: under each column's input name,
    in its stored dtype (digits' pixels as uint8)."""
    import tensorflow as tf

    return {f.input_name: tf.cast(features[f.name], f.dtype) for f in spec.features}


def traced(fn, signature):
    """``fn`` traced for ``signature`` as the export traces every endpoint (without autograph): what a check of
    an endpoint outside the export (the ranking metrics' ``recommend``) calls, to check the graph that is served."""
    import tensorflow as tf

    return tf.function(fn, input_signature=signature, autograph=False).get_concrete_function()


def _write(model, cfg, spec, path: Path, metadata: dict, signatures: dict) -> None:
    """Trace each signature once and save them with what they use: the variables and lookup tables.

    Plain ``tf.saved_model.save`` of a small root object, not Keras' ``ExportArchive``: the
    archive traces the model three times (once through the ``_default_save_signature`` property
    that its walk for lookup tables evaluates) and walks every layer in SavedModel mode, which
    was half of an export (bench/README.md). The model's tables are found by the checkpoint walk,
    which reads no properties; a signature's own are listed in its function's ``tables``. One
    missed would make the save fail loudly, never save a wrong model.
    """
    import tensorflow as tf

    from pipeline.tasks import task_for

    task = task_for(cfg, spec)

    def serving_default(features):
        inputs = {f.name: tf.cast(features[f.input_name], tf.float32) if f.signal else features[f.input_name]
                  for f in spec.features}
        return task.serve(model(inputs, training=False), inputs)

    inputs = {f.input_name: tf.TensorSpec((None, *f.shape), tf.as_dtype(f.dtype), name=f.input_name)
              for f in spec.features}
    endpoints = {SIGNATURE: (serving_default, [inputs]), **signatures}
    functions = {name: traced(fn, signature) for name, (fn, signature) in endpoints.items()}
    root = tf.train.Checkpoint(
        variables=list({id(v): v for c in functions.values() for v in c.variables}.values()),
        tables=[*(t for t in tf.train.TrackableView(model).descendants()
                  if isinstance(t, tf.saved_model.experimental.TrackableResource)),
                *(t for fn, _ in endpoints.values() for t in getattr(fn, "tables", ()))])
    tf.saved_model.save(root, str(path), signatures=functions)
    (path / METADATA).parent.mkdir(exist_ok=True)
    contract = {
        "signature": SIGNATURE,
        "inputs": {f.input_name: {"dtype": f.dtype, "shape": [None, *f.shape], **({"date": True} if f.date else {}),
                                  **({"boolean": True} if f.boolean else {}),
                                  **({"column": f.name} if f.input_name != f.name else {})}
                   for f in spec.features},
        "outputs": {name: {"dtype": d, "shape": shape} for name, (d, shape) in task.output_specs().items()},
        "task": spec.task,
        "class_names": spec.class_names,
        "extra_signatures": sorted(signatures),
    }
    (path / METADATA).write_text(json.dumps({**metadata, "contract": contract}, indent=2, default=str))


def read_metadata(path: Path) -> dict:
    """What ``export`` wrote beside the SavedModel at ``path``: run, data, test metrics and the contract.

    Raises:
        OSError: no such file; ValueError: not JSON.
    """
    return json.loads((Path(path) / METADATA).read_text())


def promote(staged: Path, root: Path) -> Path:
    """Publish a copy of the verified export ``staged`` as the next version under ``root`` (atomically)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        shutil.copytree(staged, tmp / "model")
        return _publish(tmp / "model", root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def version_of(folder: Path) -> int | None:
    """The version a folder publishes: its name in ASCII digits, else None.

    ``"²".isdigit()`` (and Arabic-Indic digits) are true but ``int`` refuses or misreads them, so
    one odd folder must not stop the scan: it is simply no version.
    """
    name = Path(folder).name
    return int(name) if name.isascii() and name.isdigit() else None


def holds_saved_model(folder: Path) -> bool:
    """Whether ``folder`` holds a written SavedModel (a version folder may be left without one)."""
    return (Path(folder) / "saved_model.pb").exists()


def _publish(staged: Path, root: Path) -> Path:
    """Rename ``staged`` to the next free integer version; retry if another writer took it."""
    for _ in range(100):
        version = 1 + max(versions(root), default=0)
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
    found = (version_of(p) for p in Path(root).iterdir()) if Path(root).is_dir() else ()
    return sorted(v for v in found if v is not None)
