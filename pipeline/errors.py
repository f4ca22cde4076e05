"""User-facing errors, named by what happens next.

The CLI prints ``str(error)`` as one line (no traceback) and exits with the
error's ``exit_code``. Anything that is not a ``PipelineError`` is a bug and
keeps its traceback.
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
