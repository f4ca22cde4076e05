"""Shared fixtures: the real digits config, shrunk (tiny model, few epochs) but on the same code path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As the CLI does for deterministic configs: oneDNN kernels are outside op determinism.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as the CLI does: tests send nothing anywhere

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "configs" / "digits.yaml"


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> Path:
    """One prepared TFDS data_dir for the whole session (preparing digits takes a second)."""
    return tmp_path_factory.mktemp("tfds")


def tiny(workdir: Path, tfds_dir: Path, *extra: str) -> list[str]:
    """Overrides that shrink configs/digits.yaml to a seconds-long run in ``workdir``."""
    return [
        f"workdir={workdir}",
        f"data.data_dir={tfds_dir}",
        "data.batch_size=128",
        "model.width=8",
        "model.head_units=16",
        "train.epochs=2",
        "train.verbose=0",
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
    cfg = load(DIGITS, tiny(workdir, tfds_dir))
    return cfg, train(cfg)


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline ARGS`` in a subprocess, as a user would."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=timeout, **kwargs,
    )
