"""A client's JSON values as the arrays a signature takes, checked: a mistake is a ``RequestError``
(HTTP 400) that names the input, never a server error or a quietly wrong tensor.

NumPy would read ``true`` as 1, wrap 2**63 around, and keep float32's overflow as infinity; JSON's
null is a missing value, as an empty cell was for training; a date input (the export's contract
says which) also takes the ISO 8601 text training read, and an input that was a boolean column false and true.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.text import listed


class RequestError(ValueError):
    """The client's mistake: answered with HTTP 400 and this message."""


@dataclass(frozen=True)
class Input:
    name: str
    dtype: Any  # numpy dtype, or object for strings
    shape: tuple  # None for any size; the first dimension is the batch unless the shape is ()
    tf_dtype: Any
    date: bool = False  # seconds since 1970 that also come as ISO 8601 text (the export's contract says so)
    boolean: bool = False  # 0 and 1 that also come as false and true (a boolean column in training)
    column: str | None = None  # the training file's name for it, where that is no input name ('Solar.R')

    @property
    def shown(self) -> str:
        """How messages name it: by both names where the file's differs, since a client may send either."""
        return repr(self.name) + (f" (column {self.column!r})" if self.column else "")


def signature_inputs(fn, contract: dict[str, dict]) -> dict[str, Input]:
    """A loaded signature's inputs by name, in alphabetical order, as messages list them (``contract``: the export's
    facts of each input: its training column's ``column`` name, ``date`` for one that also takes ISO 8601 text,
    ``boolean`` for one that also takes JSON's false and true)."""
    _, kwargs = fn.structured_input_signature
    out = {}
    for name, spec in sorted(kwargs.items()):
        dtype = object if spec.dtype.name == "string" else np.dtype(spec.dtype.as_numpy_dtype)
        facts = contract.get(name, {})
        out[name] = Input(name, dtype, tuple(spec.shape.as_list()), spec.dtype, date=bool(facts.get("date")),
                          boolean=bool(facts.get("boolean")), column=facts.get("column"))
    return out


def named(what: str, shown: list[str], most: int = 10) -> str:
    """``missing input 'a'`` or ``missing inputs 'a', 'b'``: the inputs at fault in one line (``most`` of them),
    each as ``shown`` (quoted)."""
    return f"{what} input{'s' if len(shown) > 1 else ''} {listed(shown, most)}"


def to_array(spec: Input, value: Any) -> np.ndarray:
    """One input's JSON value as an array of its dtype and shape, or a RequestError naming it."""
    where = f"input {spec.shown}"
    if spec.dtype == object:
        try:
            array = np.asarray(_strings(value), dtype=object)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"{where}: {exc}") from None
    else:
        if spec.date:
            value = _date_seconds(where, value)
        if spec.boolean:
            value = _bools_as_numbers(value)
        if np.issubdtype(spec.dtype, np.floating):
            value = _null_as_nan(value)
        try:
            array = np.asarray(value)
        except (ValueError, RecursionError):
            raise RequestError(f"{where}: ragged or malformed nested lists") from None
        if array.dtype.kind not in "iuf" or array.dtype == bool or _has_bool(value):
            raise RequestError(f"{where}: expected numbers ({spec.dtype.name}), got "
                               f"{'booleans' if array.dtype.kind in 'iuf' else _kind(array)}")
        if np.issubdtype(spec.dtype, np.integer):
            if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
                raise RequestError(f"{where}: expected integers ({spec.dtype.name}), got fractional numbers")
            info = np.iinfo(spec.dtype)
            if array.size and _out_of_range(array, info):
                raise RequestError(f"{where}: values must be in [{info.min}, {info.max}] ({spec.dtype.name})")
        elif array.size and np.nanmax(np.abs(array), initial=0) > np.finfo(spec.dtype).max:
            # float32 would hold it as infinity (NaN, a missing value, passes)
            raise RequestError(f"{where}: values must be finite and within +-{np.finfo(spec.dtype).max:.4g} "
                               f"({spec.dtype.name})")
        array = array.astype(spec.dtype)
    if array.ndim != len(spec.shape) or any(d is not None and d != a for d, a in zip(spec.shape, array.shape)):
        want = "[" + ", ".join("batch" if i == 0 and d is None else str(d or "any") for i, d in enumerate(spec.shape)) + "]"
        raise RequestError(f"{where}: shape {list(array.shape)} does not match {want}")
    return array


def _out_of_range(array: np.ndarray, info) -> bool:
    """Whether whole numbers fall outside an integer dtype's range (``info``: its ``np.iinfo``)."""
    if array.dtype.kind in "iu":
        return bool(array.min() < info.min or array.max() > info.max)
    # Whole floats: float(2**63 - 1) rounds to 2**63, so "<= max" would let 2**63 through to wrap around.
    return bool(array.min() < info.min or array.max() >= float(info.max) + 1)


def _has_bool(value) -> bool:
    """Whether a JSON value holds a boolean among numbers (NumPy would quietly read True as 1)."""
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return isinstance(value, bool)


def _leaves(value, convert):
    """``value`` (a JSON value, lists nested) with ``convert`` applied to each of its leaves."""
    if isinstance(value, list):
        return [_leaves(v, convert) for v in value]
    return convert(value)


def _bools_as_numbers(value):
    """JSON's false and true as 0 and 1, for an input that was a boolean column in training."""
    return _leaves(value, lambda v: int(v) if isinstance(v, bool) else v)


def _null_as_nan(value):
    """JSON's null as NaN: a missing number, as an empty cell of a table was prepared for training."""
    return _leaves(value, lambda v: math.nan if v is None else v)


def _strings(value):
    """Strings as UTF-8 bytes; TF Serving's {"b64": ...} objects as their decoded bytes; null as the
    empty string, which is how a table's missing text was prepared for training."""
    return _leaves(value, _string)


def _string(value):
    if value is None:
        return b""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected strings, got {type(value).__name__}")


def _kind(array: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "O": "mixed or null values"}.get(array.dtype.kind, array.dtype.name)


def _date_seconds(where: str, value: Any) -> Any:
    """ISO 8601 text in a date input's value as seconds since 1970 (UTC), parsed as training parsed it; numbers kept."""
    import pyarrow as pa

    from pipeline.data.cells import iso_seconds

    try:
        array = np.asarray(value, dtype=object)
    except (ValueError, RecursionError):
        return value  # ragged: the numeric checks name it
    flat = array.reshape(-1)
    text = [v for v in flat if isinstance(v, str)]
    if not text:
        return value
    seconds = iso_seconds(pa.array(text, pa.string())).to_pylist()
    if None in seconds:
        raise RequestError(f"{where}: {text[seconds.index(None)][:40]!r} is no ISO 8601 date (2024-01-05, "
                           "2024-01-05T10:30:00Z) and no number of seconds since 1970")
    converted = iter(seconds)
    return np.asarray([next(converted) if isinstance(v, str) else v for v in flat], dtype=object).reshape(
        array.shape).tolist()
