"""Multi-worker training on one machine: N ``pipeline train`` processes on 127.0.0.1, one TF_CONFIG each.

This is the local form of a cluster: on several machines, start the same
command on each with its own TF_CONFIG (README). Worker 0 is the chief: only
it logs to MLflow, keeps checkpoints and exports; the others track nothing and
write their files to temporary folders. If any worker exits with an error, the
launcher stops the rest at once and returns that worker's exit code, so a dead
worker never leaves the others hanging in a collective.

TensorFlow's worker gRPC servers listen on every interface, whatever TF_CONFIG
says (the address is fixed in its C++ server), unauthenticated. So the local
workers run in a network of their own: a Linux user + network namespace that
holds nothing but a loopback device, created by worker 0 and joined by the
others. Nothing outside can reach their ports, and they reach nothing outside,
which is why a config whose stores are on the network (a tracking server, a
bucket) keeps the host's network, with a warning.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
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


def network_stores(places: list[str | None]) -> list[str]:
    """The places (URIs, paths) that only the network reaches: a tracking server, a database, a bucket."""
    return [p for p in places if p and "://" in p and p.split("://")[0] not in ("file", "sqlite")]


def launch(config: str, overrides: list[str], workers: int, log_dir: Path, stores: list[str | None] = ()) -> int:
    """Run ``workers`` training processes; return 0 when all succeed, else the first failure's code.

    They run in a network of their own (module docstring) unless one of ``stores`` (the config's
    tracking URI, data and export places) is on the network or this system allows no namespaces.
    Each worker is tied to this process: if the launcher is killed, even by SIGKILL, its workers get
    SIGTERM (and stop as on preemption) instead of training on, orphaned."""
    remote = network_stores(list(stores))
    private = not remote and _private_network_allowed()
    if not private:
        why = (f"the workers need the network to reach {remote[0]}" if remote else
               "this system allows no private network namespace (unprivileged user namespaces are off)")
        print(f"warning: {why}, so their unauthenticated gRPC ports listen on every interface: run them only "
              "on a private network (docs/distributed.md)", file=sys.stderr)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for index in range(workers):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        out = None if index == 0 else open(log_dir / f"worker-{index}.log", "w")  # noqa: SIM115
        network = None if not private else "new" if index == 0 else procs[0].pid
        procs.append(subprocess.Popen([sys.executable, "-m", "pipeline", "train", config, *overrides],
                                      env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                      preexec_fn=before_exec(os.getpid(), network)))
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


_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_PR_SET_PDEATHSIG = 1


def _libc_call(name: str, *args) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def before_exec(launcher: int, network: str | int | None):
    """What a worker does between fork and exec: die with ``launcher``; enter a ``"new"`` private network,
    or join the one of process ``network`` (worker 0), or keep the host's (None)."""
    def prepare() -> None:
        if network == "new":
            _enter_private_network()
        elif network is not None:
            _join_network(network)
        _libc_call("prctl", _PR_SET_PDEATHSIG, signal.SIGTERM)  # after: a change of credentials may clear it
        if os.getppid() != launcher:  # the launcher died before the line above: nobody would stop this worker
            os._exit(1)
    return prepare


def _private_network_allowed() -> bool:
    try:
        subprocess.run(["true"], preexec_fn=_enter_private_network, check=True)
        return True
    except (subprocess.SubprocessError, OSError):
        return False


def _enter_private_network() -> None:
    """A new user + network namespace, the same uid and gid inside, loopback up (in a child before exec).

    The new user namespace grants the capability to bring its loopback up without root; it is
    lost at exec (the uid inside is the user's own), which is all the workers need."""
    uid, gid = os.getuid(), os.getgid()
    _libc_call("unshare", _CLONE_NEWUSER | _CLONE_NEWNET)
    for path, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{path}", "w") as f:
            f.write(text)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0)))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def _join_network(pid: int) -> None:
    """Join the user and network namespaces of process ``pid``."""
    for kind, flag in (("user", _CLONE_NEWUSER), ("net", _CLONE_NEWNET)):
        fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)
        try:
            _libc_call("setns", fd, flag)
        finally:
            os.close(fd)
