"""Numbers as people read them in tables, summaries and reports: one format everywhere."""

from __future__ import annotations


def fmt(value) -> str:
    """Four significant digits for numbers (also numbers held as strings, as MLflow tags are); '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, (bool, int)) or not isinstance(value, (float, str)):
        return str(value)  # counts stay whole: 100004, not 1e+05
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value
