"""The models a server holds: every model folder under an export root, its newest versions loaded.

``Repository`` scans ``<root>/<model>/<version>/`` (TF Serving's layout) every
``poll_seconds`` in a background thread. A new version is loaded and warmed up
(one call per signature on a one-example input) before it is swapped in, by
replacing one dictionary: a request holds the version it started with, so none
fails or waits during a swap. The newest ``keep`` versions stay loaded, so an
explicit version request and a rollback (delete the bad version's folder) need
no reload. A version that fails to load or warm up is logged and skipped, and
retried only when its files change.

``Servable`` is one loaded version: its signatures, their input specs (serving/inputs.py
converts and checks a request's values against them) and its metadata.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.export.saved_model import holds_saved_model, read_metadata, version_of
from serving.inputs import RequestError, named, signature_inputs, to_array

log = logging.getLogger("serving")


class NotFound(LookupError):
    """Unknown model or version: answered with HTTP 404."""


class Servable:
    """One loaded version of one model."""

    def __init__(self, name: str, version: int, path: Path):
        import tensorflow as tf

        self.name, self.version, self.path = name, version, path
        self._model = tf.saved_model.load(str(path))
        self.signatures = dict(self._model.signatures)
        contract = _contract_inputs(path)
        self.inputs = {sig: signature_inputs(fn, contract if sig == "serving_default" else {})
                       for sig, fn in self.signatures.items()}
        # a column named otherwise than its input ('Solar.R' -> 'Solar_R') is also taken under the file's name
        self.columns = {sig: {i.column: name for name, i in inputs.items() if i.column and i.column not in inputs}
                        for sig, inputs in self.inputs.items()}

    def warm_up(self) -> None:
        """Call every signature once on a made-up example (traces nothing later, fails now if broken)."""
        for signature, inputs in self.inputs.items():
            example = {i.name: np.zeros([1 if d is None else d for d in i.shape],
                                        dtype=object if i.dtype == object else i.dtype) for i in inputs.values()}
            for i in inputs.values():
                if i.dtype == object:
                    example[i.name] = np.full(example[i.name].shape, b"", dtype=object)
                elif i.shape == () and np.issubdtype(i.dtype, np.integer):
                    example[i.name] = np.asarray(1, dtype=i.dtype)
            try:
                self.call(signature, example)
            except RequestError:  # the graph ran and refused a made-up string (no WAV file, say): loaded all the same
                pass

    def max_objects(self, max_batch: int) -> int | None:
        """The most JSON objects a request of ``max_batch`` examples can need: the body, ``inputs``, one per
        row of ``instances``, one ``{"b64": ...}`` per string element; None if a string input's size is open."""
        strings = 0
        for inputs in self.inputs.values():
            per_signature = 0
            for i in inputs.values():
                if i.dtype != object:
                    continue
                dims = i.shape[1:] if i.shape else ()
                if any(d is None for d in dims):
                    return None
                per_signature += int(np.prod(dims, dtype=np.int64)) * (max_batch if i.shape else 1)
            strings = max(strings, per_signature)
        return 2 + max_batch + strings

    def max_arrays(self, max_batch: int) -> int | None:
        """The most JSON arrays a request of ``max_batch`` examples can need: per input, the batch's list
        and each example's nested lists (``[B, 8, 8, 1]`` takes 1 + B x (1 + 8 x 1)); None if a size is open."""
        most = 0
        for inputs in self.inputs.values():
            per_signature = 1  # "instances"
            for i in inputs.values():
                dims = i.shape[1:] if i.shape else ()
                if any(d is None for d in dims):
                    return None
                nested = 0
                for d in reversed(dims):  # lists in one example: 1 + d1 x (1 + d2 x (...)), innermost holds numbers
                    nested = 1 + d * nested
                per_signature += 1 + (max_batch * nested if i.shape else 0)
            most = max(most, per_signature)
        return most

    def signature(self, name: str | None):
        name = name or "serving_default"
        if name not in self.signatures:
            raise RequestError(f"Unknown signature_name {name!r}; this model has: {', '.join(sorted(self.signatures))}")
        return name

    def by_input(self, signature: str, values: dict[str, Any], where: str = "") -> dict[str, Any]:
        """``values`` under the signature's input names: a key that is a column's name in the training file
        (``Solar.R``) stands for its input (``Solar_R``); the two together are refused (``where``: the row's)."""
        columns = self.columns.get(signature)
        if not columns:
            return values
        renamed = {columns.get(key, key): value for key, value in values.items()}
        if len(renamed) < len(values):
            twice = next(key for key in values if key in columns and columns[key] in values)
            raise RequestError(f"{where}{twice!r} and {columns[twice]!r} are the same input: give it once")
        return renamed

    def convert(self, signature: str, columns: dict[str, Any], max_batch: int) -> tuple[dict[str, np.ndarray], int]:
        """JSON columns -> arrays of the signature's dtypes and shapes, checked; and the batch size."""
        specs = self.inputs[signature]
        missing = [n for n in specs if n not in columns]
        unknown = [n for n in columns if n not in specs]
        if unknown:
            raise RequestError(f"{named('Unknown', list(map(repr, unknown)))}; {signature} takes: {', '.join(specs)}")
        if missing:
            raise RequestError(f"{named('Missing', [specs[n].shown for n in missing])}; {signature} takes: "
                               f"{', '.join(specs)}")
        arrays = {name: to_array(spec, columns[name]) for name, spec in specs.items()}
        batches = {name: a.shape[0] for name, a in arrays.items() if specs[name].shape != ()}
        if len(set(batches.values())) > 1:
            raise RequestError(f"Inputs have different batch sizes: {batches}")
        batch = next(iter(batches.values()), 1)
        if batch == 0:
            raise RequestError("Empty batch: send at least one example")
        if batch > max_batch:
            raise RequestError(f"Batch of {batch} examples is over the limit of {max_batch}")
        return arrays, batch

    def call(self, signature: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        specs = self.inputs[signature]
        tensors = {name: tf.constant(a, dtype=specs[name].tf_dtype) for name, a in arrays.items()}
        try:
            outputs = self.signatures[signature](**tensors)
        except tf.errors.InvalidArgumentError as exc:
            raise RequestError(f"The model rejected the input: {_reason(exc.message)}") from None
        return {name: t.numpy() for name, t in outputs.items()}

    def metadata(self) -> dict:
        """TF Serving's ``GetModelMetadata`` answer: each signature's inputs and outputs."""
        defs = {}
        for sig, fn in self.signatures.items():
            outputs = fn.structured_outputs
            defs[sig] = {
                "inputs": {i.name: _tensor_info(i.name, i.tf_dtype, i.shape) for i in self.inputs[sig].values()},
                "outputs": {k: _tensor_info(k, v.dtype, tuple(v.shape.as_list())) for k, v in outputs.items()},
                "method_name": "tensorflow/serving/predict",
            }
        return {"model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
                "metadata": {"signature_def": {"signature_def": defs}}}


def _contract_inputs(path: Path) -> dict[str, dict]:
    """The pipeline's contract for each input of ``serving_default`` (its dtype, its training column's name, whether
    that column held ISO 8601 dates or booleans), if the export has one."""
    try:
        return read_metadata(path).get("contract", {}).get("inputs", {})
    except (OSError, ValueError):
        return {}


def _tensor_info(name: str, dtype, shape: tuple) -> dict:
    """A TensorInfo as TF Serving writes it in JSON: the dtype by its ``DataType`` enum name (float32 is
    ``DT_FLOAT``, float64 ``DT_DOUBLE``), which clients of its metadata API match."""
    from tensorflow.core.framework import types_pb2

    return {"dtype": types_pb2.DataType.Name(dtype.as_datatype_enum), "name": name,
            "tensor_shape": {"dim": [{"size": str(-1 if d is None else d), "name": ""} for d in shape],
                             "unknown_rank": False}}


def _servable_versions(folder: Path, root: Path) -> list[int]:
    """Version folders with a SavedModel, named in ASCII digits, that lie inside the root (no link out of it)."""
    found = []
    for path in folder.iterdir():
        version = version_of(path)
        if version is not None and holds_saved_model(path) and path.resolve().is_relative_to(root):
            found.append(version)
    return found


class Repository:
    """Every model under ``root`` with its newest ``keep`` loaded versions, rescanned every ``poll_seconds``."""

    def __init__(self, root: Path, poll_seconds: float = 1.0, keep: int = 2):
        self.root, self.poll_seconds, self.keep = Path(root), poll_seconds, keep
        self._models: dict[str, dict[int, Servable]] = {}  # replaced whole, never changed in place
        self._failed: dict[Path, tuple] = {}  # version folder -> fingerprint of the files that failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Repository:
        self.scan()
        self._thread = threading.Thread(target=self._poll, name="model-scanner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def models(self) -> dict[str, dict[int, Servable]]:
        return self._models

    def get(self, name: str, version: int | None = None) -> Servable:
        versions = self._models.get(name)
        if not versions:
            raise NotFound(f"Model {name!r} not found (serving: {', '.join(sorted(self._models)) or 'none'})")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise NotFound(f"Version {version} of model {name!r} is not available "
                           f"(loaded: {', '.join(map(str, sorted(versions)))})")
        return versions[version]

    def scan(self) -> None:
        """Load new versions, drop removed ones; one model's failure never affects another."""
        models = {}
        root = self.root.resolve()
        for folder in sorted(p for p in self.root.glob("*") if p.is_dir() and not p.name.startswith(".")):
            current = self._models.get(folder.name, {})
            wanted = sorted(_servable_versions(folder, root), reverse=True)
            loaded: dict[int, Servable] = {}
            for version in wanted:
                if len(loaded) == self.keep:
                    break
                servable = current.get(version) or self._load(folder.name, version, folder / str(version))
                if servable is not None:
                    loaded[version] = servable
            if loaded:
                models[folder.name] = loaded
                if max(loaded) != max(current, default=None):
                    log.info("serving %s version %d (loaded: %s)", folder.name, max(loaded), sorted(loaded))
        self._models = models

    def _load(self, name: str, version: int, path: Path) -> Servable | None:
        fingerprint = tuple(sorted((str(f), f.stat().st_size) for f in path.rglob("*") if f.is_file()))
        if self._failed.get(path) == fingerprint:
            return None
        started = time.perf_counter()
        try:
            servable = Servable(name, version, path)
            servable.warm_up()
        except Exception as exc:  # noqa: BLE001 - any broken folder is skipped, never served
            self._failed[path] = fingerprint
            log.error("skipping %s: cannot load or warm up: %s", path, str(exc).splitlines()[0] if str(exc) else exc)
            return None
        self._failed.pop(path, None)
        log.info("loaded %s version %d in %.2f s", name, version, time.perf_counter() - started)
        return servable

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.scan()
            except Exception:  # noqa: BLE001 - a scan error must not stop future scans
                log.exception("model scan failed")


def _reason(message: str) -> str:
    """What a TensorFlow error says was wrong: its last line before the op trace, without node names.

    A graph's error opens with "Graph execution error:" and the Python stack where the op was
    defined; the reason (an assertion's message, say) comes last, before ``[[{{node ...}}]]``.
    """
    import re

    lines = [line.strip() for line in message.splitlines() if line.strip() and not line.strip().startswith("[[")]
    reason = lines[-1] if lines else message
    reason = re.sub(r"\s*\[Op:[^\]]*\]$", "", re.sub(r"^(\{\{[^}]*\}\}\s*)+", "", reason))
    # An assertion: "assertion failed: [its message] [Condition x <= y ...] [x (Sum:0) = ] [45500000] [y ...] [4e7]".
    asserted = re.match(r"assertion failed: \[(.*?)\](.*)", reason)
    if not asserted:
        return reason
    sides = re.search(r"\[x \([^)]*\) = \] \[([^\]]*)\].*\[y \([^)]*\) = \] \[([^\]]*)\]", asserted.group(2))
    if sides:
        return f"{asserted.group(1)} ({sides.group(1)} against {sides.group(2)})"
    values = re.findall(r"\[([^\]]*)\]", asserted.group(2))  # an Assert's data after its message: "[7350]"
    plain = values and not any(v.startswith("Condition") or v.endswith("= ") for v in values)
    return f"{asserted.group(1)} {', '.join(values)}" if plain else asserted.group(1)
