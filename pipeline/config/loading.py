"""One override order: defaults -> experiment YAML -> ``key=value`` overrides -> validate, then frozen.

Experiment YAML holds only what differs from the defaults. Every mistake is a
``ConfigError`` of one line naming the file, key or value, raised before
TensorFlow is imported, so a typo costs milliseconds rather than a training run.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from pipeline.config import search_space
from pipeline.config.base import set_path
from pipeline.config.messages import describe
from pipeline.config.schema import ExperimentConfig
from pipeline.errors import ConfigError
from pipeline.text import among, closest

MAX_BYTES = 1_000_000  # a config file; experiment YAML is a few hundred bytes
MAX_VALUES = 100_000  # values a config expands to


class _Loader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping: plain YAML keeps the last one, so a
    second ``data:`` section would drop the first whole, without a word. Keys merged in by ``<<`` may be
    overridden, as YAML means them to be."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):  # a list as a key: YAML's own error follows
                    continue
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice in one mapping (first on line "
                        f"{seen[key].line + 1}); the second would silently replace the first", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def load(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read an experiment YAML, apply ``key=value`` overrides, validate and freeze.

    Args:
        path: Experiment YAML holding only what differs from the defaults; None for defaults.
        overrides: Dotted ``key=value`` strings, values parsed as YAML. Default none.

    Raises:
        ConfigError: One line naming the file, key or value at fault.
    """
    raw = read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe(exc, ExperimentConfig)) from None
    if cfg.tune is not None:
        search_space.check(cfg)
    return cfg


def read_yaml(path: Path, what: str = "Config") -> dict:
    """A YAML file's top-level mapping (empty for an empty file)."""
    if path.is_file() and path.stat().st_size > MAX_BYTES:
        raise ConfigError(f"{what} file {path} is {path.stat().st_size:,} bytes: a config is at most {MAX_BYTES:,}")
    if path.is_dir():
        raise ConfigError(f"{what} path {path} is a directory: give a YAML file")
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read {what.lower()} file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"Malformed YAML in {path}{where}: {problem}") from None
    if raw is None:
        return {}
    _bounded(raw, path, what)
    if not isinstance(raw, dict):
        raise ConfigError(f"Invalid {what.lower()} {path}: expected a mapping of sections at the top, "
                          f"got {type(raw).__name__}")
    return raw


def _bounded(raw, path: Path, what: str) -> None:
    """Refuse a file whose values (YAML aliases counted each time they are used) pass ``MAX_VALUES``.

    A few lines of nested aliases ("billion laughs") expand to billions of values that
    validation and error messages would walk; count them, stopping at the limit.
    """
    stack, seen = [raw], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ConfigError(f"{what} file {path} expands to more than {MAX_VALUES:,} values (nested YAML aliases?)")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def apply_override(raw: dict, item: str) -> None:
    """Set one ``key=value`` override (the value parsed as YAML) in a raw config dict."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"Invalid override `{item}`: expected key=value, e.g. train.epochs=3")
    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.constructor.ConstructorError as exc:  # well-formed, but a key given twice
        raise ConfigError(f"Invalid override `{item}`: {exc.problem}") from None
    except yaml.YAMLError:
        value = text  # not YAML: the text itself (a path, a name)
    set_path(raw, key, value, what=f"override `{item}`")


def value_at(cfg: ExperimentConfig, key: str):
    """The resolved value of a dotted ``key`` (``tracking.uri``), as JSON would hold it: what ``pipeline config get``
    prints for scripts and the Makefile.

    Raises:
        ConfigError: no such key, with the nearest one (``train.epochz``: did you mean ``train.epochs``?).
    """
    value, parts = cfg.model_dump(mode="json"), key.split(".")
    for at, part in enumerate(parts):
        if not isinstance(value, dict):
            raise ConfigError(f"Unknown key `{key}`: `{'.'.join(parts[:at])}` is a value, not a section")
        if part not in value:
            near = closest(part, list(value))
            hint = f"did you mean `{'.'.join([*parts[:at], near[0], *parts[at + 1:]])}`?" if near else (
                f"keys here: {among(part, list(value))}")
            raise ConfigError(f"Unknown key `{key}`; {hint}")
        value = value[part]
    return value
