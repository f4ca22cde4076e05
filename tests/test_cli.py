"""The CLI end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import DIGITS, ROOT, run_cli, tiny


@pytest.mark.slow
def test_train_command_trains_tracks_exports_and_prints_a_summary(tmp_path, tfds_dir):
    workdir = tmp_path / "work"
    proc = run_cli("train", str(DIGITS), *tiny(workdir, tfds_dir, "train.epochs=1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ("test_accuracy", "best epoch", "run id", "export"):
        assert label in proc.stdout
    assert (workdir / "exports" / "digits" / "1" / "saved_model.pb").is_file()
    assert (workdir / "mlflow.db").is_file() and (workdir / "mlartifacts").is_dir()


@pytest.mark.slow
def test_augment_preview_command_writes_the_png(tmp_path, tfds_dir):
    out = tmp_path / "preview.png"
    proc = run_cli("augment-preview", str(DIGITS), *tiny(tmp_path / "work", tfds_dir), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_make_help_lists_the_user_verbs():
    out = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    for target in ("train", "test", "ui", "baseline", "preview", "clean"):
        assert f"make {target}" in out
