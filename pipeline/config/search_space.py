"""The ``tune`` section: its schema, and the search space checked against and applied to experiment configs.

A parameter is named by the dotted path of the config field it sets
(``optimizer.learning_rate``), so anything the config can say can be tuned and
a trial's values are just overrides of the experiment config. ``check`` runs
inside config loading, before TensorFlow is imported: every candidate value
(each choice, both ends of each range) is applied to the config and validated,
so a search never starts with a value that would fail its trial. Declaring the
space to KerasTuner is tune/'s job.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from pipeline.config.base import Local, Monitor, PositiveFloat, PositiveInt, Section, set_path
from pipeline.config.messages import describe, walk
from pipeline.errors import ConfigError
from pipeline.text import closest

# Fields a search may not vary: trials must read the same data, run the same way and be tracked together.
FIXED = ("name", "workdir", "seed", "tune", "tracking", "export", "retrain", "data.dataset", "data.data_dir", "data.path",
         "data.splits", "data.time_split", "data.label_key", "train.strategy", "train.devices",
         "train.virtual_cpus", "train.precision", "train.resume", "train.loop")


class _Param(Section):
    """One hyperparameter: a config field (the search-space key is its dotted path)."""

    when: dict[str, list[Any]] | None = Field(
        None, description="Active only when these `choice` parameters take one of the listed values, "
        "e.g. {optimizer.name: [momentum, nesterov]}.")


class ChoiceParam(_Param):
    type: Literal["choice"]
    values: list[Any] = Field(description="Candidate values: numbers, strings, booleans.")

    @model_validator(mode="after")
    def _not_empty(self) -> ChoiceParam:
        if not self.values:
            raise ValueError("`values` is empty: give at least one value")
        return self


class _Range(_Param):
    sampling: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if self.min > self.max:
            raise ValueError(f"`min` ({self.min:g}) is above `max` ({self.max:g})")
        if self.sampling == "log" and self.min <= 0:
            raise ValueError(f"log sampling needs a positive range, got min {self.min:g}")
        return self


class IntParam(_Range):
    type: Literal["int"]
    min: int
    max: int
    step: PositiveInt = 1


class FloatParam(_Range):
    type: Literal["float"]
    min: float
    max: float
    step: PositiveFloat | None = Field(None, description="Grid spacing (a factor with log sampling); grid search needs it.")


Param = Annotated[ChoiceParam | IntParam | FloatParam, Field(discriminator="type")]


class ObjectiveConfig(Section):
    metric: Monitor = "val_loss"
    direction: Literal["auto", "min", "max"] = Field("auto", description="auto: the direction the task gives the metric.")


class TuneConfig(Section):
    """KerasTuner search over config fields; `pipeline tune` reads it, `pipeline train` ignores it."""

    algorithm: Literal["random", "grid", "bayesian", "hyperband"] = "random"
    objective: ObjectiveConfig = ObjectiveConfig()
    max_trials: PositiveInt = Field(10, description="random, grid, bayesian: trials at most (grid also stops when exhausted).")
    executions_per_trial: PositiveInt = Field(1, description="Trainings per trial, seeds seed..seed+n-1; the score is their mean.")
    max_epochs: PositiveInt | None = Field(None, description="hyperband: most epochs one model gets; default train.epochs.")
    factor: Annotated[int, Field(ge=2)] = Field(3, description="hyperband: reduction factor between rounds.")
    hyperband_iterations: PositiveInt = 1
    time_budget: PositiveFloat | None = Field(None, description="Seconds after which no new trial starts (each run of the command).")
    seed: int | None = Field(None, description="Oracle seed; default the experiment's seed.")
    max_memory_growth: Annotated[float, Field(gt=0.0)] = Field(
        0.1, description="A trial worker hands over to a fresh process before its RSS grows past this "
        "fraction over its RSS after its first trial (TensorFlow leaks part of each traced function).")
    directory: Local | None = Field(None, description="Search state (oracle, trials); default <workdir>/tuning.")
    trial: dict[str, Any] = Field({}, description="Config values for trials only, e.g. {train.epochs: 10}; "
                                  "the best config keeps the experiment's own.")
    space: dict[str, Param] = Field(description="Dotted config path -> parameter; a list is shorthand for a choice, e.g. "
                                                      "tune.space='{model.width: [64, 128], optimizer.learning_rate: "
                                                      "{type: float, min: 0.0001, max: 0.01, sampling: log}}' "
                                                      "(docs/tuning.md)")

    @model_validator(mode="before")
    @classmethod
    def _choice_shorthand(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("space"), dict):
            raw = {**raw, "space": {k: {"type": "choice", "values": v} if isinstance(v, list) else v
                                    for k, v in raw["space"].items()}}
        return raw


def check(cfg) -> None:
    """Raise a one-line ConfigError for the first problem in ``cfg.tune``; return quietly if none."""
    tune = cfg.tune
    base = apply(cfg, {}, trial=True, what="`tune.trial`")
    for path, param in tune.space.items():
        where = f"tune.space[{path!r}]"
        _known(type(cfg), path, where)
        if path == "train.epochs" and tune.algorithm == "hyperband":
            raise ConfigError(f"Invalid `{where}`: hyperband sets each trial's epochs itself (tune.max_epochs)")
        if tune.algorithm == "grid" and isinstance(param, FloatParam) and param.step is None:
            raise ConfigError(f"Invalid `{where}`: grid search needs a `step` for float ranges (or use a choice)")
        candidates = param.values if isinstance(param, ChoiceParam) else [param.min, param.max]
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


def apply(cfg, values: dict[str, Any], trial: bool = False, what: str = "tuned value"):
    """``cfg`` with ``values`` (dotted path -> value) set, validated, without the tune section.

    Args:
        trial: Also apply ``tune.trial`` (settings for trials only, such as fewer epochs); default False.
    """
    raw = cfg.model_dump(mode="json")
    overrides = {**((cfg.tune.trial if cfg.tune else {}) if trial else {}), **values}
    raw["tune"] = None
    for path, value in overrides.items():
        set_path(raw, path, value, what=f"{what} `{path}`")
    try:
        return type(cfg).model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe(exc, type(cfg))) from None


def _known(root, path: str, where: str) -> None:
    """The path must name a field of the config, and not one that trials must share."""
    if any(path == f or path.startswith(f + ".") for f in FIXED):
        raise ConfigError(f"Invalid `{where}`: `{path}` cannot be tuned: every trial of a search shares it")
    parts = path.split(".")
    unknown = walk(root, parts)[3]
    if unknown is not None:
        fields = walk(root, parts[: unknown + 1])[1]  # the keys of the section the unknown part is in
        near = closest(parts[unknown], fields, most=1)
        hint = f"; did you mean `{'.'.join([*parts[:unknown], near[0]])}`?" if near else ""
        raise ConfigError(f"Invalid `{where}`: unknown config path `{path}`{hint}")
