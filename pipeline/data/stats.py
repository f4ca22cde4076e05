"""Statistics of a dataset's features, logged with every run, and the drift check that compares them.

``statistics(data)`` summarises each feature of the training split (images: their
pixels, from the validation split, since the training stream is augmented) and
the label: kind, dtype, shape, missing rate, range and moments for numbers, the
category shares for categories. ``compare(reference, data, limits)`` is what
the nightly retraining runs before it trains: a changed schema (a feature gone
or new, another kind, dtype or shape) is an error; a shift beyond ``limits``
(missing rate, values outside the reference range, the mean, unseen
categories) is a warning. Both come back as rows of one report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.data import cells
from pipeline.data.spec import SIGNALS
from pipeline.text import fmt, listed

MAX_TEXT = 200  # characters of a category kept in the statistics
MAX_CATEGORIES = 10_000  # more distinct values than this: shares of unseen categories are not checked
IMAGE_EXAMPLES = 2_000
MIN_ID_ROWS = 100  # below this many training rows, a value new in every row is no sign of an identifier
FEW_VALUES = 10  # a number label of at most this many whole values may be classes (0/1, 1 to 5 stars)
PLAIN_LABEL = "write plain numbers (1234.5) for a regression"  # the fix of a label of numbers written as text


def statistics(data, label_scale: str = "") -> dict:
    """Summary of every feature (and the label) of ``data`` (a spec.Splits); ``label_scale``: what the training
    column holds of the label (``Task.label_scale``: "log"), named in the drift messages."""
    spec = data.spec
    features = {}
    for f in spec.features:
        values = _signal_values(data, f.name) if f.signal else data.train_columns[f.name]
        features[f.name] = {"kind": f.kind, "dtype": f.dtype, "shape": list(f.shape), **_summary(values, f.kind)}
    label = data.train_columns[spec.label]
    features[f"label:{spec.label}"] = {"kind": "label", "dtype": str(label.dtype), "shape": [],
                                       **({"scale": label_scale} if label_scale else {}),
                                       **_summary(label, "categorical" if spec.task == "classification" else "numeric")}
    return {"data": {"name": spec.name, "version": spec.version, "digest": spec.digest, "sizes": spec.sizes},
            "features": features}


def column_notes(data, labels=None) -> list[str]:
    """Training columns that cannot teach the model anything: empty, one value throughout, or a new value in every row
    (a row number, an id: a model can only memorise it, and every test row's value is unseen); text that holds
    dates in another format than ISO 8601 (categories that tomorrow's dates are not among) or numbers with
    currency signs, percent or thousands' separators (categories, not numbers); categories, or a label's classes,
    that differ only in case or spaces (one word typed two ways); classes of fewer than two training rows; a number
    label of a few whole values, or a text label of such numbers (``labels``: the training labels on their own
    scale, ``Task.label_values``: a log target's training column holds their log; default that column)."""
    notes = []
    for f in data.spec.features:
        values = None if f.signal else data.train_columns[f.name]
        if values is None or not len(values):
            continue
        text = values.dtype.kind in "OSU"
        if text:
            present = values[values != b""]
            distinct = len(set(present.tolist()))
        else:
            present = values[~np.isnan(values)] if values.dtype.kind == "f" else values
            distinct = len(np.unique(present))
        rows, seen = data.spec.sizes["train"], training_rows(len(values), data.spec)
        fix = f"leave it out with `data.exclude: [{f.name}]`"
        if distinct == 0:
            notes.append(f"column {f.name!r} is empty in all {seen}: it teaches the model nothing; {fix}")
        elif distinct == 1:
            notes.append(f"column {f.name!r} has one value, {_text(present[0])}, in all {seen}: it teaches the model "
                         f"nothing; {fix}")
        elif text and (example := _written_as(present, cells.FOREIGN_DATE)):
            notes.append(f"column {f.name!r} holds dates written as {example}: as text each date is a category, and "
                         "every later date one the model never saw; write them as ISO 8601 (2020-12-31) to train on "
                         "their time")
        elif text and (example := _written_as(present, cells.FORMATTED_NUMBER, plain=False)):
            grouped = cells.GROUPED_NUMBER.fullmatch(example)
            notes.append(f"column {f.name!r} holds numbers written as {example}: as text each value is a category; "
                         + ("say how the file groups digits (`data.thousands`) to train on them as numbers" if grouped
                            else "write plain numbers (1234.5) to train on them as numbers"))
        elif rows >= MIN_ID_ROWS and distinct == len(values) and (
                text or (values.dtype.kind in "iu" and np.ptp(values) < 2 * rows)):
            like = "a row id" if text else f"a row number (from {values.min()} to {values.max()})"
            notes.append(f"column {f.name!r} has a different value in each of the {seen}, like {like}: a model can "
                         f"only memorise it; {fix}")
        elif text and distinct <= MAX_CATEGORIES and (alike := spelt_alike(set(present.tolist()))):
            notes.append(f"column {f.name!r} holds values that differ only in case or spaces ({alike}): each is a "
                         "category of its own; write them alike in the file to train them as one")
    if data.spec.task == "classification":
        if unlearnt := _unlearnt_classes(data.spec, data.train_columns[data.spec.label]):
            notes.append(unlearnt)
        if alike := spelt_alike(data.spec.class_names):
            notes.append(f"label `{data.spec.label}` has classes that differ only in case or spaces ({alike}): each is "
                         "a class of its own, and the model is scored on telling them apart; write them alike in the file")
    label = np.asarray(data.train_columns[data.spec.label] if labels is None else labels)
    if data.spec.task == "regression" and (hint := classes_hint(label, data.spec.label)):
        notes.append(hint)
    if example := written_numbers(data.spec):
        notes.append(f"label `{data.spec.label}` holds numbers written as {example} and trains as "
                     f"{data.spec.num_classes} classes; {PLAIN_LABEL}")
    return notes


def _unlearnt_classes(spec, labels) -> str:
    """The classes of fewer than two training rows, said in one note: the model cannot learn to predict them, and
    their validation and test rows count as its errors (a class of one row in a file lands in one split only)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=spec.num_classes)
    few = [f"{spec.class_name(i)!r} ({'none' if counts[i] == 0 else 'one'})" for i in np.flatnonzero(counts < 2)]
    if not few:
        return ""
    return (f"label `{spec.label}` has classes of fewer than two training rows: {listed(few, 3)}; the model cannot "
            "learn to predict them, and their rows in the other splits count as its errors: gather more rows of "
            "them, or give those rows another class in the file")


def input_names(spec) -> list[str]:
    """The columns the model and its export take under another name (``Feature.input_name``): what a client sends."""
    renamed = [f"{f.name!r} as {f.input_name!r}" for f in spec.features if f.input_name != f.name]
    return [f"the export takes {listed(renamed, 3)} (an input's name is ASCII letters, digits and _, from a letter)"
            ] if renamed else []


def training_rows(count: int, spec) -> str:
    """"N training rows", or "N training rows read" when ``count`` is a sample of the split (past
    columns.MAX_STAT_ROWS, as Splits.train_columns holds it)."""
    return f"{count:,} training rows" + ("" if count == spec.sizes["train"] else " read")


def written_numbers(spec) -> str | None:
    """For a classification whose class names are numbers written for people, the first such ($1,100), else
    None: a regression's label read as text (its fix: PLAIN_LABEL)."""
    if spec.task != "classification":
        return None
    return cells.written_as(list(spec.class_names), cells.FORMATTED_NUMBER, plain=False)


def spelt_alike(values) -> str | None:
    """The first values (text or UTF-8 bytes) that are one word but for case and surrounding spaces, quoted
    (``'Yes ', 'yes'``): a spreadsheet's hand-typed categories; None when there are none."""
    groups: dict[str, list[str]] = {}
    for value in sorted(_text(v) for v in values):
        groups.setdefault(value.strip().casefold(), []).append(value)
    alike = next((spellings for spellings in groups.values() if len(spellings) > 1), None)
    return ", ".join(map(repr, alike[:3])) if alike else None


def _written_as(values, pattern, plain: bool = True) -> str | None:
    return cells.written_as([_text(v) for v in values[:1000]], pattern, plain)


def classes_hint(labels, name: str) -> str | None:
    """For a number label of a few whole values, how to train it as classes instead (None for others)."""
    labels = np.asarray(labels)
    values = np.unique(labels[~np.isnan(labels)] if labels.dtype.kind == "f" else labels)
    if not 1 < len(values) <= FEW_VALUES or np.any(values != np.floor(values)):
        return None
    shown = ", ".join(str(int(v)) for v in values[:5]) + (", ..." if len(values) > 5 else "")
    return (f"label `{name}` holds {len(values)} whole values ({shown}) and trains as regression; if they are "
            f"classes, declare `data.dtypes: {{{name}: string}}` for classification")


@dataclass
class Report:
    """Rows of (feature, check, value, limit, verdict); ``errors`` stop a retraining, ``warnings`` are logged."""

    rows: list[dict] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [r["message"] for r in self.rows if r["verdict"] == "error"]

    @property
    def warnings(self) -> list[str]:
        return [r["message"] for r in self.rows if r["verdict"] == "warning"]

    def add(self, feature: str, check: str, value, limit, verdict: str, message: str) -> None:
        self.rows.append({"feature": feature, "check": check, "value": value, "limit": limit, "verdict": verdict,
                          "message": message})

    def markdown(self) -> str:
        lines = ["| feature | check | value | limit | verdict |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['feature']} | {r['check']} | {fmt(r['value'])} | {fmt(r['limit'])} | {r['verdict']} |"
                  for r in self.rows]
        return "\n".join(lines) + "\n"


def compare(reference: dict, data, limits, label_scale: str = "") -> Report:
    """Check ``data`` against the ``reference`` statistics (a champion's training data).

    Args:
        limits: A config DriftConfig: missing_rate, out_of_range, mean_shift, new_categories.
        label_scale: As for ``statistics``.
    """
    report = Report()
    current = statistics(data, label_scale)
    ref, cur = reference["features"], current["features"]
    for name in sorted(set(ref) | set(cur)):
        if name not in cur:
            report.add(name, "schema", "missing", "present", "error", f"feature {name!r} is gone from the data (the "
                       "champion cannot be scored without it; `pipeline train` makes a model without it the champion)")
            continue
        if name not in ref:
            report.add(name, "schema", "new", "absent", "error", f"feature {name!r} is new (the champion never saw it; "
                       f"`data.exclude: [{name}]` retrains on the champion's features, `pipeline train` makes a "
                       "model with it the champion)")
            continue
        a, b = ref[name], cur[name]
        changed = [k for k in ("kind", "dtype", "shape") if a[k] != b[k]]
        if changed:
            k = changed[0]
            report.add(name, f"schema.{k}", b[k], a[k], "error", f"feature {name!r}: {k} {a[k]!r} became {b[k]!r}")
            continue
        if a.get("scale") != b.get("scale"):  # another features.target_transform: a config's change, not drift
            report.add(name, "scale", b.get("scale", "itself"), a.get("scale", "itself"), "ok",
                       f"feature {name!r}: the champion trained on its {a.get('scale', 'values')} and this run on "
                       f"its {b.get('scale', 'values')} (features.target_transform), so they are not compared")
            continue
        values = _signal_values(data, name) if b["kind"] in SIGNALS else data.train_columns[name.removeprefix("label:")]
        _drift(report, name, a, b, values, limits)
    if not report.rows or not report.errors and not report.warnings:
        report.add("*", "all", "ok", "-", "ok", "no drift beyond the limits")
    return report


def _drift(report: Report, name: str, ref: dict, cur: dict, values: np.ndarray, limits) -> None:
    feature = f"feature {name!r}" + (f" (its {cur['scale']})" if cur.get("scale") else "")  # a log target's column
    rise = cur["missing_rate"] - ref["missing_rate"]
    verdict = "warning" if rise > limits.missing_rate else "ok"
    report.add(name, "missing_rate", round(cur["missing_rate"], 4), round(ref["missing_rate"] + limits.missing_rate, 4),
               verdict, f"{feature}: missing rate {ref['missing_rate']:.1%} -> {cur['missing_rate']:.1%}")
    if "min" in ref and ref["kind"] != "calendar":  # time moves on: new values are its nature, not drift
        numbers = _numbers(values)
        outside = float(np.mean((numbers < ref["min"]) | (numbers > ref["max"]))) if numbers.size else 0.0
        report.add(name, "out_of_range", round(outside, 4), limits.out_of_range,
                   "warning" if outside > limits.out_of_range else "ok",
                   f"{feature}: {outside:.1%} of values outside the champion's range "
                   f"[{fmt(ref['min'])}, {fmt(ref['max'])}]")
        shift = abs(cur["mean"] - ref["mean"]) / (ref["std"] or 1.0)
        report.add(name, "mean_shift", round(shift, 4), limits.mean_shift,
                   "warning" if shift > limits.mean_shift else "ok",
                   f"{feature}: mean moved {shift:.2f} standard deviations "
                   f"({fmt(ref['mean'])} -> {fmt(cur['mean'])})")
    if "categories" in ref and not ref.get("truncated"):
        known = set(ref["categories"])
        unseen = {c: s for c, s in cur["categories"].items() if c not in known}
        share = float(sum(unseen.values()))
        report.add(name, "new_categories", round(share, 4), limits.new_categories,
                   "warning" if share > limits.new_categories else "ok",
                   f"{feature}: {share:.1%} of values in categories the champion never saw "
                   f"({', '.join(sorted(unseen)[:5])})")


def _summary(values: np.ndarray, kind: str) -> dict:
    values = np.asarray(values)
    if kind in ("numeric", "image", "audio", "sequence", "calendar"):
        numbers = _numbers(values)
        missing = float(np.mean(np.isnan(values.astype(np.float64)))) if values.size else 0.0
        if not numbers.size:
            return {"count": int(values.size), "missing_rate": missing}
        return {"count": int(values.size), "missing_rate": missing, "min": float(numbers.min()),
                "max": float(numbers.max()), "mean": float(numbers.mean()), "std": float(numbers.std())}
    flat = [_text(v) for v in values.reshape(-1)]
    missing = float(np.mean([v == "" for v in flat])) if flat else 0.0
    # A Counter, not np.unique: that makes a fixed-width array as wide as the longest text, times every row.
    counts = Counter(v for v in flat if v != "")
    total = max(sum(counts.values()), 1)
    return {"count": len(flat), "missing_rate": missing, "cardinality": len(counts),
            "truncated": len(counts) > MAX_CATEGORIES,
            "categories": {name: n / total for name, n in counts.most_common(MAX_CATEGORIES)}}


def _numbers(values: np.ndarray) -> np.ndarray:
    numbers = np.asarray(values, dtype=np.float64).reshape(-1)
    return numbers[~np.isnan(numbers)]


def _text(value: Any) -> str:
    """A category as text, cut to MAX_TEXT characters (a category is a short label; a 50 MB cell is not one)."""
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))[:MAX_TEXT]


def _signal_values(data, name: str) -> np.ndarray:
    """Pixel (or sample) values of up to IMAGE_EXAMPLES validation images (or clips)."""
    batches, seen = [], 0
    for features, _ in data.validation:
        batches.append(np.asarray(features[name], dtype=np.float32))
        seen += len(batches[-1])
        if seen >= IMAGE_EXAMPLES:
            break
    return np.concatenate(batches)[:IMAGE_EXAMPLES] if batches else np.zeros((0,), np.float32)
