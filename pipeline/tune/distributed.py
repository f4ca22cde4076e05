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
trial is running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

from pipeline.errors import PipelineError

MAX_RESTARTS = 2  # per worker slot


def is_worker() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "chief")


def is_chief() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" in os.environ.get("KERASTUNER_TUNER_ID", "")


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

    ip = os.environ.get("KERASTUNER_ORACLE_IP", "127.0.0.1")
    port = os.environ.get("KERASTUNER_ORACLE_PORT") or str(free_ports(1)[0])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{ip}:{port}")
    server.start()
    print(f"Oracle serving on {ip}:{port} ({workers} local workers; logs in {log_dir})", file=sys.stderr)
    log_dir.mkdir(parents=True, exist_ok=True)
    connect = "127.0.0.1" if ip in ("0.0.0.0", "") else ip

    def start(tuner_id: str) -> subprocess.Popen:
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": connect,
               "KERASTUNER_ORACLE_PORT": port}
        log = open(log_dir / f"{tuner_id}.log", "w")  # noqa: SIM115
        return subprocess.Popen([sys.executable, "-m", "pipeline", *command], env=env, stdout=log,
                                stderr=subprocess.STDOUT)

    procs = {f"tuner{i}": start(f"tuner{i}") for i in range(workers)}
    restarts = 0
    try:
        while True:
            time.sleep(0.5)
            for tuner_id, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[tuner_id]
                if code == 0:
                    continue
                print(f"warning: tuning worker {tuner_id} exited with code {code}; its trial goes back to the "
                      f"queue (log: {log_dir / (tuner_id + '.log')})", file=sys.stderr)
                trial = oracle.ongoing_trials.get(tuner_id)
                if trial is not None and on_release is not None:
                    on_release(trial.trial_id)
                oracle.release(tuner_id)
                if restarts < MAX_RESTARTS * workers:
                    restarts += 1
                    replacement = f"{tuner_id.split('-')[0]}-r{restarts}"
                    procs[replacement] = start(replacement)
            if servicer.stop_triggered and exit_chief(oracle) and not procs:
                return
            if workers and not procs and not (servicer.stop_triggered and exit_chief(oracle)):
                if "KERASTUNER_ORACLE_IP" not in os.environ:
                    raise PipelineError(f"Every tuning worker failed ({restarts} restarts); logs in {log_dir}")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop(grace=2)
