"""Atomic writes: a temporary file beside the target, then a rename, so a reader (or a kill) never sees half a file.

Every file the pipeline writes for later reading (tuning state, tables, plots,
reports) goes through here; so does ``exclusive``, for work that two processes
must not do at once, and ``process_folder``, for scratch files that must not outlive their process.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path: Path | None):
    """Hold an OS lock (flock) on ``path``, waiting for another holder; released when this process dies, even
    by kill -9, so no stale lock is ever left to clean up. None holds nothing (a store on the network)."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def cannot_write(folder) -> str | None:
    """Why no file can be written in ``folder``, as the system says it ("Read-only file system"), or None when one
    can. A folder still to be made is asked of its nearest existing parent: asking leaves nothing behind."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        return os.strerror(errno.ENOTDIR)
    try:
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def process_folder(prefix: str, root: Path | None = None) -> Path:
    """A new folder (under ``root``, else the system's temporary one) removed when this process exits:
    a nightly job leaves nothing behind (a process killed by a signal still leaves its own)."""
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@contextmanager
def temporary_root(prefix: str):
    """Make a new folder the temporary one of this process and of the processes it starts, and remove it when
    the block ends: for libraries that make temporary folders and leave them (Beam's job server and stager
    leave four a run), which a nightly job would pile up in ``/tmp``."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(folder), str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def replaced(path: Path, suffix: str = ".tmp"):
    """A temporary path beside ``path`` for the block to write, renamed onto ``path`` when the block ends and
    removed if it fails (a full disk): a reader, or a kill, never sees half a file. ``suffix`` ends its name
    where the writer reads the format from it (``.weights.h5``, ``.png``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    with replaced(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_weights(model, path: Path) -> Path:
    """``model.save_weights(path)`` through a temporary file and a rename; without the room for it (a full
    disk) an OSError naming ``path``, and no half file.

    The room is checked first: HDF5, failing to write, keeps the file open with its unwritten cache, and
    its own close at the process's exit then crashed it (SIGSEGV) after the error was reported.
    """
    import errno

    with replaced(path, ".tmp.weights.h5") as tmp:
        if shutil.disk_usage(tmp.parent).free < _weights_bytes(model):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        model.save_weights(tmp)
    return Path(path)


def _weights_bytes(model) -> int:
    """About the size of ``model``'s weights file: its variables and its optimizer's, and HDF5's own records."""
    optimizer = getattr(model, "optimizer", None)
    variables = [*model.weights, *(optimizer.variables if optimizer is not None else ())]
    return 2**16 + sum(2048 + math.prod(v.shape) * v.value.dtype.size for v in variables)


def write_json(path: Path, data) -> Path:
    return write_text(path, json.dumps(data, default=str))


def read_json(path: Path):
    """The JSON in ``path``, or None if it is missing or unreadable (a file written here is whole or absent)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 90) -> Path:
    """A matplotlib figure as PNG, atomically; the figure is closed."""
    with replaced(path, ".tmp.png") as tmp:
        fig.savefig(tmp, dpi=dpi)
        pyplot().close(fig)
    return Path(path)
