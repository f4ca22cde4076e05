"""What every config module shares: the section base, named constrained scalars, and setting a dotted key.

``flatten`` and ``set_path`` read and write configs by dotted keys (``train.epochs``).
The scalar types are named so that an error can say what was expected
("Expected a float in [0, 1)").
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pipeline.errors import ConfigError

# Constrained scalars, named so an error can say what was expected.
# Floats are finite: a learning rate of .inf would train a model of NaNs.
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Lambda = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
# A path as a shell reads it: `~/sales.csv` in a YAML file is the user's home, as pandas reads it.
Local = Annotated[str, AfterValidator(os.path.expanduser)]
NonNegativeFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]

# Metric names a callback may monitor: classification logs accuracy, regression rmse and mae.
Monitor = Literal["loss", "val_loss", "accuracy", "val_accuracy", "rmse", "val_rmse", "mae", "val_mae"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)



def set_path(raw: dict, key: str, value: Any, what: str = "key") -> None:
    """Set dotted ``key`` (list items by index, e.g. ``model.recommender.tower.0``) in a raw config dict."""
    node: Any = raw
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
        else:
            raise ConfigError(f"Invalid {what}: `{'.'.join(parts[:i])}` is not a section")
        if last:
            node[index] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(index), (dict, list)):
                node[index] = {}
            node = node[index]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as dotted keys to values (``set_path``'s keys): list items by index."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list) and tree:
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat
