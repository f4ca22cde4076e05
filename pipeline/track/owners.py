"""Which process a RUNNING run belongs to, so that a later run can end the runs of processes that died.

A run's process records its host and process id as tags when it opens the run; nothing else can end
the run once that process is gone (a kill -9, a lost machine's reboot), so the next run of the same
experiment on that host does, as KILLED.
"""

from __future__ import annotations

import getpass
import os
import socket

OWNER_HOST, OWNER_PID = "pipeline.host", "pipeline.pid"


def tags() -> dict[str, str]:
    """This process as a run's owner, and who runs it (the UI's "User" column)."""
    return {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid()),
            "mlflow.user": os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()}


def close_orphans(client, experiment_id: str, keep: str | None = None) -> list[str]:
    """End as KILLED the RUNNING runs of this host whose process has died; return their ids.

    Tuning trials and searches are left to the search, which settles them from its own files
    (jobs/tune.py). ``keep`` is a run about to be resumed.
    """
    host, ended = socket.gethostname(), []
    running = client.search_runs([experiment_id], max_results=1000,
                                 filter_string=f"attributes.status = 'RUNNING' and tags.`{OWNER_HOST}` = '{host}'")
    for run in running:
        pid = run.data.tags.get(OWNER_PID, "")
        if run.info.run_id == keep or "tune.role" in run.data.tags:
            continue
        if not (pid.isascii() and pid.isdigit()) or alive(int(pid)):
            continue
        client.set_tag(run.info.run_id, "pipeline.ended_by", f"a later run: its process {pid} on {host} had died")
        client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    return ended


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host lives."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
