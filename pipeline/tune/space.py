"""The search space of ``tune.space``: checked against the config, declared to KerasTuner, applied to configs.

A parameter is named by the dotted path of the config field it sets
(``optimizer.learning_rate``), so anything the config can say can be tuned and
a trial's values are just overrides of the experiment config. ``check`` runs
inside ``config.load``, before TensorFlow is imported: every candidate value
(each choice, both ends of each range) is applied to the config and validated,
so a search never starts with a value that would fail its trial.
"""

from __future__ import annotations

import difflib
import json
from contextlib import ExitStack
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.config import ChoiceParam, ExperimentConfig, FloatParam, _describe, set_path
from pipeline.errors import ConfigError

# Fields a search may not vary: trials must read the same data, run the same way and be tracked together.
FIXED = ("name", "workdir", "seed", "tune", "tracking", "export", "retrain", "data.dataset", "data.data_dir", "data.path",
         "data.splits", "data.time_split", "data.label_key", "train.strategy", "train.devices",
         "train.virtual_cpus", "train.precision", "train.resume", "train.loop")


def check(cfg: ExperimentConfig) -> None:
    """Raise a one-line ConfigError for the first problem in ``cfg.tune``; return quietly if none."""
    tune = cfg.tune
    base = apply(cfg, {}, trial=True, what="`tune.trial`")
    for path, param in tune.space.items():
        where = f"tune.space[{path!r}]"
        _known(path, where)
        if path == "train.epochs" and tune.algorithm == "hyperband":
            raise ConfigError(f"Invalid `{where}`: hyperband sets each trial's epochs itself (tune.max_epochs)")
        if tune.algorithm == "grid" and isinstance(param, FloatParam) and param.step is None:
            raise ConfigError(f"Invalid `{where}`: grid search needs a `step` for float ranges (or use a choice)")
        if isinstance(param, ChoiceParam):
            candidates = param.values
        else:
            candidates = [param.min, param.max]
        for value in candidates:
            try:
                apply(base, {path: value})
            except ConfigError as exc:
                raise ConfigError(f"Invalid `{where}`: value {value!r} fails the config: {exc}") from None
        for parent, allowed in (param.when or {}).items():
            parent_param = tune.space.get(parent)
            if not isinstance(parent_param, ChoiceParam):
                raise ConfigError(f"Invalid `{where}.when`: `{parent}` is not a choice parameter of tune.space")
            unknown = [v for v in allowed if v not in parent_param.values]
            if unknown:
                raise ConfigError(f"Invalid `{where}.when`: {unknown!r} not among the values of `{parent}` "
                                  f"({parent_param.values!r})")


def apply(cfg: ExperimentConfig, values: dict[str, Any], trial: bool = False, what: str = "tuned value") -> ExperimentConfig:
    """``cfg`` with ``values`` (dotted path -> value) set, validated, without the tune section.

    Args:
        trial: Also apply ``tune.trial`` (settings for trials only, such as fewer epochs).
    """
    raw = cfg.model_dump(mode="json")
    overrides = {**((cfg.tune.trial if cfg.tune else {}) if trial else {}), **values}
    raw["tune"] = None
    for path, value in overrides.items():
        set_path(raw, path, value, what=f"{what} `{path}`")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


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


def _known(path: str, where: str) -> None:
    """The path must name a field of the config, and not one that trials must share."""
    if any(path == f or path.startswith(f + ".") for f in FIXED):
        raise ConfigError(f"Invalid `{where}`: `{path}` cannot be tuned: every trial of a search shares it")
    model: Any = ExperimentConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        if isinstance(model, type) and issubclass(model, BaseModel):
            if part not in model.model_fields:
                fields = [".".join([*parts[:i], f]) for f in model.model_fields]
                near = difflib.get_close_matches(path, fields, n=1, cutoff=0.6)
                hint = f"; did you mean `{near[0]}`?" if near else ""
                raise ConfigError(f"Invalid `{where}`: unknown config path `{path}`{hint}")
            model = _model_of(model.model_fields[part].annotation)
        elif not part.isdigit():  # only list items may follow a non-section field
            raise ConfigError(f"Invalid `{where}`: `{'.'.join(parts[:i])}` is not a section")


def _model_of(annotation: Any) -> Any:
    """The pydantic section class inside ``annotation`` (through Optional), or the annotation."""
    import typing

    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation
