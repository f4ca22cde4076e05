"""User-facing errors, named by what happens next.

The CLI prints ``str(error)`` as one line (no traceback) and exits with the
error's ``exit_code``. Anything that is not a ``PipelineError`` is a bug and
keeps its traceback, except a full disk (``disk_full``): the machine's fault.
"""


class PipelineError(Exception):
    """A mistake in the user's input: print one line and stop."""

    exit_code = 1

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message  # as raised: a library that re-raises it may prefix its args (TFDS does)


class ConfigError(PipelineError):
    """The config (file, YAML, key or value) is invalid; nothing has run yet."""

    exit_code = 2


class DataError(PipelineError):
    """The dataset cannot be read as the config describes it."""

    exit_code = 3


class ExportError(PipelineError):
    """The exported model failed verification, so no version was published."""

    exit_code = 4


class DiskFullError(PipelineError):
    """A write found no room: the run stopped, the pipeline's own files whole or absent; free space and run again.

    Its own exit code, sysexits' EX_IOERR, lets a nightly job (and a tuning chief) tell it from a bad input."""

    exit_code = 74


_NO_SPACE = ("No space left on device", "Disk quota exceeded", "database or disk is full", "errno = 28,")


def disk_full(exc: BaseException) -> DiskFullError | None:
    """A write refused for want of space, anywhere in ``exc``'s chain, as one error naming the file; else None.

    Not the user's input, nor a bug: the machine's, and a nightly job's log should say so in one line.
    Each library words it its own way: Python (OSError ENOSPC or EDQUOT), h5py (``errno = 28``, the file as
    ``filename = '...'``), TensorFlow (ResourceExhaustedError, the file before ``; No space left on device``),
    SQLite ("database or disk is full", no file).
    """
    import errno
    import re

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or any(s in text for s in _NO_SPACE):
            named = (getattr(exc, "filename", None) or re.search(r"filename = '([^']+)'", text)
                     or re.search(r"(/[^\s;'\"]+)[;:]? (?:No space left|Disk quota)", text))
            where = named if isinstance(named, str) else named.group(1) if named else None
            return DiskFullError(f"No space left on device{f' writing {where}' if where else ''}: free some space, or "
                                 "give workdir, data.data_dir or export.root a larger disk, and run again")
        exc = exc.__cause__ or exc.__context__
    return None
