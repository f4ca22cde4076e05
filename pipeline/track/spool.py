"""A run's tracking writes kept on disk while the tracking server is away, delivered in order when it answers.

A tracking server goes down (a restart, a network cut, its database) while a model trains for
hours: the training must go on and lose nothing. So every write of a run (metrics, parameters,
tags, files, the model version, the run's end) is an operation that the run's ``Courier``
delivers in order from a thread of its own (training never waits on a write) or, once the
server has failed to answer, appends to ``<run folder>/spool.jsonl``. While the
spool holds operations, the run tries the server again now and then (5 s after the failure,
then twice as long each time, up to two minutes) and, when it answers, delivers the spool
first, then goes on live. What is still spooled when the run ends stays on disk for
``pipeline sync RUN`` (``sync`` below). MLflow's client retries a failed request for minutes
(~4 with its defaults); during a run it retries for seconds and spools instead (``impatient``).

The first line of a spool names the run, the server and the config; ``.sent`` beside it counts
the operations delivered, so a sync that stops half-way starts where it stopped (metrics
written twice would be ignored by MLflow, a model version registered twice would not).
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import read_json, write_text

NAME = "spool.jsonl"
# MLflow's HTTP client settings during a run (the user's own settings win): about 7 s of retries.
IMPATIENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
FIRST_RETRY, LONGEST_RETRY = 5.0, 120.0  # seconds


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the tracking server is away (no connection, a timeout, a 5xx), not that it refused."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    from pipeline.track.server import Unreachable

    if isinstance(exc, Unreachable):
        return True
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return True
    if isinstance(exc, requests.exceptions.HTTPError):
        return exc.response is not None and exc.response.status_code >= 500
    if isinstance(exc, RestException):  # the server answered with an error of its own
        return exc.get_http_status_code() >= 500
    if isinstance(exc, MlflowException):  # how MLflow's REST client reports no answer, or one that is no JSON
        code = re.search(r"failed with error code (\d+)", str(exc))
        return int(code.group(1)) >= 500 if code else str(exc).startswith("API request to")
    return False


@contextmanager
def answered(what: str):
    """Raise the server's absence during ``what`` as one line (``Unreachable``); anything else as it is."""
    from pipeline.track.server import Unreachable, reason

    try:
        yield
    except Exception as exc:
        if isinstance(exc, Unreachable) or not unreachable(exc):
            raise
        raise Unreachable(f"Cannot {what}: the server does not answer ({reason(exc)})") from None


