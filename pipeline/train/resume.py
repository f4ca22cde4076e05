"""Resumable training: a run killed at any moment continues from its last finished epoch.

Keras' BackupAndRestore restores weights, optimizer and epoch but not callback
state (EarlyStopping's best value and wait count), and writes its two files in
place, so a kill between them leaves them inconsistent. Here each epoch's state
is one folder, written under a temporary name and renamed into place (a kill
leaves either the old or the new folder, never half of one), and the previous
folder is kept in case the newest cannot be read.

A state folder holds: weights with optimizer state (``state.weights.h5``), the
early-stopping best weights (``best.npz``) and ``state.json`` (epochs done, the
history so far, early-stopping and best-checkpoint state, the MLflow run id).
It also keeps the random-number state of every seeded layer (dropout, augmentation); with
the training stream's order a function of (seed, epoch) (data/dataset.py), a resumed run
sees the same batches and draws as an uninterrupted one.

It lives under ``<workdir>/backup/<name>-<config digest>``: rerunning the same
command resumes; a changed config starts afresh instead of loading weights that
do not fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import ExperimentConfig
from pipeline.files import save_weights

KEEP = 2  # the newest state and the one before it


@dataclass
class State:
    epoch: int = 0  # epochs finished
    run_id: str | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    callbacks: dict[str, dict] = field(default_factory=dict)
    path: Path | None = None


def state_root(cfg: ExperimentConfig) -> Path:
    key = hashlib.sha256(cfg.to_yaml().encode()).hexdigest()[:12]
    return Path(cfg.workdir) / "backup" / f"{cfg.name}-{key}"


def _states(root: Path) -> list[Path]:
    """Complete state folders, newest first (temporary folders start with '.')."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.name.startswith("epoch-")), reverse=True)


def peek(cfg: ExperimentConfig) -> State:
    """The newest state whose files open (weights not loaded yet), or a fresh State."""
    import h5py

    for path in _states(state_root(cfg)):
        try:
            meta = json.loads((path / "state.json").read_text())
            with h5py.File(path / "state.weights.h5", "r"):
                pass
        except (OSError, ValueError, KeyError):
            continue  # unreadable (a disk error, say): fall back to the previous state
        return State(meta["epoch"], meta.get("run_id"), meta["history"], meta["callbacks"], path)
    return State()


def _seed_variables(*layers) -> list:
    """The seed-generator states of random layers: not weights, so save_weights skips them."""
    return [v for layer in layers if layer is not None for v in layer.variables if "seed_generator" in v.path]


def restore(model, state: State, augmenter=None) -> None:
    """Load ``state`` (from peek) into the model, its optimizer and its random layers (the callbacks' part is the
    checkpointer's, when training begins)."""
    import numpy as np

    if state.path is None:
        return
    for newer in _states(state.path.parent):
        if newer.name > state.path.name:  # unreadable states past the one resumed: the epochs are redone
            shutil.rmtree(newer, ignore_errors=True)
    model.load_weights(state.path / "state.weights.h5")
    seeds = np.load(state.path / "seeds.npz")
    for i, var in enumerate(_seed_variables(model, augmenter)):
        var.assign(seeds[f"s{i}"])


CALLBACK_STATE = {
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "AtomicBestWeights": ("best",),
}


def checkpointer(cfg: ExperimentConfig, run_id: str | None, state: State, others: list, write: bool = True,
                 augmenter=None):
    """A callback that gives ``others`` back their state from ``state`` when training begins, keeps the full
    history and, if ``write``, saves the training state after every epoch.

    It must follow ``others`` in the callback list: Keras' EarlyStopping and ReduceLROnPlateau reset their
    count and best value in ``on_train_begin``, and a resumed run that forgot them would train on past the
    epoch where an uninterrupted one stops, and keep a different epoch's weights.
    """
    import keras
    import numpy as np

    root = state_root(cfg)

    class Checkpointer(keras.callbacks.Callback):
        history = {k: list(v) for k, v in state.history.items()}

        def on_train_begin(self, logs=None):
            best_file = state.path / "best.npz" if state.path else None
            for cb in others:
                for key, value in state.callbacks.get(type(cb).__name__, {}).items():
                    setattr(cb, key, value)
                if type(cb).__name__ == "EarlyStopping" and best_file and best_file.exists():
                    best = np.load(best_file)
                    cb.best_weights = [best[f"w{i}"] for i in range(len(best.files))]

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.history.setdefault(key, []).append(float(value))
            if not write:
                return
            saved = {}
            best = None
            for cb in others:
                attrs = CALLBACK_STATE.get(type(cb).__name__)
                if attrs:
                    saved[type(cb).__name__] = {a: _plain(getattr(cb, a, None)) for a in attrs}
                if type(cb).__name__ == "EarlyStopping" and cb.best_weights is not None:
                    best = cb.best_weights
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
            try:
                save_weights(self.model, tmp / "state.weights.h5")
                if best is not None:
                    np.savez(tmp / "best.npz", **{f"w{i}": w for i, w in enumerate(best)})
                seeds = _seed_variables(self.model, augmenter)
                np.savez(tmp / "seeds.npz", **{f"s{i}": np.asarray(v.value) for i, v in enumerate(seeds)})
                meta = {"epoch": epoch + 1, "run_id": run_id, "history": self.history, "callbacks": saved}
                (tmp / "state.json").write_text(json.dumps(meta))
                os.rename(tmp, root / f"epoch-{epoch + 1:05d}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            for old in _states(root)[KEEP:]:
                shutil.rmtree(old, ignore_errors=True)

    return Checkpointer()


def finish(cfg: ExperimentConfig) -> None:
    """Training completed: the resumable state is no longer needed."""
    shutil.rmtree(state_root(cfg), ignore_errors=True)


def _plain(value):
    """NumPy scalars as Python floats, for JSON (which keeps inf as Infinity)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
