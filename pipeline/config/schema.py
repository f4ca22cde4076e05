"""The experiment config's schema: one frozen pydantic section per stage, nested under ``ExperimentConfig``.

The model, training, tracking and export sections are here, the data-side ones (data,
features, augment, forecast) in data.py. Every field is documented (``pipeline config
schema`` exports them as JSON schema, so editors validate YAML); loading.py reads files
into it and messages.py explains what it rejects. Nothing here imports a stage.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from pipeline.config.base import (
    Count,
    Fraction,
    Lambda,
    Local,
    Monitor,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Rate,
    Section,
    flatten,
)
from pipeline.config.data import (
    AugmentConfig,
    DataConfig,
    FeaturesConfig,
    ForecastConfig,
    SplitsConfig,
)
from pipeline.config.search_space import TuneConfig


class RecommenderConfig(Section):
    """recommender: matrix factorisation with biases, plus an optional MLP tower over side features."""

    user: str = Field("userId", description="Feature holding the user id.")
    item: str = Field("movieId", description="Feature holding the item id.")
    factors: PositiveInt = Field(32, description="Embedding size of users and items.")
    tower: list[PositiveInt] = Field([], description="Hidden units of an MLP over [user, item, side features]; empty for none.")
    implicit: bool = Field(False, description="SVD++: add to each user's vector the implicit embeddings of the items "
                                              "they rated in training (scaled by 1/sqrt of their count).")
    context: list[str] = Field([], description="Side features of the moment of a rating, not of the item (e.g. "
                                               "timestamp): `recommend` scores every item at their latest training "
                                               "value, the model's now.")
    ranking_users: Count = Field(
        1000, description="Test users (a seeded sample) whose top-10 lists score recall@10 and NDCG@10; 0 for all.")


class AudioConfig(Section):
    """audio_cnn: the log-mel front end inside the model, so the export takes a raw waveform."""

    mel_bins: PositiveInt = 40
    frame_ms: PositiveFloat = Field(25.0, description="STFT window length.")
    hop_ms: PositiveFloat = Field(10.0, description="STFT step between frames.")
    min_hz: NonNegativeFloat = 20.0
    max_hz: PositiveFloat | None = Field(None, description="Top of the mel range; default half the sample rate.")


class FineTuneConfig(Section):
    """backbone: two-phase training. The backbone stays frozen for ``frozen_epochs`` (only the head learns),
    then its top ``layers`` layers learn too, at ``learning_rate_factor`` times the schedule's rate. Its
    BatchNormalization layers stay frozen and in inference mode throughout: their statistics are the
    pretraining data's, and small batches of new data would overwrite them."""

    frozen_epochs: Count = Field(5, description="Epochs with the whole backbone frozen.")
    layers: Count = Field(20, description="Top backbone layers unfrozen after frozen_epochs (BatchNormalization "
                                          "excluded); 0 keeps the backbone frozen throughout.")
    learning_rate_factor: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.1, description="The learning rate after frozen_epochs, as a fraction of the optimizer's.")


