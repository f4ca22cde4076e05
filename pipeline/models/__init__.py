"""Model stage: a registry of builders that share the feature encoders and regularisation knobs."""

from pipeline.models.registry import MODELS, build_model, check, family

__all__ = ["MODELS", "build_model", "check", "family"]
