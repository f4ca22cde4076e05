"""Track stage: MLflow runs and the plots logged to them."""

from pipeline.track.mlflow import Run, epoch_logger, log_missing_epochs, start_run

__all__ = ["Run", "epoch_logger", "log_missing_epochs", "start_run"]
