"""Shared fixtures: the real digits config, shrunk (tiny model, few epochs) but on the same code path."""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As the CLI does for deterministic configs: oneDNN kernels are outside op determinism.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as the CLI does: tests send nothing anywhere
# One thread each for OpenMP (scikit-learn's gradient boosting) and OpenBLAS: the suite already keeps every core
# busy with its own processes, and their idle threads spin for work on a core that another test needs (bench/README.md).
for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "configs" / "digits.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with the most slow tests first, and of those alike, the files of fewest tests (pyproject keeps
    xdist from re-sorting them by test count).

    xdist hands each process whole files in this order. The files of a few slow tests (servers, worker
    processes) are the heaviest; sorted last, as by test count, they ran in the suite's last minutes
    with little beside them to fill a waiting core. A file of many tests is mostly quick checks (the
    config's refusals, the models' shapes): last, they fill whichever core is left waiting.
    """
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    tests = collections.Counter(item.path for item in items)
    items.sort(key=lambda item: (-slow[item.path], tests[item.path]))  # stable: a file's own order is kept


def pytest_unconfigure(config: pytest.Config) -> None:
    """Each test process exits as the ``pipeline`` command does (pipeline/cli.py, ``run``): its objects frozen
    out of the collector, not walked for cycles by the interpreter's shutdown (seconds of a 2-core run's end)."""
    gc.freeze()


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> Path:
    """One prepared TFDS data_dir for the whole session (preparing digits takes a second)."""
    return tmp_path_factory.mktemp("tfds")


@functools.cache
def _migrated_store() -> Path:
    """An empty SQLite tracking store with MLflow's schema made, once per test process."""
    from mlflow.tracking import MlflowClient

    from pipeline.files import process_folder

    path = process_folder("pipeline-tests-store-") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def with_store(workdir: Path) -> Path:
    """Give a new ``workdir`` a tracking store whose schema is made, as any run after its first finds it.

    A new SQLite store runs MLflow's schema migrations, a second or two of CPU each: over the suite's
    many workdirs, minutes. New stores stay tested where that is the point: the CLI's first run
    (quiet while MLflow makes its tables), runs started together on a new workdir, the team's servers.
    """
    store = workdir / "mlflow.db"
    if not store.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_migrated_store(), store)
    return workdir


def tiny(workdir: Path, tfds_dir: Path, *extra: str, new_store: bool = False) -> list[str]:
    """Overrides that shrink configs/digits.yaml to a seconds-long run in ``workdir`` (its embedded store
    made, unless ``new_store`` or a ``tracking.uri`` among ``extra``).

    No classical baselines (``train.baselines=auto`` in ``extra`` brings them back): they are the
    subject of the shared runs (``trained``, the CLI's) and of tests/test_baselines.py, not of every run.
    """
    if not new_store and not any(e.startswith("tracking.uri=") for e in extra):
        with_store(workdir)
    return [
        f"workdir={workdir}",
        f"data.data_dir={tfds_dir}",
        "data.batch_size=128",
        "model.width=8",
        "model.head_units=16",
        "train.epochs=2",
        "train.verbose=0",
        "train.baselines=none",
        *extra,
    ]


@pytest.fixture
def tiny_cfg(tmp_path, tfds_dir):
    """configs/digits.yaml shrunk; call with extra overrides to vary it."""
    from pipeline.config import load

    def make(*extra: str):
        return load(DIGITS, tiny(tmp_path / "work", tfds_dir, *extra))

    return make


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tfds_dir):
    """One tiny tracked and exported run, shared by the tests that only inspect its outputs."""
    from pipeline.config import load
    from pipeline.jobs.train import train

    workdir = tmp_path_factory.mktemp("trained") / "work"
    cfg = load(DIGITS, tiny(workdir, tfds_dir, "train.baselines=auto"))
    return cfg, train(cfg)


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 300, env: dict | None = None,
            **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline ARGS`` in a subprocess, as a user would (``env``: instead of the suite's)."""
    env = {**({**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"} if env is None else env), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=timeout, **kwargs,
    )


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of ``size`` (``1m``, ``64k``) mounted at ``path`` (made), where this machine lets the tests mount
    one (root on Linux; else the test is skipped): a real full disk."""
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (it takes root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def write_series(path: Path, steps: int = 2000, walk: bool = False, shift_after: int | None = None) -> Path:
    """An hourly series CSV (ISO dates) whose ``load`` follows the hour of day and, non-linearly, ``temp``.

    ``walk``: ``load`` is a random walk instead (nothing beats the last value); ``shift_after``: from
    that step on, ``load`` is 1000 higher (a leak of later steps into statistics would show).
    """
    import numpy as np

    rng = np.random.default_rng(7)
    hours = np.arange(steps)
    temp = np.zeros(steps)
    for i in range(1, steps):
        temp[i] = 0.95 * temp[i - 1] + rng.normal(0, 0.5)
    load = 10 + 2 * np.sin(2 * np.pi * hours / 24) + 1.5 * np.abs(temp) + rng.normal(0, 0.1, steps)
    if walk:
        load = 100 + np.cumsum(rng.normal(0, 1, steps))
    if shift_after is not None:
        load[shift_after:] += 1000
    times = np.datetime64("2020-01-01T00:00:00") + hours.astype("timedelta64[h]")
    lines = [f"{t},{y:.5f},{c:.5f}" for t, y, c in zip(times.astype(str), load, temp)]
    path.write_text("time,load,temp\n" + "\n".join(lines) + "\n")
    return path


def series_cfg(workdir: Path, tfds_dir: Path, path: Path, *extra: str):
    """A small hourly series from a CSV through the `series` dataset: one day in, six hours out."""
    from pipeline.config import load

    return load(None, [
        "name=demand", f"workdir={with_store(workdir)}", f"data.data_dir={tfds_dir}", "data.dataset=series",
        f"data.path={path}", "data.label_key=load", "data.batch_size=64", "forecast.time=time",
        "forecast.input_window=24", "forecast.horizon=6", "forecast.seasonality=[24]",
        "forecast.known_covariates=[temp]", "forecast.calendar=[time_of_day]", "forecast.bootstrap=300",
        "model.name=mlp", "model.width=32", "model.depth=2", "train.epochs=25", "train.verbose=0",
        "train.early_stopping.patience=5", *extra])


@pytest.fixture(scope="session")
def forecast_run(tmp_path_factory, tfds_dir):
    """One forecasting run on a learnable series, tracked and exported (forecasting and serving tests).

    It predicts changes from the last value, so serving's levels exercise the inversion."""
    from pipeline.jobs.train import train

    work = tmp_path_factory.mktemp("forecast")
    cfg = series_cfg(work / "work", tfds_dir, write_series(work / "demand.csv"), "forecast.target_transform=difference")
    return cfg, train(cfg)
