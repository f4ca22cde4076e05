"""Typed experiment config: ``load(path, overrides)`` -> a validated, frozen ``ExperimentConfig``.

    base.py          the section base, constrained scalars, dotted-key setting
    schema.py        the sections, one per stage, and ExperimentConfig; data.py the data-side sections
    search_space.py  the ``tune`` section and its space, checked against the config
    loading.py       defaults -> YAML -> key=value overrides -> validate
    messages.py      one-line errors with the nearest valid key or value

A new config section is a class in schema.py (data.py for data, features, augment and forecast)
and a field of ExperimentConfig.
Nothing here imports TensorFlow or any stage.
"""

from pipeline.config.data import AugmentConfig, DataConfig
from pipeline.config.loading import load
from pipeline.config.schema import (
    DriftConfig,
    ExperimentConfig,
    ModelConfig,
    OptimizerConfig,
    RegularizationConfig,
    TrainConfig,
)
from pipeline.config.search_space import ChoiceParam, FloatParam, IntParam, TuneConfig

__all__ = ["AugmentConfig", "ChoiceParam", "DataConfig", "DriftConfig", "ExperimentConfig", "FloatParam", "IntParam",
           "ModelConfig", "OptimizerConfig", "RegularizationConfig", "TrainConfig", "TuneConfig", "load"]