class ModelConfig(Section):
    """Architecture knobs shared by every model in the registry."""

    name: Literal["cnn", "mlp", "tabular_mlp", "recommender", "lstm", "gru", "conv1d", "backbone", "audio_cnn"] = Field(
        "cnn", description="lstm, gru and conv1d (dilated causal convolutions) need a `forecast` section; backbone "
                           "is a pretrained Keras application under a dense head (docs/transfer_learning.md); "
                           "audio_cnn is cnn over the log-mel spectrogram of a waveform (docs/speech.md).")
    backbone: Literal["mobilenet_v3_small", "efficientnet_b0", "resnet50"] = Field(
        "mobilenet_v3_small", description="backbone: which Keras application.")
    weights: str = Field("imagenet", description="backbone: imagenet (Keras' cache under $KERAS_HOME/models, else a "
                                                 "download), none (random), or the path of a .weights.h5/.h5 file.")
    image_size: PositiveInt | None = Field(
        None, description="backbone: images are resized to this square size in the model; default the data's own "
                          "size, at least 32.")
    fine_tune: FineTuneConfig = FineTuneConfig()
    audio: AudioConfig = AudioConfig()

    @property
    def pretrained(self) -> bool:
        """A backbone with pretrained weights: fine-tuned in two phases; ``weights: none`` trains it whole."""
        return self.name == "backbone" and self.weights != "none"
    width: PositiveInt = Field(32, description="Filters of the first conv block (doubling per block), or units per "
                                               "MLP layer, recurrent layer or causal convolution.")
    depth: PositiveInt = Field(2, description="Number of conv blocks or hidden layers.")
    kernel_size: PositiveInt = 3
    pooling: Literal["flatten", "avg", "max"] = Field("flatten", description="How the CNN turns feature maps into a vector.")
    head_units: Count = Field(128, description="Dense layer before the output (CNN); 0 for none.")
    activation: Literal["relu", "gelu", "swish", "elu", "tanh"] = "relu"
    dropout: Rate = Field(0.0, description="Dropout rate after each block; 0 adds no Dropout layer.")
    batch_norm: bool | Literal["auto"] = Field(
        False, description="BatchNormalization after each conv and dense layer; auto: on unless an epoch has fewer "
        "than 10 steps, where its moving statistics (what inference uses) cannot follow the network.")
    wide: bool = Field(False, description="mlp: the head also sees the encoded features (wide & deep: a linear "
                       "model plus the layers), starting as the linear model fitted on the training split, whose "
                       "penalty it keeps (`regularization` applies to the layers).")
    batch_norm_momentum: Annotated[float, Field(gt=0.0, lt=1.0)] | Literal["auto"] = Field(
        "auto", description="Moving-statistics momentum; auto: 0.9, or lower when an epoch has fewer than 10 steps, "
        "so that the statistics average about one epoch (Keras' 0.99 lags for hundreds of steps on small datasets).")
    recommender: RecommenderConfig = RecommenderConfig()

    @model_validator(mode="after")
    def _wide_is_an_mlp(self) -> ModelConfig:
        if self.wide and self.name not in ("mlp", "tabular_mlp"):
            raise ValueError(f"`model.wide` puts the encoded features beside an mlp's layers; model `{self.name}` has none "
                             "(use mlp or tabular_mlp, or leave wide false)")
        return self


class RegularizationConfig(Section):
    """Kernel regulariser applied to every conv and dense kernel (a wide head's linear part excepted)."""

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
    direction: Literal["auto", "min", "max"] = Field("auto", description="Whether the monitored metric should fall or rise; auto asks the task.")
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
    resume: bool = Field(True, description="Save the whole training state every epoch and resume an interrupted run from it.")
    loop: Literal["auto", "keras", "custom"] = Field(
        "auto", description="keras: model.fit; custom: a strategy.run loop with the same callbacks; auto: custom "
        "where Keras 3.15 fit fails: under MultiWorkerMirroredStrategy (keras#20585), and for text inputs on "
        "several replicas."
    )
    steps_per_execution: PositiveInt | Literal["auto"] = Field(
        "auto", description="Training steps per call of the compiled function (fewer Python round trips). auto: the "
        "largest divisor of the epoch's steps up to 16 under Keras' fit (a value that does not divide them would make "
        "Keras read into the next epoch's batches), 1 in the custom loop.")
    jit_compile: bool = Field(False, description="XLA; TensorFlow refuses it with deterministic ops (set deterministic: false).")
    verbose: Literal[0, 1, 2] = Field(2, description="Keras fit verbosity: 2 prints a line per epoch.")
    baselines: Literal["auto", "none"] | list[Literal["majority", "mean", "linear", "gradient_boosting",
                                                      "user_item_bias"]] = Field(
        "auto", description="Classical baselines scored on the test split beside the model (pipeline/baselines.py): "
                            "auto (every one that fits the task), none, or a list of names. Forecasting has its own.")
    baselines_rows: PositiveInt = Field(100_000, description="Training rows (and test rows) the baselines use, at most.")
    baselines_seconds: PositiveFloat = Field(60.0, description="Baselines stop once they have spent this long; the "
                                                               "rest are skipped with a note.")


class TrackingConfig(Section):
    enabled: bool = True
    telemetry: bool = Field(False, description="Let MLflow send its anonymous usage data (MLflow 3 does by default; "
                            "the pipeline turns it off unless this is true).")
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<workdir>/mlflow.db.")
    experiment: str | None = Field(None, description="MLflow experiment; default the config's name.")

    @field_validator("uri")
    @classmethod
    def _no_password(cls, uri: str | None) -> str | None:
        from urllib.parse import urlsplit

        if uri and "://" in uri and urlsplit(uri).password:
            raise ValueError("holds a password, which every run would log: set MLFLOW_TRACKING_USERNAME and "
                             "MLFLOW_TRACKING_PASSWORD in the environment instead")
        return uri
    write_every: NonNegativeFloat = Field(
        2.0, description="Seconds between writes of epoch metrics (one batch per write; the first epoch and the "
                         "last are written at once). 0 writes every epoch.")


