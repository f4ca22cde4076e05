"""Multi-worker training on one machine: N ``pipeline train`` processes on 127.0.0.1, one TF_CONFIG each.

This is the local form of a cluster: on several machines, start the same
command on each with its own TF_CONFIG (README). Worker 0 is the chief: only
it logs to MLflow, keeps checkpoints and exports; the others track nothing and
write their files to temporary folders. If any worker exits with an error, the
launcher stops the rest at once and returns that worker's exit code, so a dead
worker never leaves the others hanging in a collective.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def is_chief() -> bool:
    """Whether this process tracks, checkpoints and exports: the 'chief' task, or worker 0 when the
    cluster has none, or a process outside any cluster (no TF_CONFIG). TensorFlow's own resolver reads TF_CONFIG."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type is None:
        return True
    jobs = resolver.cluster_spec().jobs
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in jobs)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(config: str, overrides: list[str], workers: int, log_dir: Path) -> int:
    """Run ``workers`` training processes; return 0 when all succeed, else the first failure's code."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for index in range(workers):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        out = None if index == 0 else open(log_dir / f"worker-{index}.log", "w")  # noqa: SIM115
        procs.append(subprocess.Popen([sys.executable, "-m", "pipeline", "train", config, *overrides],
                                      env=env, stdout=out, stderr=subprocess.STDOUT if out else None))
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                index, code = failed[0]
                print(f"error: worker {index} exited with code {code}; stopping the other workers "
                      f"(logs in {log_dir})", file=sys.stderr)
                return code if code > 0 else 128 - code
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
