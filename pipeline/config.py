"""Typed experiment config: defaults -> experiment YAML -> ``key=value`` overrides -> validate.

One pydantic model per stage, nested under ``ExperimentConfig``. Every model
forbids unknown keys and is frozen once validated. Errors come out as one line
that names the field and what is allowed, before TensorFlow is imported, so a
typo costs milliseconds rather than a training run.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import ConfigError

# Constrained scalars, named so an error can say what was expected.
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Lambda = Annotated[float, Field(ge=0.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]

# Metric names a callback may monitor: classification logs accuracy, regression rmse and mae.
Monitor = Literal["loss", "val_loss", "accuracy", "val_accuracy", "rmse", "val_rmse", "mae", "val_mae"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitsConfig(Section):
    """TFDS split specs. Slices of one prepared split are fixed across runs and machines
    (TFDS orders records by a hash of their keys at preparation) and disjoint."""

    train: str = "train[:65%]"
    validation: str = "train[65%:80%]"
    test: str = "train[80%:]"


class TimeSplitConfig(Section):
    """Split by time instead of by the TFDS split specs: train on the earliest examples."""

    column: str = Field(description="Numeric feature that orders examples in time, e.g. timestamp.")
    split: str = Field("train", description="The TFDS split that is cut into train, validation and test.")
    validation: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(0.7, description="Quantile where validation starts.")
    test: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(0.8, description="Quantile where test starts.")

    @model_validator(mode="after")
    def _ordered(self) -> TimeSplitConfig:
        if self.validation >= self.test:
            raise ValueError("`validation` must be below `test` (they are quantiles of the time column)")
        return self


class DataConfig(Section):
    """Which TFDS dataset to read and how ``tf.data`` feeds it."""

    dataset: str = Field("digits", description="TFDS builder name (digits, ames_housing, movielens_small, csv, image_folder, or any prepared dataset).")
    data_dir: str | None = Field(None, description="TFDS data_dir; default <workdir>/tfds.")
    path: str | None = Field(None, description="csv: a .csv or .parquet file; image_folder: a folder with one subfolder per class.")
    splits: SplitsConfig = SplitsConfig()
    time_split: TimeSplitConfig | None = None
    features: list[str] | None = Field(None, description="Features the model sees; default every feature but the label.")
    label_key: str = Field("label", description="Feature holding the label: a class (classification) or a number (regression).")
    column_types: dict[str, Literal["float", "int", "string"]] = Field({}, description="csv: declared column types; others are inferred.")
    on_bad_input: Literal["error", "skip"] = Field("error", description="csv rows / image files that cannot be read: stop with an error naming them, or skip and count them.")
    image_size: tuple[PositiveInt, PositiveInt] = Field((32, 32), description="image_folder: every image is resized to (height, width).")
    channels: Literal[1, 3] = Field(3, description="image_folder: 1 (grey) or 3 (RGB); images are converted.")
    batch_size: PositiveInt = 64
    batch_scope: Literal["global", "per_replica"] = Field(
        "global", description="Whether batch_size is the global batch or each replica's (global = size x replicas)."
    )
    drop_remainder: bool = Field(False, description="Drop each epoch's last partial training batch.")
    shuffle_buffer: Count = Field(2048, description="0 disables shuffling.")
    cache: bool = Field(True, description="Cache decoded examples in memory after the first epoch.")
    threads: PositiveInt | None = Field(
        None, description="tf.data's own thread pool; default half the CPUs (at least 1): on a CPU-only machine "
                          "the model's kernels need the rest, and contention costs more than it brings (bench/perf.py).")


class FeaturesConfig(Section):
    """How raw features are encoded inside the model (so the export takes raw features)."""

    types: dict[str, Literal["numeric", "categorical", "multi_hot"]] = Field(
        {}, description="Override inferred kinds: numbers are numeric, strings categorical."
    )
    encoding: Literal["one_hot", "embedding"] = Field("one_hot", description="How categoricals enter an MLP.")
    embedding_dim: PositiveInt = 8
    separator: str = Field("|", description="multi_hot: separator between the values in one string.")
    missing: Literal["mean", "zero"] = Field("mean", description="Numeric NaN becomes the training mean (or 0).")
    missing_indicator: bool = Field(True, description="Add an is-missing input for numerics that had NaN in training.")
    target_transform: Literal["none", "log"] = Field("none", description="Regression: train on log(y); the export returns y.")


class Rotation(Section):
    type: Literal["rotation"]
    degrees: Annotated[float, Field(gt=0.0, le=180.0)] = 15.0


class Flip(Section):
    type: Literal["flip"]
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = "horizontal"


class Brightness(Section):
    type: Literal["brightness"]
    factor: Fraction = 0.2


class Contrast(Section):
    type: Literal["contrast"]
    factor: Fraction = 0.2


class Zoom(Section):
    type: Literal["zoom"]
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1


class Translation(Section):
    type: Literal["translation"]
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1


class GaussianNoise(Section):
    type: Literal["gaussian_noise"]
    stddev: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.05, description="Standard deviation as a fraction of the pixel range."
    )


AugmentLayer = Annotated[
    Rotation | Flip | Brightness | Contrast | Zoom | Translation | GaussianNoise,
    Field(discriminator="type"),
]


class AugmentConfig(Section):
    """Random augmentation applied to the training split only."""

    placement: Literal["dataset", "model"] = Field(
        "dataset", description="In the tf.data pipeline (CPU) or inside the model (on the device)."
    )
    fill_mode: Literal["constant", "reflect", "nearest", "wrap"] = Field(
        "constant", description="How rotation, zoom and translation fill pixels they uncover."
    )
    chunk: PositiveInt | Literal["auto"] = Field(
        "auto", description="Images augmented per call in the tf.data pipeline, then re-batched: a call costs about "
        "the same for 32 small images as for 512. auto: as many as fit in 8 MiB of float32 pixels, from one batch "
        "up to 2048.")
    layers: list[AugmentLayer] = []


class RecommenderConfig(Section):
    """recommender: matrix factorisation with biases, plus an optional MLP tower over side features."""

    user: str = Field("userId", description="Feature holding the user id.")
    item: str = Field("movieId", description="Feature holding the item id.")
    factors: PositiveInt = Field(32, description="Embedding size of users and items.")
    tower: list[PositiveInt] = Field([], description="Hidden units of an MLP over [user, item, side features]; empty for none.")


class ModelConfig(Section):
    """Architecture knobs shared by every model in the registry."""

    name: Literal["cnn", "mlp", "tabular_mlp", "recommender"] = "cnn"
    width: PositiveInt = Field(32, description="Filters of the first conv block (doubling per block), or units per MLP layer.")
    depth: PositiveInt = Field(2, description="Number of conv blocks or hidden layers.")
    kernel_size: PositiveInt = 3
    pooling: Literal["flatten", "avg", "max"] = Field("flatten", description="How the CNN turns feature maps into a vector.")
    head_units: Count = Field(128, description="Dense layer before the output (CNN); 0 for none.")
    activation: Literal["relu", "gelu", "swish", "elu", "tanh"] = "relu"
    dropout: Rate = Field(0.0, description="Dropout rate after each block; 0 adds no Dropout layer.")
    batch_norm: bool = False
    batch_norm_momentum: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.9, description="Moving-statistics momentum. Keras' 0.99 lags for hundreds of steps on small datasets."
    )
    recommender: RecommenderConfig = RecommenderConfig()


class RegularizationConfig(Section):
    """Kernel regulariser applied to every conv and dense kernel."""

    kernel: Literal["none", "l1", "l2", "l1_l2"] = "none"
    l1: Lambda = 0.0
    l2: Lambda = 0.0

    @model_validator(mode="after")
    def _lambda_given(self) -> RegularizationConfig:
        for name in ("l1", "l2"):
            if name in self.kernel and getattr(self, name) == 0.0:
                raise ValueError(f"`{name}` must be > 0 when kernel is '{self.kernel}'")
        return self


class ScheduleConfig(Section):
    """Learning-rate schedule; 'plateau' is a callback, the others are Keras schedules."""

    name: Literal["constant", "cosine", "exponential", "plateau"] = "constant"
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.0, description="cosine: final LR as a fraction of the initial one.")
    decay_rate: Fraction = Field(0.9, description="exponential: LR factor per epoch.")
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(0.5, description="plateau: LR factor on a plateau.")
    patience: Count = Field(3, description="plateau: epochs without improvement before reducing.")
    min_lr: Lambda = 1e-6


class OptimizerConfig(Section):
    name: Literal["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad"] = "adam"
    learning_rate: PositiveFloat = 1e-3
    momentum: Rate = Field(0.9, description="momentum and nesterov only.")
    weight_decay: Lambda = Field(0.0, description="Decoupled weight decay; adamw defaults to 1e-4 when 0.")
    clipnorm: PositiveFloat | None = None
    clipvalue: PositiveFloat | None = None
    scale_lr: Literal["none", "linear", "sqrt"] = Field(
        "none", description="Scale learning_rate by the replica count (linear) or its square root."
    )
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="after")
    def _one_clipping(self) -> OptimizerConfig:
        if self.clipnorm and self.clipvalue:
            raise ValueError("set `clipnorm` or `clipvalue`, not both (Keras clips one way)")
        return self


class EarlyStoppingConfig(Section):
    enabled: bool = True
    monitor: Monitor = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    patience: Count = 10
    min_delta: Lambda = 0.0
    restore_best_weights: bool = True


class TrainConfig(Section):
    epochs: PositiveInt = 60
    strategy: Literal["auto", "default", "one_device", "mirrored", "multi_worker"] = "auto"
    devices: list[str] | None = Field(None, description="mirrored: devices to use, e.g. ['/gpu:0', '/gpu:1']; default all.")
    virtual_cpus: Count = Field(0, description="Split the CPU into this many logical devices (tests and benchmarks of strategies).")
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "float32", description="Mixed precision keeps variables and the output layer in float32."
    )
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    checkpoint: bool = Field(True, description="Keep the best weights under <workdir>/runs/<run id>/.")
    resume: bool = Field(True, description="Back up every epoch and resume an interrupted run (BackupAndRestore).")
    loop: Literal["auto", "keras", "custom"] = Field(
        "auto", description="keras: model.fit; custom: a strategy.run loop with the same callbacks; auto: custom "
        "under MultiWorkerMirroredStrategy, where Keras 3.15 fit fails (keras#20585)."
    )
    steps_per_execution: PositiveInt | Literal["auto"] = Field(
        "auto", description="Training steps per call of the compiled function (fewer Python round trips). auto: the "
        "largest divisor of the epoch's steps up to 16 under Keras' fit (a value that does not divide them would make "
        "Keras read into the next epoch's batches), 1 in the custom loop.")
    jit_compile: bool = Field(False, description="XLA; TensorFlow refuses it with deterministic ops (set deterministic: false).")
    verbose: Literal[0, 1, 2] = Field(2, description="Keras fit verbosity: 2 prints a line per epoch.")


class TrackingConfig(Section):
    enabled: bool = True
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<workdir>/mlflow.db.")
    experiment: str | None = Field(None, description="MLflow experiment; default the config's name.")
    write_every: NonNegativeFloat = Field(
        2.0, description="Seconds between writes of epoch metrics (one batch per write; the first epoch and the "
                         "last are written at once). 0 writes every epoch.")


class ExportConfig(Section):
    enabled: bool = True
    root: str | None = Field(None, description="Export root in TF Serving's layout; default <workdir>/exports.")
    model_name: str | None = Field(None, description="Folder under the root; default the config's name.")
    verify: bool = True
    parity_atol: PositiveFloat = Field(1e-5, description="Max |served - model.predict| accepted by verification.")


class DriftConfig(Section):
    """Limits of the data check before a retraining; beyond them is a warning (or an error, see fail_on_drift)."""

    missing_rate: Rate = Field(0.1, description="Largest rise of a feature's missing rate (absolute).")
    out_of_range: Rate = Field(0.01, description="Largest share of values outside the champion's training range.")
    mean_shift: PositiveFloat = Field(0.5, description="Largest move of a mean, in the champion's standard deviations.")
    new_categories: Rate = Field(0.05, description="Largest share of values in categories the champion never saw.")


class RetrainConfig(Section):
    """`pipeline retrain`: train a challenger, promote it only if it beats the champion."""

    metric: str | None = Field(None, description="Compared on the test split through the exports: accuracy "
                               "(classification default), rmse, rmse_log (default with a log target), mae.")
    margin: Lambda = Field(0.0, description="The challenger must beat the champion by more than this.")
    thresholds: dict[str, float] = Field({}, description="Absolute bars for the challenger, e.g. {accuracy: 0.95} "
                                         "(at least, for accuracy; at most, for errors).")
    drift: DriftConfig = DriftConfig()
    fail_on_drift: bool = Field(False, description="Treat drift beyond the limits as an error, not a warning.")
    infra_requests: PositiveInt = Field(3, description="Real requests the new version must answer in a fresh server.")
    staging: str | None = Field(None, description="Export root for challengers; default <workdir>/staging.")


# ---- tuning ------------------------------------------------------------------


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
    direction: Literal["min", "max"] | None = Field(None, description="Default: max for accuracy, min otherwise.")


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
    directory: str | None = Field(None, description="Search state (oracle, trials); default <workdir>/tuning.")
    trial: dict[str, Any] = Field({}, description="Config values for trials only, e.g. {train.epochs: 10}; "
                                  "the best config keeps the experiment's own.")
    space: dict[str, Param] = Field(description="Dotted config path -> parameter; a list is shorthand for a choice.")

    @model_validator(mode="before")
    @classmethod
    def _choice_shorthand(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("space"), dict):
            raw = {**raw, "space": {k: {"type": "choice", "values": v} if isinstance(v, list) else v
                                    for k, v in raw["space"].items()}}
        return raw


class ExperimentConfig(Section):
    """One experiment: everything needed to reproduce a run."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = "digits"
    seed: int = 42
    deterministic: bool = Field(True, description="Deterministic ops and tf.data order: same seed, same metrics on the CPU.")
    workdir: str = Field("work", description="Holds the MLflow store, TFDS data, checkpoints and exports.")
    data: DataConfig = DataConfig()
    features: FeaturesConfig = FeaturesConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    regularization: RegularizationConfig = RegularizationConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    export: ExportConfig = ExportConfig()
    retrain: RetrainConfig = RetrainConfig()
    tune: TuneConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _derive_paths(cls, raw: Any) -> Any:
        """Fill paths left unset from ``workdir`` and ``name``, so the resolved config shows them."""
        if not isinstance(raw, dict):
            return raw
        raw = copy.deepcopy(raw)
        workdir = raw.get("workdir", "work")
        name = raw.get("name", "digits")
        derived = {
            ("data", "data_dir"): f"{workdir}/tfds",
            ("tracking", "uri"): f"sqlite:///{workdir}/mlflow.db",
            ("tracking", "experiment"): name,
            ("export", "root"): f"{workdir}/exports",
            ("export", "model_name"): name,
            ("tune", "directory"): f"{workdir}/tuning",
            ("retrain", "staging"): f"{workdir}/staging",
        }
        for (section, key), value in derived.items():
            if section == "tune" and raw.get("tune") is None:
                continue
            node = raw.setdefault(section, {})
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = value
        return raw

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted keys to scalar values, for MLflow params (the tune section is the search's, not the run's)."""
        return _flatten(self.model_dump(mode="json", exclude={"tune"}))


def load(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read an experiment YAML, apply ``key=value`` overrides, validate and freeze.

    Args:
        path: Experiment YAML holding only what differs from the defaults; None for defaults.
        overrides: Dotted ``key=value`` strings, values parsed as YAML. Default none.

    Raises:
        ConfigError: One line naming the file, key or value at fault.
    """
    raw = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        _apply_override(raw, item)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    if cfg.tune is not None:
        from pipeline.tune.space import check

        check(cfg)
    return cfg


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"Malformed YAML in {path}{where}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"Invalid config {path}: expected a mapping of sections at the top, got {type(raw).__name__}")
    return raw


