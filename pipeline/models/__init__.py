"""Model stage: a registry of builders that share the same regularisation knobs."""

from pipeline.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
