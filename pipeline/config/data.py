"""The data-side sections of the experiment config: where examples come from and how they are fed.

``data`` (dataset, splits, reading and caching), ``features`` (how raw columns are
encoded inside the model), ``augment`` (random layers on training examples) and
``forecast`` (a series cut into windows). schema.py nests them under ``ExperimentConfig``.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from pipeline.config.base import Count, Fraction, Local, PositiveFloat, PositiveInt, Rate, Section


def _known_encoding(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise ValueError(f"unknown text encoding {name!r} (utf-8, latin-1, cp1252, utf-16 ...)") from None


def _tab(value):
    """A tab as a YAML file or a command line can spell it: ``tab`` or ``\\t`` (a plain scalar keeps the backslash)."""
    return "\t" if value in ("tab", "\\t") else value


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
    data_dir: Local | None = Field(None, description="TFDS data_dir; default <workdir>/tfds.")
    path: Local | None = Field(None, description="csv: a .csv (also .csv.gz, .bz2, .xz) or .parquet file, a glob or a folder of them; "
                                   "image_folder: a folder with one subfolder per class.")
    splits: SplitsConfig = SplitsConfig()
    time_split: TimeSplitConfig | None = None
    columns: list[str] | None = Field(None, description="Dataset features the model sees; default every feature but the label.")
    exclude: list[str] = Field([], description="Features the model does not see: a row number, an id, a column "
                                                "known only after the fact (a run's notes name the likely ones).")
    label_key: str = Field("label", description="Feature holding the label: a class (classification) or a number (regression).")
    dtypes: dict[str, Literal["float", "int", "string"]] = Field({}, description="csv: how a column is stored; others are inferred.")
    encoding: Annotated[str, AfterValidator(_known_encoding)] = Field(
        "utf-8", description="csv, series: the CSV files' text encoding (latin-1 or cp1252 for many spreadsheet "
                             "exports); Parquet text is always UTF-8.")
    delimiter: Annotated[Literal[",", ";", "\t", "|"], BeforeValidator(_tab)] = Field(
        ",", description="csv, series: the character between a CSV file's fields (';' for many European spreadsheet "
                         "exports, tab for tab-separated files); default ',', or a tab where data.path names .tsv "
                         "files (data.tsv, data.tsv.gz, exports/*.tsv).")
    column_names: list[str] | None = Field(
        None, description="csv, series: the columns of CSV files that have no header line (Hive's and Spark's text "
                          "output, a database's dump), in file order: every line is then a row.")
    decimal: Literal["auto", ".", ","] = Field(
        "auto", description="csv, series: the decimal mark of a CSV file's numbers; auto: '.' between commas, else "
                            "the mark most numbers of the first rows take (a ';' file from a spreadsheet: ',').")
    thousands: Literal["none", ".", ",", " ", "'"] = Field(
        "none", description="csv, series: the mark grouping a CSV file's numbers by thousands: '.' for 1.234.567,8, "
                            "',' for 1,234,567.8, ' ' for 1 234 567,8 (no-break spaces too), \"'\" for 1'234'567.8; "
                            "none: numbers are written plain. With '.' the decimal mark is ',', with ',' it is '.'.")
    merge_columns: bool = Field(
        False, description="csv: shards whose columns differ (a column added to a table later) are read as one table "
                           "over all their columns, a column a shard lacks missing in its rows (Spark's mergeSchema); "
                           "default: every shard must have the first one's columns, so a misspelt header stops.")
    on_bad_input: Literal["error", "skip"] = Field("error", description="csv rows / image files that cannot be read: stop with an error naming them, or skip and count them.")
    image_size: tuple[PositiveInt, PositiveInt] = Field((32, 32), description="image_folder: every image is resized to (height, width).")
    channels: Literal[1, 3] = Field(3, description="image_folder: 1 (grey) or 3 (RGB); images are converted.")
    sample_rate: PositiveInt = Field(16000, description="audio_folder, spoken_digits: clips are resampled to this "
                                                        "rate (Hz), mixed down to one channel.")
    clip_seconds: PositiveFloat = Field(1.0, description="audio_folder, spoken_digits: clips are padded with silence "
                                                         "or cropped (and counted) to this length.")
    batch_size: PositiveInt | Literal["auto"] = Field(
        64, description="Examples per step; auto: about 50 steps an epoch (training rows / 50, a power of two "
        "from 8 to 256), so a table of a few hundred rows gets enough steps and one of millions large batches.")
    batch_scope: Literal["global", "per_replica"] = Field(
        "global", description="Whether batch_size is the global batch or each replica's (global = size x replicas)."
    )
    drop_remainder: bool = Field(False, description="Drop each epoch's last partial training batch.")
    shuffle_buffer: Count = Field(2048, description="0 disables shuffling.")
    cache: Literal["auto", "memory", "file", "none"] | bool = Field(
        "auto", description="Keep read examples after the first epoch: memory, a file under <workdir>/cache, or none; "
                            "auto: memory when a split fits cache_memory_mb, else a file when the disk has room, else none; "
                            "none for a series, whose windows are cut again from it each epoch.")
    cache_memory_mb: PositiveInt = Field(1024, description="cache auto: the most memory one split may take.")
    threads: PositiveInt | None = Field(
        None, description="tf.data's own thread pool; default half the CPUs (at least 1): on a CPU-only machine "
                          "the model's kernels need the rest, and contention costs more than it brings (bench/perf.py).")

    @model_validator(mode="before")
    @classmethod
    def _tab_for_tsv(cls, values):
        """A .tsv file's fields are tab-separated: that is its delimiter unless one is given."""
        if isinstance(values, dict) and "delimiter" not in values and isinstance(values.get("path"), str) and \
                ".tsv" in (suffix.lower() for suffix in Path(values["path"]).suffixes):
            return {**values, "delimiter": "\t"}
        return values

    @model_validator(mode="after")
    def _decimal_mark(self) -> DataConfig:
        if self.decimal == self.delimiter:
            raise ValueError(f"`decimal` cannot be the delimiter ({self.delimiter!r}): set `delimiter` to ';' for "
                             "numbers written with a decimal comma")
        if self.thousands == self.decimal:  # as the delimiter it is fine: such numbers are quoted ("1,234.5")
            raise ValueError(f"`thousands` cannot be the decimal mark ({self.thousands!r})")
        return self