class ExportConfig(Section):
    enabled: bool = True
    root: Local | None = Field(None, description="Export root in TF Serving's layout; default <workdir>/exports.")
    model_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] | None = Field(
        None, description="Folder under the root (a plain name: letters, digits, _ . -); default the config's name.")
    verify: bool = True
    parity_atol: PositiveFloat = Field(1e-5, description="Max |served - model.predict| accepted by verification.")
    verify_examples: PositiveInt = Field(
        4096, description="Test examples (the first batches) on which verification checks determinism and parity.")


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
    confidence: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.95, description="...and do so in at least this share of paired bootstrap resamples of the test examples, "
        "so that a lead within the test split's noise keeps the champion (0: on the test figures alone).")
    thresholds: dict[str, float] = Field({}, description="Absolute bars for the challenger, e.g. {accuracy: 0.95} "
                                         "(at least, for accuracy; at most, for errors).")
    drift: DriftConfig = DriftConfig()
    fail_on_drift: bool = Field(False, description="Treat drift beyond the limits as an error, not a warning.")
    infra_requests: PositiveInt = Field(3, description="Real requests the new version must answer in a fresh server.")
    staging: Local | None = Field(None, description="Export root for challengers; default <workdir>/staging.")


class ExperimentConfig(Section):
    """One experiment: everything needed to reproduce a run."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = Field(
        "digits", description="Names the MLflow experiment, the exports and the registered model; unset, the data "
        "file's or folder's name (`data.path`), else digits.")
    seed: Annotated[int, Field(ge=0, lt=2**32)] = Field(42, description="Seeds weights, shuffles and augmentation "
                                                      "(NumPy's range: 0 to 2**32 - 1).")
    deterministic: bool = Field(True, description="Deterministic ops and tf.data order: same seed, same metrics on the CPU.")
    workdir: Local = Field("work", description="Holds the MLflow store, TFDS data, checkpoints and exports.")
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
    forecast: ForecastConfig | None = None
    tune: TuneConfig | None = None

    @model_validator(mode="after")
    def _series_split_by_time(self) -> ExperimentConfig:
        sequence_model = self.model.name in ("lstm", "gru", "conv1d")
        if self.forecast is None:
            if sequence_model:
                raise ValueError(f"`model.name` {self.model.name} forecasts a series: add a `forecast` section")
            return self
        if self.data.time_split is not None or self.data.splits != SplitsConfig():
            raise ValueError("a series is split by time only: remove `data.splits` and `data.time_split` "
                             "(forecast.validation and forecast.test set the split)")
        if self.model.name not in ("mlp", "lstm", "gru", "conv1d"):
            raise ValueError(f"`model.name` {self.model.name} does not forecast: use mlp, lstm, gru or conv1d")
        return self

    @model_validator(mode="after")
    def _fine_tune_schedule(self) -> ExperimentConfig:
        if self.model.pretrained and self.model.fine_tune.layers and self.optimizer.schedule.name == "plateau":
            raise ValueError("`optimizer.schedule.name` plateau lowers the rate on its own and cannot combine with "
                             "`model.fine_tune` (which lowers it after frozen_epochs): use constant, cosine or "
                             "exponential, or model.fine_tune.layers: 0")
        return self

    @model_validator(mode="before")
    @classmethod
    def _derive_paths(cls, raw: Any) -> Any:
        """Fill paths left unset from ``workdir`` and ``name``, so the resolved config shows them."""
        if not isinstance(raw, dict):
            return raw
        raw = copy.deepcopy(raw)
        workdir = raw.get("workdir", "work")
        workdir = os.path.expanduser(workdir) if isinstance(workdir, str) else workdir  # as `Local` reads it
        path = (raw.get("data") or {}).get("path") if isinstance(raw.get("data"), dict) else None
        name = raw.setdefault("name", _named_after(path) if path else "digits")
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
        return flatten(self.model_dump(mode="json", exclude={"tune"}))


def _named_after(path: str) -> str:
    """An experiment named after its own data (``sales.csv``: sales; ``pictures/``, ``shards/*.parquet``: the folder),
    so that two tables trained from one example config do not share an experiment, a model name and its versions."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p and p != "." and not any(c in p for c in "*?[")]
    stem = parts[-1].rsplit(".", 1)[0] if parts and "." in parts[-1][1:] else (parts[-1] if parts else "")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("_.-")
    return name or "data"
