"""Export stage: verified, versioned SavedModels for TF Serving."""

from pipeline.export.saved_model import SIGNATURE, export, verify, versions

__all__ = ["SIGNATURE", "export", "verify", "versions"]
