"""What a cell of a user's table means (missing, a number or an ISO 8601 date), and so what a sampled column
holds; read the same way when a table is prepared (data/sources.py) and when serving is sent a date (serving/inputs.py).

All work on pyarrow arrays of text, a chunk at a time.
"""

from __future__ import annotations

import itertools
import re

# Missing, in any case: pandas.read_csv's default markers (R's NA, Excel's #N/A, a database's NULL, "n/a" ...).
NULLS = ("", "na", "nan", "-nan", "null", "none", "n/a", "#n/a", "#n/a n/a", "#na", "<na>",
         "1.#ind", "-1.#ind", "1.#qnan", "-1.#qnan")
# Every spelling of NULLS in any case: pyarrow's reader compares them exactly.
NULL_SPELLINGS = sorted({"".join(c) for word in NULLS
                         for c in itertools.product(*({ch.lower(), ch.upper()} for ch in word))})
NUMERIC_SHARE = 0.9  # a text column whose values parse as numbers this often is numeric with bad values
LOOKS_NUMERIC = r"^[+-]?(\d|[.,]\d|inf|nan)"  # how every value a number parses from begins (trimmed)
LOOKS_DATE = r"^\d{4}-\d\d-\d\d"  # ISO 8601: 2024-01-05, 2024-01-05T10:30:00Z, 2024-01-05 10:30+01:00
# Dates as spreadsheets and locales write them (12/31/2020, 31.12.2020, 2020/12/31, 31-Dec-2020), a time optional:
# not ISO 8601, so read as text, where every date is a category (a run notes them: data/stats.py)
FOREIGN_DATE = re.compile(r"(\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}/\d{1,2}/\d{1,2}|\d{1,2}-[A-Za-z]{3}-\d{2,4})"
                          r"([ T]\d{1,2}:\d\d(:\d\d)?)?")
# Numbers as reports write them ($1,234.50, 12.5%, 1 234 EUR, (300)): read as text, where every value is a category
FORMATTED_NUMBER = re.compile(r"[-+(]?\s*[$€£¥]?\s*[-+]?\d{1,3}(([,.\s']\d{3})+|\d*)([.,]\d+)?\s*(%|[$€£¥]|EUR|USD|GBP|JPY|CHF|CNY|INR|CAD|AUD)?\)?")
GROUPED_NUMBER = re.compile(r"[-+]?\d{1,3}([.,\s']\d{3})+([.,]\d+)?")  # 1.234.567,8: what data.thousands reads


def written_as(texts: list[str], pattern, plain: bool = True) -> str | None:
    """The first of ``texts`` that ``pattern`` matches, when it matches nine in ten of the first thousand
    (``plain=False``: the first that is not a plain number, what made the column text)."""
    sample = [t.strip() for t in texts[:1000]]
    matched = [t for t in sample if pattern.fullmatch(t)]
    if not sample or len(matched) < 0.9 * len(sample):
        return None
    return next((t for t in matched if plain or not _is_number(t)), None)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def text_and_missing(column):
    """Trimmed text of a column and where it is missing (empty, or one of NULLS in any case)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    missing = pc.or_kleene(pc.is_null(text), pc.is_in(pc.utf8_lower(text), pa.array(NULLS)))
    return pc.fill_null(text, ""), pc.fill_null(missing, True)


def iso_timestamps(text):
    """ISO 8601 text as timestamps: without a zone as they are, with one (``Z``, ``+01:00``) in UTC.

    Raises:
        pyarrow.ArrowInvalid: a value is no date, or zones are given for some values only.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(text, pa.timestamp("ns"))
    except pa.ArrowInvalid:
        return pc.cast(text, pa.timestamp("ns", tz="UTC"))


def iso_seconds(text):
    """Seconds since 1970 of ISO 8601 dates and times (``iso_timestamps``); null where no date, and zones given
    for some values only taken as they come (pandas' parser): how training reads a date column, and serving."""
    import pyarrow as pa

    try:
        return seconds(iso_timestamps(text))
    except pa.ArrowInvalid:
        import pandas as pd

        times = pd.to_datetime(text.to_pandas(), errors="coerce", utc=True, format="ISO8601")
        return seconds(pa.array(times, pa.timestamp("ns", tz="UTC")))


def to_float(text, decimal: str = ".", thousands: str = "none"):
    """Numbers parsed from text; what does not parse is null (pyarrow's cast first, pandas where it refuses).

    ``thousands`` (``data.thousands``) is taken out first ("1.234.567,8" -> "1234567,8"; a space stands for the
    no-break spaces that locales group digits with too). With a decimal comma (``data.decimal``) a point left is no
    decimal mark but an unannounced thousands' separator: "1.234" would read as a thousandth of what it says, so it
    does not parse (as in pyarrow's reader).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if thousands != "none":
        grouping = "[ \u00a0\u202f]" if thousands == " " else re.escape(thousands)
        text = pc.replace_substring_regex(text, grouping, "")
    if decimal == ",":
        text = pc.if_else(pc.match_substring(text, "."), pa.scalar(None, pa.string()),
                          pc.replace_substring(text, ",", "."))

    try:
        return pc.cast(text, pa.float64())
    except pa.ArrowInvalid:
        import pandas as pd

        return pa.array(pd.to_numeric(text.to_pandas(), errors="coerce"), pa.float64())


def seconds(column):
    """A time column as seconds: timestamps and dates since 1970-01-01 (UTC), durations and times of day as they are."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_date(column.type):
        column = pc.cast(column, pa.timestamp("s"))
    elif pa.types.is_time(column.type):
        column = pc.cast(column, pa.time64("ns"))
    per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[column.type.unit]
    # Nanoseconds since 1970 pass 2**53: float64 keeps them to a fraction of a microsecond, safe or not.
    return pc.divide(pc.cast(pc.cast(column, pa.int64()), pa.float64(), safe=False), per_second)


def kind_of(column, decimal: str, thousands: str) -> str:
    """What a column of text read from a table holds (a sample of its rows: sources.schema): ``string``, ``date``,
    ``int`` or ``float``. Numeric when NUMERIC_SHARE of its present values parse; int when all are whole, none missing;
    ``date`` when that share are ISO 8601 dates or times."""
    import pyarrow.compute as pc

    text, missing = text_and_missing(column)
    present = text.filter(pc.invert(missing))

    def too_few(hits) -> bool:
        return len(present) - int(pc.sum(hits).as_py() or 0) > (1 - NUMERIC_SHARE) * max(len(present), 1)

    if too_few(pc.match_substring_regex(present, LOOKS_NUMERIC, ignore_case=True)):  # text, without parsing it
        return "string"
    numbers = to_float(present, decimal, thousands)
    valid = pc.is_valid(numbers)
    if too_few(valid):
        dated = len(present) and not too_few(pc.match_substring_regex(present, LOOKS_DATE))
        return "date" if dated and not too_few(pc.is_valid(iso_seconds(present))) else "string"
    parsed = int(pc.sum(valid).as_py() or 0)
    if parsed == len(column) and parsed and pc.all(pc.equal(pc.floor(numbers), numbers)).as_py() \
            and pc.max(pc.abs(numbers)).as_py() < 2**53:
        return "int"
    return "float"