def _apply_override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"Invalid override `{item}`: expected key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    set_path(raw, key, value, what=f"override `{item}`")


def set_path(raw: dict, key: str, value: Any, what: str = "key") -> None:
    """Set dotted ``key`` (list items by index, e.g. ``model.recommender.tower.0``) in a raw config dict."""
    node: Any = raw
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
        else:
            raise ConfigError(f"Invalid {what}: `{'.'.join(parts[:i])}` is not a section")
        if last:
            node[index] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(index), (dict, list)):
                node[index] = {}
            node = node[index]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list) and tree:
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


# ---- error messages --------------------------------------------------------


def _describe(exc: ValidationError) -> str:
    """The first validation error as one actionable line."""
    errors = exc.errors()
    err = errors[0]
    path, fields, field_info = _walk(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        key = path.rsplit(".", 1)[-1]
        near = difflib.get_close_matches(key.split("[")[0], fields, n=1, cutoff=0.6)
        parent = path.rsplit(".", 1)[0] + "." if "." in path else ""
        hint = f"; did you mean `{parent}{near[0]}`?" if near else f". Valid keys: {', '.join(fields)}."
        message = f"Unknown key `{path}`{hint}"
    elif kind == "missing":
        message = f"Missing required key `{path}`."
    elif kind == "value_error":
        message = f"Invalid `{path}`: {err['msg'].removeprefix('Value error, ')}."
    else:
        expected = _expected(err, field_info)
        suggestion = ""
        if kind in ("literal_error", "union_tag_invalid") and isinstance(err.get("input"), str):
            choices = [c.strip("'") for c in _choices(err)]
            near = difflib.get_close_matches(err["input"], choices, n=1)
            if near:
                expected, suggestion = expected.rstrip("."), f"; did you mean '{near[0]}'?"
        shown = err.get("input")
        if kind == "union_tag_invalid":
            path = f"{path}.type" if path else "type"
            shown = err.get("ctx", {}).get("tag", shown)
        message = f"Invalid value for `{path}`: {shown!r}. {expected}{suggestion}"
    more = len(errors) - 1
    return message + (f" ({more} more error{'s' if more > 1 else ''})" if more else "")


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
    lo_t = "-inf" if lo is None else f"{lo:g}"
    hi_t = "inf" if hi is None else f"{hi:g}"
    return f"{kind} in {lo_b}{lo_t}, {hi_t}{hi_b}"


def _scalar_name(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return "an integer" if args[0] is int else "a float" if args[0] is float else "a value"


def _walk(loc: tuple) -> tuple[str, list[str], Any]:
    """Follow a pydantic error location through the config classes.

    Returns the dotted path users write (union tags dropped, list items as [i]),
    the valid keys of the innermost section, and the field's FieldInfo if any.
    """
    model: Any = ExperimentConfig
    annotation: Any = None
    field_info = None
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            annotation = _unwrap(annotation, list_item=True)
            continue
        if annotation is not None and typing.get_origin(_unwrap(annotation)) is dict:
            path += f"[{part!r}]"
            annotation = typing.get_args(_unwrap(annotation))[1]
            continue
        if annotation is not None and _is_union(annotation):
            tagged = {typing.get_args(c.model_fields["type"].annotation)[0]: c for c in _members(annotation)}
            if part in tagged:
                model, annotation = tagged[part], None
                continue
        if annotation is not None:
            model = _unwrap(annotation)
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            field_info = model.model_fields[part]
            annotation = field_info.annotation
        else:
            field_info, annotation = None, None
        path = f"{path}.{part}" if path else str(part)
    fields = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
    return path, fields, field_info


def _unwrap(annotation: Any, list_item: bool = False) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if list_item and typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if _is_optional(annotation) and len(args) == 1:
        return args[0]
    return annotation


def _is_optional(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType) and type(None) in typing.get_args(annotation)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(_unwrap(annotation)) in (Union, types.UnionType) and not _is_optional(annotation)


def _members(annotation: Any) -> tuple:
    return typing.get_args(_unwrap(annotation))
