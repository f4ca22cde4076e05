"""One-line config errors: what is wrong, what is allowed, and the nearest valid key or value.

Every config-like file (experiment configs, tuning spaces, study files) reports
pydantic's errors through ``describe``, so a typo reads the same everywhere:
"Unknown key `model.dropuot`; did you mean `model.dropout`?". ``walk`` is the one
place that follows a path through the config classes.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError

from pipeline.text import closest

# Keys that were renamed: an old name gets a one-line error naming the new one.
RENAMED = {
    "data.features": "data.columns",
    "data.column_types": "data.dtypes",
    "features.types": "features.kinds",
    "train.early_stopping.mode": "train.early_stopping.direction",
}


def describe(exc: ValidationError, root: type[BaseModel], prefix: str = "") -> str:
    """The first validation error of ``root`` as one actionable line (``prefix`` names the file, if any)."""
    errors = exc.errors()
    err = errors[0]
    path, fields, field_info, _ = walk(root, err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden" and path in RENAMED:
        message = f"`{path}` was renamed: use `{RENAMED[path]}`."
    elif kind == "extra_forbidden":
        key = path.rsplit(".", 1)[-1]
        near = closest(key.split("[")[0], fields, most=1)
        parent = path.rsplit(".", 1)[0] + "." if "." in path else ""
        hint = f"; did you mean `{parent}{near[0]}`?" if near else f". Valid keys: {', '.join(fields)}."
        message = f"Unknown key `{path}`{hint}"
    elif kind == "missing":
        what = f": {field_info.description.rstrip('.')}" if field_info is not None and field_info.description else ""
        message = f"Missing required key `{path}`{what}."
    elif kind == "union_tag_not_found":  # a parameter or layer without its `type`
        key = err["ctx"]["discriminator"].strip("'")
        tags = _tags(root, err["loc"], key)
        kinds = f" ({', '.join(tags)})" if tags else ""
        message = f"Invalid value for `{path}`: {_short(err.get('input'))}. It needs a `{key}` key{kinds}."
    elif kind == "value_error":
        where = f"`{path}`" if path else "config"  # a check across sections names its keys itself
        message = f"Invalid {where}: {err['msg'].removeprefix('Value error, ')}."
    else:
        branches = [e for e in errors if walk(root, e["loc"])[0] == path]  # one per member of ``int | "auto"``
        errors = [err, *[e for e in errors[1:] if e not in branches]]
        expected = _expected(err, field_info) if len(branches) == 1 else "Expected " + ", or ".join(
            e["ctx"]["expected"] if e["type"] == "literal_error" else e["msg"].removeprefix("Input should be ").split(",")[0]
            for e in branches) + "."
        suggestion = ""
        choices = next((b for b in branches if b["type"] in ("literal_error", "union_tag_invalid")), None)
        if choices and isinstance(err.get("input"), str):
            near = closest(err["input"], [c.strip("'") for c in _choices(choices)], most=1)
            if near:
                expected, suggestion = expected.rstrip("."), f"; did you mean '{near[0]}'?"
        shown = err.get("input")
        if kind == "union_tag_invalid":
            path = f"{path}.type" if path else "type"
            shown = err.get("ctx", {}).get("tag", shown)
        message = f"Invalid value for `{path}`: {_short(shown)}. {expected}{suggestion}"
    more = len(errors) - 1
    return prefix + message + (f" ({more} more error{'s' if more > 1 else ''})" if more else "")


def walk(root: type[BaseModel], loc: tuple | list) -> tuple[str, list[str], Any, int | None]:
    """Follow a location (pydantic's ``loc``, or a dotted path split into parts) through the config classes.

    Returns:
        The dotted path users write (union tags dropped, list items as [i]), the valid keys of
        the innermost section, the field's FieldInfo if any, and the index of the first part
        that names no field (None when every part does).
    """
    model: Any = root
    annotation: Any = None
    field_info = None
    path = ""
    unknown = None
    for i, part in enumerate(loc):
        if isinstance(part, int) or (isinstance(part, str) and part.isascii() and part.isdigit()
                                     and typing.get_origin(_unwrap(annotation)) is list):
            path += f"[{part}]"
            annotation = _unwrap(annotation, list_item=True)
            continue
        if annotation is not None and typing.get_origin(_unwrap(annotation)) is dict:
            path += f"[{part!r}]"
            annotation = typing.get_args(_unwrap(annotation))[1]
            continue
        if annotation is not None and _is_union(annotation):
            sections = [c for c in _members(annotation) if isinstance(c, type) and issubclass(c, BaseModel)]
            if not sections:  # a union of values (``int | "auto"``): the rest of loc names its branches
                break
            tagged = {typing.get_args(c.model_fields["type"].annotation)[0]: c for c in sections}
            if part in tagged:
                model, annotation = tagged[part], None
                continue
        if annotation is not None:
            model = _unwrap(annotation)
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            field_info = model.model_fields[part]
            annotation = field_info.annotation
        else:
            if unknown is None and (annotation is not None or isinstance(model, type) and issubclass(model, BaseModel)):
                unknown = i
            field_info, annotation = None, None
        path = f"{path}.{part}" if path else str(part)
    fields = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
    return path, fields, field_info, unknown


def _tags(root: type[BaseModel], loc: tuple, key: str) -> list[str]:
    """The ``key`` values (tags) of the tagged union that the list or dict at ``loc[:-1]`` holds."""
    parent = walk(root, loc[:-1])[2]
    if parent is None:
        return []
    item = (typing.get_args(_unwrap(parent.annotation)) or (None,))[-1]  # a list's item, a dict's value
    sections = [c for c in _members(item) if isinstance(c, type) and issubclass(c, BaseModel) and key in c.model_fields]
    return [typing.get_args(c.model_fields[key].annotation)[0] for c in sections]


def _short(value: Any, limit: int = 80) -> str:
    """A value as the user wrote it, cut so one error stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _choices(err: dict) -> list[str]:
    ctx = err.get("ctx", {})
    text = ctx.get("expected") or ctx.get("expected_tags") or ""
    return [c.strip() for c in text.replace(" or ", ", ").split(",") if c.strip()]


def _expected(err: dict, field_info: Any) -> str:
    """Say what a valid value looks like, using the field's own bounds where it has them."""
    if err["type"] == "union_tag_invalid":
        return f"Expected one of {err['ctx']['expected_tags']}."
    if err["type"] == "literal_error":
        return f"Expected one of {err['ctx']['expected']}."
    if err["type"] == "finite_number":
        return "Expected a finite number."
    bounds = _interval(field_info) if field_info is not None else None
    if bounds:
        return f"Expected {bounds}."
    msg = err["msg"].replace("Input should be", "Expected").replace("Value error, ", "")
    return msg[0].upper() + msg[1:] + ("" if msg.endswith(".") else ".")


def _interval(field_info: Any) -> str | None:
    """'a float in [0, 1)' from a field's annotated-types bounds, or None if it has none."""
    lo = hi = None
    lo_b, hi_b = "(", ")"
    for m in field_info.metadata:
        if getattr(m, "ge", None) is not None:
            lo, lo_b = m.ge, "["
        if getattr(m, "gt", None) is not None:
            lo, lo_b = m.gt, "("
        if getattr(m, "le", None) is not None:
            hi, hi_b = m.le, "]"
        if getattr(m, "lt", None) is not None:
            hi, hi_b = m.lt, ")"
    if lo is None and hi is None:
        return None
    kind = _scalar_name(field_info.annotation)
    def text(bound) -> str:
        return str(bound) if isinstance(bound, int) else f"{bound:g}"

    lo_t = "-inf" if lo is None else text(lo)
    hi_t = "inf" if hi is None else text(hi)
    return f"{kind} in {lo_b}{lo_t}, {hi_t}{hi_b}"


def _scalar_name(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return "an integer" if args[0] is int else "a float" if args[0] is float else "a value"


def _unwrap(annotation: Any, list_item: bool = False) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if list_item and typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if _is_optional(annotation) and len(args) == 1:
        return _unwrap(args[0])
    return annotation


def _is_optional(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType) and type(None) in typing.get_args(annotation)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(_unwrap(annotation)) in (Union, types.UnionType) and not _is_optional(annotation)


def _members(annotation: Any) -> tuple:
    return typing.get_args(_unwrap(annotation))
