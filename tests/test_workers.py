"""Several worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import DIGITS, ROOT, run_cli, tiny

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def _runs(workdir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    return client, client.search_runs([client.get_experiment_by_name("digits").experiment_id])


def test_two_workers_train_in_lockstep_and_only_the_chief_tracks_and_exports(tmp_path, tfds_dir):
    workdir = tmp_path / "work"
    overrides = tiny(workdir, tfds_dir, "train.epochs=10", "data.batch_size=64")
    proc = run_cli("train", str(DIGITS), *overrides, "--workers", "2", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from pipeline.config import load
    from pipeline.jobs.train import train

    # The same run on one process (in this one: the subprocess above proved the command line).
    single = train(load(DIGITS, tiny(tmp_path / "single", tfds_dir, "train.epochs=10", "data.batch_size=64",
                                     "tracking.enabled=false", "export.enabled=false")))
    client, runs = _runs(workdir)
    (run,) = runs  # the chief's run alone
    assert run.info.status == "FINISHED"
    assert (run.data.tags["strategy"], run.data.tags["replicas"]) == ("MultiWorkerMirroredStrategy", "2")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == list(range(1, 11))
    assert run.data.metrics["test_accuracy"] == pytest.approx(single.test_metrics["test_accuracy"], abs=0.05)
    assert sorted(p.name for p in (workdir / "exports" / "digits").iterdir()) == ["1"]
    worker_log = (workdir / "workers" / "worker-1.log").read_text()
    assert "digits: done" in worker_log and "export" in worker_log and "disabled" in worker_log


def test_keras_fit_under_multi_worker_still_fails_so_the_custom_loop_is_needed(tmp_path, tfds_dir):
    """Pins keras-team/keras#20585. When this fails, Keras fixed fit: make train.loop=auto use it."""
    workdir = tmp_path / "work"
    proc = run_cli("train", str(DIGITS), *tiny(workdir, tfds_dir, "train.epochs=1", "train.loop=keras"),
                   "--workers", "2", timeout=400)
    assert proc.returncode != 0
    logs = proc.stderr + proc.stdout + "".join(p.read_text() for p in (workdir / "workers").glob("*.log"))
    assert "Attempt to convert a value" in logs and "PerReplica" in logs


def _worker_pids(launcher_pid: int) -> dict[int, int]:
    """Worker index -> pid, for the launcher's children (read from their TF_CONFIG)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(launcher_pid)], capture_output=True, text=True).stdout
    pids = {}
    for pid in map(int, out.split()):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        config = next((e[len(b"TF_CONFIG="):] for e in environ if e.startswith(b"TF_CONFIG=")), None)
        if config:
            pids[json.loads(config)["task"]["index"]] = pid
    return pids


def _listening(net: str) -> set[int]:
    """Ports with a listening TCP socket in the network namespace whose /proc/<pid>/net is ``net``."""
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(net, table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # TCP_LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def test_a_dead_worker_ends_the_run_with_a_clear_error_within_bounded_time(tmp_path, tfds_dir):
    """Also: the workers' gRPC servers (which TensorFlow binds to every interface) live in a network of
    their own that holds only a loopback device, so the host's interfaces never expose their ports."""
    workdir = tmp_path / "work"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "train", str(DIGITS),
         *tiny(workdir, tfds_dir, "train.epochs=500", "train.early_stopping.enabled=false"), "--workers", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:  # wait until the workers are training together
        time.sleep(0.5)
        assert launcher.poll() is None, launcher.stderr.read()[-2000:]
        try:
            if any("loss" in r.data.metrics for r in _runs(workdir)[1]):
                break
        except Exception:  # the chief may still be creating the store
            continue
    pids = _worker_pids(launcher.pid)
    assert set(pids) == {0, 1}
    ports = {int(a.rsplit(":", 1)[1]) for a in json.loads(
        dict(e.split(b"=", 1) for e in Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0") if b"=" in e)
        [b"TF_CONFIG"])["cluster"]["worker"]}
    networks = {os.readlink(f"/proc/{pid}/ns/net") for pid in pids.values()}
    assert len(networks) == 1 and networks != {os.readlink("/proc/self/ns/net")}  # one network, not the host's
    devices = Path(f"/proc/{pids[0]}/net/dev").read_text().splitlines()[2:]
    assert [d.split(":")[0].strip() for d in devices] == ["lo"]
    assert ports <= _listening(f"/proc/{pids[0]}/net")  # the servers listen there...
    assert not ports & _listening("/proc/self/net")  # ...and not on the host
    killed_at = time.time()
    os.kill(pids[1], signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=120)
    assert time.time() - killed_at < 60
    assert launcher.returncode == 128 + signal.SIGKILL
    assert "worker 1 exited with code -9; stopping the other workers" in stderr
    (run,) = _runs(workdir)[1]
    assert run.info.status in ("FAILED", "KILLED")  # the chief saw its peer die, or was stopped: never RUNNING


def test_workers_keep_the_hosts_network_only_when_a_store_is_on_it():
    from pipeline.train.cluster import network_stores

    places = ["sqlite:///work/mlflow.db", "work/tfds", None, "file:///srv/exports", "http://127.0.0.1:5000",
              "gs://bucket/tfds", "postgresql://mlflow@db/mlflow"]
    assert network_stores(places) == ["http://127.0.0.1:5000", "gs://bucket/tfds", "postgresql://mlflow@db/mlflow"]


def test_a_worker_dies_with_its_launcher_even_one_killed_by_sigkill(tmp_path):
    """A launcher killed with SIGKILL cannot stop its workers: each is tied to it and gets SIGTERM."""
    launcher = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys; from pipeline.train.cluster import before_exec\n"
        "worker = subprocess.Popen(['sleep', '120'], preexec_fn=before_exec(os.getpid(), 'new'))\n"
        "print(worker.pid, flush=True); worker.wait()")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    worker = int(launcher.stdout.readline())
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    deadline = time.time() + 10
    while Path(f"/proc/{worker}").exists() and "Z" not in Path(f"/proc/{worker}/stat").read_text().split()[2]:
        assert time.time() < deadline, "the worker outlived its launcher"
        time.sleep(0.1)