class ForecastConfig(Section):
    """Time-series forecasting: windows of one series, split by time only (docs/forecasting.md).

    ``data.label_key`` is the target column. A window is ``input_window`` past steps of the target
    and covariates, plus the known-future covariates over the ``horizon``; its label is the next
    ``horizon`` target values. Train, validation and test are consecutive stretches of the series
    (test last): a window belongs to the stretch its horizon falls in.
    """

    time: str = Field("time", description="Column that orders the series: epoch seconds or another increasing number "
                                          "(the `series` dataset also parses date strings).")
    series_id: str | None = Field(None, description="Column naming the series of each row, for a file of several "
                                                   "series: each is checked and split on its own (one too short for "
                                                   "the splits is left out, with a note); the id is an input.")
    input_window: PositiveInt = Field(48, description="Past steps the model sees.")
    horizon: PositiveInt = Field(1, description="Steps forecast at once (direct multi-step output).")
    stride: PositiveInt = Field(1, description="Steps between consecutive training windows.")
    past_covariates: list[str] = Field([], description="Columns known only up to the forecast time (e.g. volume).")
    known_covariates: list[str] = Field([], description="Columns known over the horizon too (workday flag, forecast "
                                                        "temperature): the model sees them for past and future steps.")
    calendar: list[Literal["time_of_day", "day_of_week", "day_of_year"]] = Field(
        [], description="Calendar features computed inside the model from the time column (epoch seconds, UTC).")
    target_transform: Literal["level", "difference", "log_return"] = Field(
        "level", description="What the model predicts: the level, the change from the last value, or the log return "
                             "from it. The export always returns levels.")
    seasonality: list[PositiveInt] = Field([], description="Seasonal periods in steps (48 and 336 for half-hourly data): "
                                                           "a seasonal-naive baseline each; the first scales MASE.")
    validation: Annotated[float, Field(gt=0.0, lt=0.5)] = Field(0.1, description="Share of the series for validation.")
    test: Annotated[float, Field(gt=0.0, lt=0.5)] = Field(0.1, description="Share of the series for the test window (the newest).")
    end: Fraction = Field(1.0, description="Share of the series used, from its start; backtest folds move it.")
    gaps: Literal["error", "allow", "fill"] = Field(
        "error", description="Steps longer than the series' usual step: an error naming the first, allowed (rows are "
                             "consecutive steps, as trading days are), or filled by carrying the last row forward.")
    folds: PositiveInt = Field(5, description="Walk-forward backtest: folds over expanding windows (pipeline backtest).")
    bootstrap: PositiveInt = Field(1000, description="Block-bootstrap resamples of the test windows for the error "
                                                     "ratio's 95% interval against the best baseline.")
    min_skill: Rate = Field(0.01, description="Skill: the error ratio's whole 95% interval lies below 1 - min_skill "
                                              "(a model must cut the best baseline's error by at least this share).")


