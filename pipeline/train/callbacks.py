"""The Keras callbacks a run uses, built from the config.

Keras' own callbacks do the work (EarlyStopping, ReduceLROnPlateau,
TerminateOnNaN); the additions write the best weights atomically, so a kill
mid-write never leaves a corrupt checkpoint, and say how a long epoch is going.
Resuming after a crash is resume.py's job (Keras' BackupAndRestore forgets
callback state).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ExperimentConfig


def best_weights(path: Path, monitor: str, mode: str):
    """A callback that saves the best weights so far via a temporary file and a rename."""
    import keras

    from pipeline.files import save_weights

    better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)

    class AtomicBestWeights(keras.callbacks.Callback):
        best = None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is None or (self.best is not None and not better(value, self.best)):
                return
            self.best = value
            save_weights(self.model, path)

    return AtomicBestWeights()


def epoch_progress(every: float = 30.0):
    """A line on stderr every ``every`` seconds inside an epoch: steps done, their rate, the epoch's time left.

    Keras prints a line per epoch (``train.verbose: 2``) and draws its bar only on a terminal:
    a 20-minute epoch in a cron job's log would otherwise be 20 minutes of silence.
    """
    import sys
    import time

    import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.start = epoch, time.monotonic()
            self.last = self.start

        def on_train_batch_end(self, batch, logs=None):
            now = time.monotonic()
            if now - self.last < every:
                return
            self.last, done, total = now, batch + 1, self.params.get("steps") or 0
            rate = done / (now - self.start)
            left = f", about {(total - done) / rate:,.0f} s left" if total > done else ""
            print(f"epoch {self.epoch + 1}/{self.params.get('epochs')}: step {done:,}{f' of {total:,}' if total else ''} "
                  f"({rate:,.1f} steps/s{left})", file=sys.stderr, flush=True)

    return EpochProgress()


def build_callbacks(cfg: ExperimentConfig, run_dir: Path) -> list:
    """Callbacks in the order they should run at each epoch end."""
    import keras

    from pipeline.models.backbone import fine_tuning
    from pipeline.tasks import direction
    from pipeline.train import cluster

    es = cfg.train.early_stopping
    mode = direction(es.monitor) if es.direction == "auto" else es.direction
    callbacks = [keras.callbacks.TerminateOnNaN(), *filter(None, [fine_tuning(cfg)])]
    if cfg.optimizer.schedule.name == "plateau":
        s = cfg.optimizer.schedule
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=es.monitor, mode=mode, factor=s.factor, patience=s.patience, min_lr=s.min_lr, verbose=0))
    if es.enabled:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=es.monitor, mode=mode, patience=es.patience, min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights, verbose=0))
    if cfg.train.checkpoint:
        callbacks.append(best_weights(run_dir / "checkpoints" / "best.weights.h5", es.monitor, mode))
    if cfg.train.verbose == 2 and cluster.is_chief():  # a line per epoch: say how a long one is going
        callbacks.append(epoch_progress())
    return callbacks
