"""``tune.space`` declared to KerasTuner, and a trial's values read back as config values.

The space is checked against the config (and applied to it) in
pipeline/config/search_space.py; this is only the KerasTuner side.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

from pipeline.config import ChoiceParam, FloatParam
from pipeline.errors import ConfigError


def declare(hp, space: dict) -> None:
    """Register every parameter with a KerasTuner ``HyperParameters``, conditions as conditional scopes."""
    for path in _parents_first(space):
        param = space[path]
        with ExitStack() as scopes:
            for parent, allowed in (param.when or {}).items():
                scopes.enter_context(hp.conditional_scope(parent, [_encode(space[parent], v) for v in allowed]))
            if isinstance(param, ChoiceParam):
                hp.Choice(path, [_encode(param, v) for v in param.values], ordered=_numeric(param.values))
            elif isinstance(param, FloatParam):
                hp.Float(path, param.min, param.max, step=param.step, sampling=param.sampling)
            else:
                hp.Int(path, param.min, param.max, step=param.step, sampling=param.sampling)


def values_of(hp, space: dict) -> dict[str, Any]:
    """A trial's active values as config values (KerasTuner's own ``tuner/...`` entries left out)."""
    out = {}
    for path, param in space.items():
        if path in hp.values and hp.is_active(path):
            out[path] = _decode(param, hp.values[path])
    return out


def _encode(param, value):
    """KerasTuner choices hold one scalar type; booleans and mixed values travel as JSON strings."""
    return value if _numeric(param.values) or _strings(param.values) else json.dumps(value)


def _decode(param, value):
    if isinstance(param, ChoiceParam):
        if _numeric(param.values) or _strings(param.values):
            return next((v for v in param.values if v == value), value)
        return json.loads(value)
    return value


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _strings(values: list) -> bool:
    return all(isinstance(v, str) for v in values)


def _parents_first(space: dict) -> list[str]:
    """Paths ordered so that each condition's parent is declared before it."""
    ordered: list[str] = []
    pending = list(space)
    while pending:
        ready = [p for p in pending if all(q in ordered for q in (space[p].when or {}))]
        if not ready:
            raise ConfigError(f"Invalid `tune.space`: conditions form a cycle among {pending}")
        ordered += ready
        pending = [p for p in pending if p not in ready]
    return ordered
