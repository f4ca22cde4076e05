"""Export stage: verified, versioned SavedModels for TF Serving."""

from pipeline.export.saved_model import (
    SIGNATURE,
    export,
    predict_split,
    verify,
    version_of,
    versions,
)

__all__ = ["SIGNATURE", "export", "predict_split", "verify", "version_of", "versions"]
