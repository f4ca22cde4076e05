"""Every use of KerasTuner's private API, in one place, for the one version it was written against.

The pipeline needs four things KerasTuner has no public hook for: oracle and
trial state written atomically (a kill never leaves a torn JSON file), a
wall-clock budget, a dead worker's trial sent back to the queue, and the space
declared once from the config instead of by building models. They override
private methods (``_save_trial``, ``_populate_initial_space``, ...) and read
private state (``_retry_queue``, ``ongoing_trials``), so importing this module
checks the installed version first and names the supported one if it differs.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import keras_tuner as kt

from pipeline.errors import PipelineError
from pipeline.files import write_text

SUPPORTED = "1.4.8"

if kt.__version__ != SUPPORTED:
    raise PipelineError(f"pipeline's tuning supports KerasTuner {SUPPORTED} (it overrides private methods that "
                        f"change between versions); found {kt.__version__}: pip install keras-tuner=={SUPPORTED}")


class DurableOracle:
    """Mixed into a KerasTuner oracle: atomic state files, a wall-clock budget, and releasing a dead worker's trial."""

    deadline: float | None = None

    def save(self):
        write_json(Path(self._get_oracle_fname()), self.get_state())

    def _save_trial(self, trial):
        write_json(Path(self._get_trial_dir(trial.trial_id)) / "trial.json", trial.get_state())

    def populate_space(self, trial_id):
        if self.deadline is not None and time.time() > self.deadline:
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        return super().populate_space(trial_id)

    @kt.synchronized
    def release(self, tuner_id: str) -> None:
        """Send the trial of a worker that died back to the queue, so another worker runs it."""
        trial = self.ongoing_trials.pop(tuner_id, None)
        if trial is not None:
            self._retry_queue.append(trial.trial_id)
        self.tuner_ids.discard(tuner_id)
        self.save()


def durable(oracle_class):
    """``oracle_class`` with ``DurableOracle`` mixed in."""
    return type(f"Durable{oracle_class.__name__}", (DurableOracle, oracle_class), {})


class ConfigSpaceTuner(kt.Tuner):
    """A tuner whose space is declared once from the config and whose state files are written atomically."""

    def _populate_initial_space(self):
        # KerasTuner builds the model repeatedly here to discover conditional parameters;
        # the space is declared in the config, so declaring it once is enough.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_json(Path(self._get_tuner_fname()), self.get_state())


def quiet_parent_to_proto() -> None:
    """KerasTuner 1.4.8's ``Parent.to_proto`` prints a value (a leftover debug print) whenever a
    conditional parameter crosses gRPC; keep it off the output."""
    from keras_tuner.src.engine import conditions

    original = conditions.Parent.to_proto
    if getattr(original, "quiet", False):
        return

    def to_proto(self):
        with contextlib.redirect_stdout(io.StringIO()):
            return original(self)

    to_proto.quiet = True
    conditions.Parent.to_proto = to_proto


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, default=str))
