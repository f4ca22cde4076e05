"""Parallel trials with KerasTuner's own chief/worker mode.

The chief serves the oracle over gRPC (KerasTuner's ``OracleServicer``); each
worker is a ``pipeline tune`` process whose tuner KerasTuner turns into an
``OracleClient`` because of three variables: ``KERASTUNER_TUNER_ID`` (``chief``
or a unique worker id), ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``.
``pipeline tune --workers N`` is the chief plus N local workers on 127.0.0.1;
on several machines, start the same command with those variables on each
(README).

Unlike KerasTuner's own chief loop, this one watches its local workers: when
one dies, its trial goes back to the oracle's queue and a replacement worker
starts, so the search goes on; the chief ends when the budget is spent and no
trial is running. A worker whose memory has grown (search.Memory) exits with
EXIT_RECYCLE after a trial; a trial before, it gives notice (a file), and the
chief starts a spare for its slot (TensorFlow imported, data read, waiting for a
go-file) that takes its place at once. Spares start only on notice: a warm one
beside every worker would double the search's memory for the whole search.
``pipeline tune`` runs one such slot by default.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

from pipeline.errors import DiskFullError, PipelineError
from pipeline.tune.keras_tuner_compat import quiet_parent_to_proto

MAX_RESTARTS = 2  # per worker slot, for workers that die
EXIT_RECYCLE = 99  # a worker handing over to a fresh process (its memory grew; see search.Memory)


def is_worker() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "chief")


CHIEF_PID = "PIPELINE_TUNE_CHIEF_PID"  # the process that started a worker: gone means the worker must go


def is_chief() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" in os.environ.get("KERASTUNER_TUNER_ID", "")


def die_with_parent() -> None:
    """Linux: get SIGTERM when the chief dies (even by kill -9), so no worker trains on orphaned.

    The kernel only signals a death that comes after the request: a chief killed while this
    worker was still importing TensorFlow is already gone, so the worker checks and leaves.
    """
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    chief = os.environ.get(CHIEF_PID, "")
    if chief.isascii() and chief.isdigit() and os.getppid() != int(chief):
        print("the tuning chief is gone: this worker stops", file=sys.stderr)
        os._exit(143)


def give_notice() -> None:
    """Tell the chief that this worker's next trial will be its last (``PIPELINE_TUNE_NOTICE``)."""
    notice = os.environ.get("PIPELINE_TUNE_NOTICE")
    if notice:
        Path(notice).touch()


def wait_for_turn() -> None:
    """A spare worker (``PIPELINE_TUNE_GO`` set) waits, warm, until the chief creates that file.

    The chief ends a spare it never needed with SIGTERM once the search is over: that spare exits quietly.
    """
    go = os.environ.get("PIPELINE_TUNE_GO")
    try:
        while go and not os.path.exists(go):
            time.sleep(0.05)
    except KeyboardInterrupt:  # cli.Terminated, or Ctrl-C, which the chief reports
        os._exit(0)


def serve(oracle, workers: int, command: list[str], log_dir: Path, on_release=None) -> None:
    """Serve ``oracle`` until the search is done, running ``workers`` local worker processes.

    The address is ``KERASTUNER_ORACLE_IP``/``PORT`` when set (remote workers may join),
    else a free port on 127.0.0.1.

    Args:
        on_release: Called with the trial id of a dead worker before the trial is queued again
            (to settle its tracking); default none.
    """
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    from pipeline.train.cluster import free_ports

    quiet_parent_to_proto()
    ip = os.environ.get("KERASTUNER_ORACLE_IP", "127.0.0.1")
    port = os.environ.get("KERASTUNER_ORACLE_PORT") or str(free_ports(1)[0])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{ip}:{port}")
    server.start()
    where = "" if workers == 1 else f"; logs in {log_dir}"
    print(f"Oracle serving on {ip}:{port} ({workers} local worker{'s' if workers != 1 else ''}{where})",
          file=sys.stderr)
    log_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*log_dir.glob(".go-*"), *log_dir.glob(".notice-*")]:  # an earlier run's: its ids come again
        stale.unlink(missing_ok=True)
    connect = "127.0.0.1" if ip in ("0.0.0.0", "") else ip

    started = [0]

    def notice(tuner_id: str) -> Path:
        return log_dir / f".notice-{tuner_id}"

    def start(slot: str, wait: bool = False) -> tuple[str, subprocess.Popen, Path | None]:
        """A worker process for ``slot``; with ``wait`` a spare that starts trials when its go-file appears."""
        started[0] += 1
        tuner_id = f"{slot}-{started[0]}"
        go = log_dir / f".go-{tuner_id}" if wait else None
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": connect,
               "KERASTUNER_ORACLE_PORT": port, "PIPELINE_TUNE_RECYCLE": "1", "PIPELINE_TUNE_GO": str(go or ""),
               "PIPELINE_TUNE_NOTICE": str(notice(tuner_id)), CHIEF_PID: str(os.getpid())}
        log = None if workers == 1 else open(log_dir / f"{slot}.log", "a")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *command], env=env, stdout=log,
                                stderr=subprocess.STDOUT if log else None)
        return tuner_id, proc, go

    procs = {}  # tuner id -> (slot, process)
    for i in range(workers):
        tuner_id, proc, _ = start(f"tuner{i}")
        procs[tuner_id] = (f"tuner{i}", proc)
    spares: dict[str, tuple] = {}  # slot -> a warm spare for it
    restarts = 0
    try:
        while True:
            time.sleep(0.2)
            for tuner_id, (slot, proc) in list(procs.items()):
                if slot not in spares and not servicer.stop_triggered and notice(tuner_id).exists():
                    spares[slot] = start(slot, wait=True)
                code = proc.poll()
                if code is None:
                    continue
                del procs[tuner_id]
                if code == 0:
                    continue
                if code == DiskFullError.exit_code:  # a new worker would find no more room: stop the search
                    raise DiskFullError(f"No space left on device in tuning worker {tuner_id}{where}: free some space, "
                                        "and run again: the search continues where it stopped")
                if code != EXIT_RECYCLE:
                    print(f"warning: tuning worker {tuner_id} exited with code {code}; its trial goes back to "
                          f"the queue (log: {log_dir / (slot + '.log')})", file=sys.stderr)
                    trial = oracle.ongoing_trials.get(tuner_id)
                    if trial is not None and on_release is not None:
                        on_release(trial.trial_id)
                    restarts += 1
                oracle.release(tuner_id)
                if restarts <= MAX_RESTARTS * workers:
                    if slot in spares:  # warm: it has imported TensorFlow and read the data already
                        spare_id, spare, go = spares.pop(slot)
                        go.touch()
                    else:
                        spare_id, spare, _ = start(slot)
                    procs[spare_id] = (slot, spare)
            if servicer.stop_triggered and exit_chief(oracle) and not procs:
                return
            if workers and not procs and not (servicer.stop_triggered and exit_chief(oracle)):
                if "KERASTUNER_ORACLE_IP" not in os.environ:
                    raise PipelineError(f"Every tuning worker failed ({restarts} restarts); logs in {log_dir}")
    finally:
        for _, proc, _ in spares.values():
            proc.terminate()
        procs.update({spare_id: (slot, proc) for slot, (spare_id, proc, _) in spares.items()})
        for _, proc in procs.values():
            proc.terminate()
        for _, proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop(grace=2)