class FeaturesConfig(Section):
    """How raw features are encoded inside the model (so the export takes raw features)."""

    kinds: dict[str, Literal["numeric", "categorical", "multi_hot"]] = Field(
        {}, description="How a feature is encoded, where inference is wrong: numbers are numeric, strings categorical."
    )
    encoding: Literal["auto", "one_hot", "embedding"] = Field(
        "auto", description="How categoricals enter an MLP; auto: one-hot up to one_hot_max values, an embedding "
                            "above (a column of 100,000 values one-hot makes every step a 100,000-wide product).")
    one_hot_max: PositiveInt = Field(1000, description="encoding auto: the most values a one-hot categorical has.")
    embedding_dim: PositiveInt = 8
    max_vocabulary: PositiveInt = Field(
        100_000, description="Categorical and id lookups keep the training split's most frequent values, at most "
                             "this many; the rest share one out-of-vocabulary bucket.")
    min_count: PositiveInt = Field(
        2, description="A categorical value in fewer training rows than this shares the out-of-vocabulary bucket "
                       "(ids of a recommender excepted): a value seen once can only be memorised.")
    separator: str = Field("|", description="multi_hot: separator between the values in one string.")
    missing: Literal["mean", "zero"] = Field("mean", description="Numeric NaN becomes the training mean (or 0).")
    missing_indicator: bool = Field(True, description="Add an is-missing input for numerics that had NaN in training.")
    piecewise_bins: Annotated[int, Field(ge=0, le=256)] = Field(
        0, description="The deep part also sees each number piecewise-linearly encoded over this many bins at its "
                       "training quantiles (Gorishniy et al., 2022): a threshold is one weight; 0: off.")
    codes: Literal["auto", "none"] = Field(
        "auto", description="auto: a column of whole numbers whose values predict the label apart from their order "
                            "(ids written as numbers; tested out of fold on training rows) also enters one-hot.")
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


class TimeShift(Section):
    type: Literal["time_shift"]
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(0.1, description="audio: the most a clip moves "
                                                                               "(either way), as a fraction of it.")


class BackgroundNoise(Section):
    type: Literal["background_noise"]
    snr_db: float = Field(10.0, description="audio: white noise at a signal-to-noise ratio drawn from snr_db to "
                                            "snr_db + 20 dB per clip.")


class TimeMask(Section):
    type: Literal["time_mask"]
    width: PositiveInt = Field(10, description="audio (SpecAugment): the most spectrogram frames one mask hides.")
    count: PositiveInt = 2


class FrequencyMask(Section):
    type: Literal["frequency_mask"]
    width: PositiveInt = Field(6, description="audio (SpecAugment): the most mel bins one mask hides.")
    count: PositiveInt = 2


AugmentLayer = Annotated[
    Rotation | Flip | Brightness | Contrast | Zoom | Translation | GaussianNoise | TimeShift | BackgroundNoise
    | TimeMask | FrequencyMask,
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