@contextmanager
def impatient():
    """A few seconds of retries, then give up: a run spools a write (and ``pipeline retrain`` makes no
    decision) rather than wait minutes for a server that may be gone for hours."""
    added = {k: v for k, v in IMPATIENT.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@dataclass
class Delay:
    """What a run could not deliver at once: for the summary line."""

    since: float = 0.0  # time.time() when the current outage began
    seconds: float = 0.0  # of the outages that ended
    metrics: int = 0  # metric values spooled
    files: int = 0  # files (and folders) spooled

    def began(self) -> None:
        self.since = time.time()

    def ended(self) -> None:
        self.seconds += time.time() - self.since


class Spool:
    """The operations of one run not yet delivered, in order, in ``<run folder>/spool.jsonl``."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / NAME
        self.sent = self.path.with_suffix(".sent")

    def start(self, header: dict) -> None:
        if not self.path.exists():
            self._append(header)

    def add(self, op: dict) -> None:
        self._append(op)

    def pending(self) -> list[dict]:
        """The operations not yet delivered (a line cut short by a kill is no operation)."""
        if not self.path.exists():
            return []
        ops = []
        for line in self.path.read_text().splitlines()[1:]:
            try:
                ops.append(json.loads(line))
            except ValueError:
                break
        return ops[read_json(self.sent) or 0:]

    def header(self) -> dict:
        with self.path.open() as handle:
            return json.loads(handle.readline())

    def deliver(self, apply) -> int:
        """``apply`` each pending operation in order, counting each as sent; remove the spool when all are."""
        ops, done = self.pending(), read_json(self.sent) or 0
        for op in ops:
            apply(op)
            done += 1
            write_text(self.sent, str(done))
        self.path.unlink(missing_ok=True)
        self.sent.unlink(missing_ok=True)
        return len(ops)

    def _append(self, record: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class Retry:
    """When to try an away server again: 5 s after it failed, then twice as long each time, up to two minutes."""

    def __init__(self):
        self.wait, self.next = FIRST_RETRY, time.monotonic() + FIRST_RETRY

    def due(self) -> bool:
        return time.monotonic() >= self.next

    def failed(self) -> None:
        self.wait = min(self.wait * 2, LONGEST_RETRY)
        self.next = time.monotonic() + self.wait


class Courier:
    """Delivers a run's operations in order from a thread of its own, keeping them in the spool while the
    server is away. A failure other than the server's absence (a refused permission, say) is raised by the
    next ``send``, ``wait`` or ``close``."""

    def __init__(self, apply, run_dir: Path, uri: str, header):
        self.spool, self.delay = Spool(run_dir), None  # delay: set when the server first failed to answer
        self._apply, self._uri, self._header = apply, uri, header  # header: a callable, the spool's first line
        self._retry: Retry | None = None  # set while operations wait in the spool
        self._failure: Exception | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> bool:
        """Whether operations wait in the spool (for ``pipeline sync``)."""
        return self._retry is not None

    def send(self, op: dict) -> None:
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="tracking-courier", daemon=True)
            self._thread.start()
        self._queue.put(op)

    def wait(self) -> None:
        """Until every operation sent so far is delivered or spooled."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Deliver what was sent, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise()

    def _raise(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _work(self) -> None:
        while True:
            op = self._queue.get()
            try:
                if op is None:
                    return
                self._deliver(op)
            except Exception as exc:  # raised to the run by its next call
                self._failure = self._failure or exc
            finally:
                self._queue.task_done()

    def _deliver(self, op: dict) -> None:
        """``op`` after the spool's operations; into the spool if the server is away (a run's end tries once more)."""
        if self.pending and not (self._retry.due() or "end" in op):
            return self._keep(op)
        try:
            if self.pending:
                self.spool.deliver(self._apply)
                self._retry = None
                self.delay.ended()
            self._apply(op)
        except Exception as exc:
            if not unreachable(exc):
                raise
            self._away(exc)
            self._keep(op)

    def _away(self, exc: Exception) -> None:
        from pipeline.track.server import public, reason

        if self._retry is not None:
            self._retry.failed()
            return
        self._retry = Retry()
        self.delay = self.delay or Delay()
        self.delay.began()
        print(f"warning: the tracking server {public(self._uri)} does not answer ({reason(exc)}); training goes on, "
              f"and its tracking waits in {self.spool.path} until the server returns", file=sys.stderr, flush=True)
        self.spool.start(self._header())

    def _keep(self, op: dict) -> None:
        kind, body = next(iter(op.items()))
        self.delay.metrics += len(body.get("metrics", [])) if kind == "batch" else 0
        self.delay.files += kind in ("file", "folder")
        self.spool.add({kind: {**body, "late": True}} if kind == "register" else op)


def apply(client, cfg, run_id: str, op: dict) -> None:
    """Deliver one operation of run ``run_id`` (see ``mlflow.Run``) through ``client``."""
    from mlflow.entities import Metric, Param, RunTag

    kind, body = next(iter(op.items()))
    if kind == "batch":
        for i in range(0, len(body.get("metrics", [])), 1000):  # MLflow's limit per batch
            client.log_batch(run_id, metrics=[Metric(*m) for m in body["metrics"][i : i + 1000]], synchronous=True)
        if body.get("params") or body.get("tags"):
            client.log_batch(run_id, params=[Param(*p) for p in body.get("params", [])],
                             tags=[RunTag(*t) for t in body.get("tags", [])], synchronous=True)
    elif kind == "file":
        client.log_artifact(run_id, body["path"], body["artifact_path"])
    elif kind == "folder":
        client.log_artifacts(run_id, body["path"], body["artifact_path"])
    elif kind == "register":
        _register(client, cfg, run_id, body)
    elif kind == "end":
        client.set_terminated(run_id, body)
    else:
        raise ValueError(f"unknown tracking operation {kind!r}")


def _register(client, cfg, run_id: str, body: dict) -> None:
    """Register the export and move its alias; a registration that waited in a spool (``late``) leaves the
    alias to a version made after its export, if one took it meanwhile."""
    from mlflow.entities import RunTag

    from pipeline.track import registry

    alias, late = body["alias"], body.get("late", False)
    version = registry.register(cfg, run_id, Path(body["export_path"]), body["tags"], alias=None if late else alias)
    if late and alias:
        holder = registry.by_alias(cfg, alias)
        made = holder and int(client.get_model_version(cfg.export.model_name, holder.version).creation_timestamp)
        if holder is None or made <= body["time"] * 1000:
            registry.set_alias(cfg, alias, version.version)
    client.log_batch(run_id, tags=[RunTag("registry.model", cfg.export.model_name),
                                   RunTag("registry.version", str(version.version))], synchronous=True)


@dataclass
class Synced:
    run_id: str
    operations: int
    metrics: int
    server: str


def sync(run_dir: Path) -> Synced:
    """Deliver a run's spool to the server it was meant for (``pipeline sync RUN``)."""
    from mlflow.tracking import MlflowClient

    from pipeline.config import ExperimentConfig
    from pipeline.errors import PipelineError
    from pipeline.track.owners import alive
    from pipeline.track.server import check, public

    spool = Spool(run_dir)
    try:
        head = spool.header()
        cfg = ExperimentConfig.model_validate(head["config"])
    except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise PipelineError(f"{spool.path} is damaged: its first line is no run's header "
                            f"({str(exc).splitlines()[0][:120]}); nothing was synced") from None
    pid = head.get("pid")
    if head.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0 and alive(pid):
        raise PipelineError(f"Run {head['run_id']} is still running (process {pid}): it delivers its own "
                            f"spool when the server returns")
    check(cfg.tracking.uri)
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    ops = spool.pending()
    metrics = sum(len(op["batch"].get("metrics", [])) for op in ops if "batch" in op)
    spool.deliver(lambda op: apply(client, cfg, head["run_id"], op))
    return Synced(head["run_id"], len(ops), metrics, public(cfg.tracking.uri))
