"""Export stage: verified, versioned SavedModels for TF Serving."""

from pipeline.export.saved_model import OUTPUTS, SIGNATURE, export, verify, versions

__all__ = ["OUTPUTS", "SIGNATURE", "export", "verify", "versions"]
