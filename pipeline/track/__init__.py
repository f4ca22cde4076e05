"""Track stage: MLflow runs, the registry's model versions, and the plots logged to runs."""

from pipeline.track.mlflow import Run, epoch_logger, log_missing_epochs, start_run
from pipeline.track.mlflow import tracking_client as client

__all__ = ["Run", "client", "epoch_logger", "log_missing_epochs", "start_run"]
