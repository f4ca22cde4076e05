"""Numbers as people read them in tables, summaries and reports: one format everywhere."""

from __future__ import annotations


def fmt(value) -> str:
    """Four significant digits for numbers (also numbers held as strings, as MLflow tags are); '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return str(value)
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value
