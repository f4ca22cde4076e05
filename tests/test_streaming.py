"""Users' tables at production size: read as a stream, sharded inputs, bounded memory, nothing half-written.

Small tables stand in for big ones: the chunk and shard sizes are shrunk so that a few
hundred rows cross the same boundaries a hundred million would.
"""

from __future__ import annotations

import bz2
import errno
import functools
import gzip
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load
from pipeline.errors import DataError, DiskFullError

from .conftest import ROOT, small_disk

CSV = ROOT / "configs" / "examples" / "csv.yaml"


def table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A house table sorted by its text label, the order a careless export would give."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"area": rng.uniform(50, 200, n).round(2), "rooms": rng.integers(1, 6, n),
                          "city": rng.choice(["north", "south", "east"], n), "kind": rng.choice(["flat", "house"], n)})
    return frame.sort_values("kind", kind="stable").reset_index(drop=True)


def shards(frame: pd.DataFrame, folder, parts: int, suffix: str = "csv", reorder: bool = False):
    """``frame`` in ``parts`` files; ``reorder``: every other file with its columns in reverse order."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), parts)):
        piece = frame.iloc[part, ::-1] if reorder and i % 2 else frame.iloc[part]
        piece.to_parquet(folder / f"part-{i}.parquet") if suffix == "parquet" else piece.to_csv(
            folder / f"part-{i}.csv", index=False)
    return folder


def config(tmp_path, path, *extra):
    return load(CSV, [f"workdir={tmp_path / 'work'}", f"data.data_dir={tmp_path / 'tfds'}", f"data.path={path}",
                      "data.label_key=kind", "features.target_transform=none", *extra])


def examples(cfg, split: str = "train") -> list[tuple]:
    """Every prepared example as a sorted list of (area, rooms, city, kind name) rows."""
    import tensorflow_datasets as tfds

    from pipeline.data.builders import builder_kwargs

    ds, info = tfds.load("csv", split=split, data_dir=cfg.data.data_dir, with_info=True,
                         builder_kwargs=builder_kwargs(cfg))
    names = info.features["kind"].names
    return sorted((round(float(x["area"]), 2), int(x["rooms"]), x["city"].decode(), names[int(x["kind"])])
                  for x in ds.as_numpy_iterator())


def prepared_rows(cfg) -> int:
    import tensorflow_datasets as tfds

    from pipeline.data.builders import builder_kwargs

    return tfds.builder("csv", data_dir=cfg.data.data_dir, **builder_kwargs(cfg)).info.splits["train"].num_examples


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 40 rows and CSV read 1 KB at a time: a few hundred rows cross every boundary."""
    from pipeline.data import records, sources

    monkeypatch.setattr(records, "SHARD_ROWS", 40)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 1024)
    monkeypatch.setattr(sources, "CHUNK_ROWS", 50)


def test_a_folder_a_glob_and_parquet_shards_prepare_exactly_the_rows_of_one_file(tmp_path, small_shards):
    """Shards are matched by column name: jobs that wrote them may have ordered the columns otherwise."""
    frame = table()
    frame.to_csv(tmp_path / "all.csv", index=False)
    expected = sorted((r.area, r.rooms, r.city, r.kind) for r in frame.itertuples())
    inputs = [tmp_path / "all.csv", shards(frame, tmp_path / "folder", 4), f"{tmp_path / 'folder'}/part-*.csv",
              shards(frame, tmp_path / "pq", 3, "parquet", reorder=True),
              shards(frame, tmp_path / "reordered", 4, reorder=True)]
    for path in inputs:
        assert examples(config(tmp_path, path)) == expected, path


def test_a_table_partitioned_into_key_value_folders_prepares_their_values_as_columns_as_pandas_reads_them(
        tmp_path, small_shards):
    """Spark and Hive write ``table/city=north/part-0.parquet``: the folders hold a column the files do not (here
    the label as well); values are unescaped, Hive's folder of missing values is a gap, a writer's ``_`` files
    are not read, and the prepared copy is named by the folders too."""
    from pipeline.data import dataset

    frame = table()
    frame.loc[frame.index % 7 == 0, "city"] = None  # rows of no city: Hive's __HIVE_DEFAULT_PARTITION__
    frame["city"] = frame["city"].replace("east", "east/west")  # a value that Hive escapes: %2F
    for suffix in ("parquet", "csv"):
        root = tmp_path / suffix
        for (city, kind), part in frame.fillna({"city": "__HIVE_DEFAULT_PARTITION__"}).groupby(["city", "kind"]):
            shards(part.drop(columns=["city", "kind"]), root / f"city={city.replace('/', '%2F')}" / f"kind={kind}", 2,
                   suffix)
        (root / "_SUCCESS").touch()  # what the writer leaves beside the table: no shard, nor its unfinished
        shards(frame.head(5), root / "_temporary" / "0" / "city=north" / "kind=flat", 1, suffix)  # job's files
        cfg = config(tmp_path, root, "data.on_bad_input=skip")
        expected = sorted((r.area, r.rooms, r.city if isinstance(r.city, str) else "", r.kind)
                          for r in frame.itertuples())
        assert examples(cfg) == expected, suffix
        assert dataset.load(cfg).spec.skipped == 0  # a missing text value is a category of its own, not a bad row
    (tmp_path / "csv" / "city=north").rename(tmp_path / "csv" / "city=North")
    renamed = config(tmp_path, tmp_path / "csv")
    assert examples(renamed) != examples(config(tmp_path, tmp_path / "parquet")), "a renamed folder: a new copy"
    semicolons = tmp_path / "semicolons" / "kind=flat"  # the file's own header still tells its dialect
    semicolons.mkdir(parents=True)
    frame.drop(columns=["kind"]).to_csv(semicolons / "part-0.csv", sep=";", index=False)
    with pytest.raises(DataError, match=r"its header is one column, 'area;rooms;city': .* \(set `data.delimiter: ';'`\)"):
        dataset.prepare(config(tmp_path, semicolons.parent))


def test_a_compressed_csv_and_a_folder_of_compressed_shards_prepare_exactly_the_rows_of_the_plain_file(
        tmp_path, small_shards):
    """Databases and buckets export tables compressed (``data.csv.gz``): read as a stream, decompressed on the way;
    a bad row is named by its line, a file cut short by its path."""
    from pipeline.data import dataset

    frame = table()
    expected = sorted((r.area, r.rooms, r.city, r.kind) for r in frame.itertuples())
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[rows].to_csv(folder / f"part-{i}.csv.gz", index=False)  # pandas compresses by the name's end
    for compression in ("gz", "bz2", "xz"):
        frame.to_csv(tmp_path / f"all.csv.{compression}", index=False)
    for path in [*(tmp_path / f"all.csv.{c}" for c in ("gz", "bz2", "xz")), folder]:
        assert examples(config(tmp_path, path)) == expected, path

    frame = frame.astype({"area": object})
    frame.loc[250, "area"] = "abc"
    frame.to_csv(tmp_path / "bad.csv.gz", index=False)
    with pytest.raises(DataError, match=r"bad\.csv\.gz: line 252, column 'area': 'abc' is not a number"):
        dataset.prepare(config(tmp_path, tmp_path / "bad.csv.gz"))
    whole = (tmp_path / "all.csv.gz").read_bytes()
    (tmp_path / "cut.csv.gz").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(DataError, match=r"^Cannot read \S+cut\.csv\.gz: Compressed file ended before the end"):
        dataset.prepare(config(tmp_path, tmp_path / "cut.csv.gz"))


def test_a_tsv_file_is_read_with_tabs_unless_the_config_says_otherwise(tmp_path, small_shards):
    frame = table()
    expected = sorted((r.area, r.rooms, r.city, r.kind) for r in frame.itertuples())
    for name in ("all.tsv", "all.tsv.gz"):
        frame.to_csv(tmp_path / name, sep="\t", index=False)
        cfg = config(tmp_path, tmp_path / name)
        assert cfg.data.delimiter == "\t" and examples(cfg) == expected, name
    assert config(tmp_path, f"{tmp_path}/*.tsv").data.delimiter == "\t"
    assert config(tmp_path, tmp_path / "all.tsv", "data.delimiter=;").data.delimiter == ";"  # a given one wins
    assert config(tmp_path, tmp_path / "all.csv").data.delimiter == ","


def _zipped(path, name: str, text: str) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(name, text)


@pytest.mark.parametrize("name,write,message", [
    ("sales.xlsx", lambda frame, path: _zipped(path, "xl/workbook.xml", "<workbook/>"),
     r"sales\.xlsx: no CSV but a zip archive \(an Excel workbook is one\): save the sheet as CSV"),
    ("table.csv", lambda frame, path: frame.to_parquet(path), r"table\.csv: no CSV but a Parquet file: name it \.parquet"),
    ("table.csv", lambda frame, path: path.write_bytes(gzip.compress(frame.to_csv().encode())),
     r"table\.csv: no CSV but gzip-compressed: name it \.gz"),
    ("table.csv", lambda frame, path: path.write_bytes(bz2.compress(frame.to_csv().encode())),
     r"table\.csv: no CSV but bzip2-compressed: name it \.bz2"),
])
def test_a_file_that_is_no_csv_is_named_for_what_it_is_before_any_work(tmp_path, name, write, message):
    """Told apart by content, not by name: a CSV may be named .txt or .dat, and a workbook may be named anything."""
    from pipeline.data.checks import check

    write(table(), tmp_path / name)
    with pytest.raises(DataError, match=f"^\\S*{message}"):
        check(config(tmp_path, tmp_path / name))  # what the command runs before it imports TensorFlow


def test_a_csv_whose_header_begins_as_a_signature_does_is_read_as_a_csv(tmp_path):
    from pipeline.data.checks import header

    (tmp_path / "params.csv").write_text("PAR1,PAR2,BZh91AY,kind\n1,2,3,flat\n")
    assert header(tmp_path / "params.csv") == ["PAR1", "PAR2", "BZh91AY", "kind"]


def test_rows_are_shuffled_into_shards_so_every_split_slice_is_a_random_share(tmp_path, small_shards):
    from pipeline.data import dataset

    table().to_csv(tmp_path / "sorted.csv", index=False)  # every flat before every house
    cfg = config(tmp_path, tmp_path / "sorted.csv")
    data = dataset.load(cfg)
    for split, ds in {"train": data.train_epoch(), "validation": data.validation, "test": data.test}.items():
        labels = np.concatenate([y.numpy() for _, y in ds])
        assert set(labels.tolist()) == {0, 1}, split  # a file-order slice would hold one class only
    batches = -(-data.spec.sizes["test"] // data.global_batch)
    assert data.test.cardinality().numpy() == batches  # cached in blocks, still a known length (Keras counts on it)
    shard_files = list((tmp_path / "tfds" / "csv").rglob("csv-train.tfrecord-*"))
    assert len(shard_files) >= 300 // 40 - 1


@pytest.mark.slow
def test_preparation_memory_stays_that_of_a_chunk_and_two_shards_when_the_table_grows(tmp_path, monkeypatch):
    """Peak Python and Arrow memory of preparing 160k rows is that of 40k rows: it does not grow with the table."""
    import tracemalloc

    import pyarrow as pa

    from pipeline.data import dataset, inputs, records, sources

    monkeypatch.setattr(records, "SHARD_ROWS", 5_000)  # 40k rows: 8 shards, enough for both writers to overlap
    monkeypatch.setattr(sources, "CHUNK_BYTES", 32 << 10)
    monkeypatch.setattr(sources, "SAMPLE_ROWS", 2_000)
    arrow = [0]
    add = records.ShuffledShards.add

    def watched(self, chunk):
        arrow[0] = max(arrow[0], pa.total_allocated_bytes())
        add(self, chunk)

    monkeypatch.setattr(records.ShuffledShards, "add", watched)
    # The chunks read ahead on a thread are a constant (its own test bounds them), but how many are under way
    # when a shard is added is the scheduler's: read in the caller's thread, the peaks compare like with like.
    monkeypatch.setattr(inputs, "read_ahead", lambda items: items)

    def peaks(rows: int, traced: bool = True) -> tuple[int, int]:
        path = tmp_path / f"t{rows}.csv"
        table(rows).to_csv(path, index=False)
        cfg = config(tmp_path, path)
        if not traced:  # the first preparation imports TensorFlow, which tracemalloc would slow tenfold
            return dataset.prepare(cfg)
        arrow[0], before = 0, pa.total_allocated_bytes()
        tracemalloc.start()
        dataset.prepare(cfg)
        python = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert prepared_rows(cfg) == rows
        return python, arrow[0] - before

    peaks(2_000, traced=False)
    small, large = peaks(40_000), peaks(160_000)  # 0.8 MB and 3.1 MB of CSV
    assert large[0] < 1.25 * small[0] and large[1] < 1.25 * small[1], (small, large)


def test_a_parquet_column_of_lists_is_one_line_naming_it_or_the_shard_that_holds_it(tmp_path):
    from pipeline.data import dataset

    frame = table()
    nested = frame.assign(city=[["north"]] * len(frame))
    nested.to_parquet(tmp_path / "nested.parquet")
    with pytest.raises(DataError, match=r"nested\.parquet: column 'city' holds list<element: string> values; a "
                                        r"column must hold numbers or text"):
        dataset.prepare(config(tmp_path, tmp_path / "nested.parquet"))
    folder = shards(frame, tmp_path / "pq", 3, "parquet")
    nested.iloc[:100].to_parquet(folder / "part-2.parquet")  # the first shard decided the types
    with pytest.raises(DataError, match=r"part-2\.parquet: its values do not convert to the types of part-0\.parquet's "
                                        r"columns \(.*list.*\); every shard must hold the same types"):
        dataset.prepare(config(tmp_path, folder))


def test_the_index_pandas_writes_into_parquet_is_no_column_as_pandas_reads_it_back(tmp_path):
    """``frame[rows].to_parquet`` stores the frame's index beside its columns: a row number the export would ask for."""
    import pyarrow.parquet as pq

    from pipeline.data import dataset

    frame = table()
    frame[frame.rooms > 1].to_parquet(tmp_path / "houses.parquet")
    assert "__index_level_0__" in pq.read_schema(tmp_path / "houses.parquet").names
    data = dataset.load(config(tmp_path, tmp_path / "houses.parquet"))
    assert sorted(f.name for f in data.spec.features) == ["area", "city", "rooms"]
    assert sum(data.spec.sizes.values()) == int((frame.rooms > 1).sum())


def test_parquet_integers_and_flags_with_missing_values_are_numbers_with_gaps_as_in_a_csv(tmp_path):
    """Spark and pandas write nullable integers (Int64) and booleans: a missing value is a gap, not a bad row."""
    from pipeline.data import dataset

    frame = table().assign(floors=pd.array([None if i % 7 == 0 else i % 3 for i in range(300)], dtype="Int64"),
                           garden=pd.array([None if i % 5 == 0 else i % 2 == 0 for i in range(300)], dtype="boolean"))
    frame.to_parquet(tmp_path / "houses.parquet")
    data = dataset.load(config(tmp_path, tmp_path / "houses.parquet"))
    kinds = {f.name: (f.kind, f.dtype) for f in data.spec.features}
    assert kinds["floors"] == kinds["garden"] == ("numeric", "float32") and kinds["rooms"] == ("numeric", "int64")
    assert sum(data.spec.sizes.values()) == 300 and not data.spec.skipped


def test_the_markers_of_a_missing_value_that_pandas_reads_are_gaps_in_numbers_and_text(tmp_path):
    """Spreadsheets write "n/a" and "#N/A", R "NA", databases "NULL": a gap where pandas.read_csv sees one, not a bad
    row ("n/a" stopped the preparation as "not a number")."""
    from pipeline.data import dataset

    frame = table().astype({"area": object})
    markers = ["NA", "n/a", "N/A", "#N/A", "NULL", "null", "NaN", "None", "<NA>", "-nan", "#NA", ""]
    for i, marker in enumerate(markers):
        frame.loc[7 * i, "area"] = marker
        frame.loc[7 * i + 3, "city"] = marker
    frame.to_csv(tmp_path / "houses.csv", index=False)
    expected = pd.read_csv(tmp_path / "houses.csv")
    assert expected.area.isna().sum() == expected.city.isna().sum() == len(markers)  # pandas reads each as missing
    data = dataset.load(config(tmp_path, tmp_path / "houses.csv"))
    assert not data.spec.skipped and sum(data.spec.sizes.values()) == 300
    assert {f.name: f.kind for f in data.spec.features}["area"] == "numeric"
    rows = examples(config(tmp_path, tmp_path / "houses.csv"))
    assert sum(np.isnan(area) for area, *_ in rows) == sum(city == "" for _, _, city, _ in rows) == len(markers)


def test_a_bad_row_in_one_shard_is_named_by_its_file_and_line_or_skipped_and_counted(tmp_path, small_shards):
    from pipeline.data import dataset

    folder = shards(table(), tmp_path / "folder", 5)
    part = pd.read_csv(folder / "part-3.csv", dtype=str)
    part.loc[5, "area"] = "abc"
    part.to_csv(folder / "part-3.csv", index=False)
    with pytest.raises(DataError, match=r"part-3\.csv: line 7, column 'area': 'abc' is not a number"):
        dataset.prepare(config(tmp_path, folder))
    assert dataset.load(config(tmp_path, folder, "data.on_bad_input=skip")).spec.skipped == 1


def test_a_latin1_table_is_named_at_its_first_bad_line_then_read_as_utf8_with_data_encoding(tmp_path, small_shards,
                                                                                             monkeypatch):
    from pipeline.data import dataset, sources

    monkeypatch.setattr(sources, "SAMPLE_ROWS", 100)
    frame = table()
    frame.loc[200:, "city"] = frame.loc[200:, "city"].replace({"north": "Zürich", "south": "Genève"})
    frame.to_csv(tmp_path / "utf8.csv", index=False)
    frame.to_csv(tmp_path / "latin1.csv", index=False, encoding="latin-1")  # as many spreadsheets save it
    first = 2 + int(np.flatnonzero(frame.city.isin(["Zürich", "Genève"]))[0])  # past the rows sampled for types
    with pytest.raises(DataError, match=rf"latin1\.csv: line {first}, column 'city' is not utf-8 text: set "
                                        r"data\.encoding"):
        dataset.prepare(config(tmp_path, tmp_path / "latin1.csv"))
    read = examples(config(tmp_path, tmp_path / "latin1.csv", "data.encoding=latin-1"))
    assert read == examples(config(tmp_path, tmp_path / "utf8.csv")) and ("Zürich" in {row[2] for row in read})
    (tmp_path / "cp1252.csv").write_bytes(b"area,rooms,city,kind\n1,2,north,flat\n1,2,x\x81y,flat\n3,4,east,house\n")
    with pytest.raises(DataError, match=r"cp1252\.csv: line 3, column 'city' is not cp1252 text"):  # 0x81: no character
        dataset.prepare(config(tmp_path, tmp_path / "cp1252.csv", "data.encoding=cp1252"))


def test_a_utf16_export_is_named_as_such_then_read_as_the_plain_table_with_its_encoding_and_tabs(tmp_path,
                                                                                                small_shards):
    """Excel's "Unicode Text" export is UTF-16 with tabs: read as UTF-8 it was one garbled column."""
    from pipeline.data import dataset

    frame = table()
    frame.to_csv(tmp_path / "plain.csv", index=False)
    frame.to_csv(tmp_path / "export.txt", index=False, sep="\t", encoding="utf-16")
    with pytest.raises(DataError, match=r"export\.txt: its text is UTF-16 .*, not utf-8: set `data\.encoding: "
                                        r"utf-16`, and most often `data\.delimiter: tab`$"):
        dataset.prepare(config(tmp_path, tmp_path / "export.txt"))
    read = examples(config(tmp_path, tmp_path / "export.txt", "data.encoding=utf-16", "data.delimiter=tab"))
    assert read == examples(config(tmp_path, tmp_path / "plain.csv"))


def test_a_european_spreadsheet_export_reads_as_the_comma_separated_table_with_data_delimiter(tmp_path, small_shards,
                                                                                              monkeypatch):
    from pipeline.data import dataset, sources

    monkeypatch.setattr(sources, "SAMPLE_ROWS", 100)  # the rows past the sample are converted by the full pass
    frame = table()
    frame.to_csv(tmp_path / "plain.csv", index=False)
    frame.to_csv(tmp_path / "semicolons.csv", index=False, sep=";", decimal=",")  # 123,45;3;north;flat
    frame.to_csv(tmp_path / "points.csv", index=False, sep=";")  # 123.45;3;north;flat
    (tmp_path / "tabs").mkdir()
    frame.to_csv(tmp_path / "tabs" / "part-0.tsv", index=False, sep="\t")  # a folder of tab-separated shards
    plain = examples(config(tmp_path, tmp_path / "plain.csv"))
    # data.decimal auto: the mark most numbers of the first rows take
    assert examples(config(tmp_path, tmp_path / "semicolons.csv", "data.delimiter=;")) == plain
    assert examples(config(tmp_path, tmp_path / "points.csv", "data.delimiter=;")) == plain
    assert examples(config(tmp_path, tmp_path / "tabs", "data.delimiter=tab")) == plain
    with pytest.raises(DataError, match=r"its fields are separated by ';', not ',' \(set `data.delimiter: ';'`\)"):
        dataset.prepare(config(tmp_path, tmp_path / "semicolons.csv"))
    # with a decimal comma a point separates thousands: 1.234 is no number there, not a thousandth of 1,234
    text = (tmp_path / "semicolons.csv").read_text().splitlines()
    text[250] = "1.234" + text[250][text[250].index(";"):]
    (tmp_path / "thousands.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"thousands\.csv: line 251, column 'area': '1\.234' is not a number"):
        dataset.prepare(config(tmp_path, tmp_path / "thousands.csv", "data.delimiter=;"))
    # ...unless the file says so (`data.thousands`): then every number is read as text and its grouping taken out
    grouped = examples(config(tmp_path, tmp_path / "thousands.csv", "data.delimiter=;", "data.thousands=."))
    assert len(grouped) == len(plain) and 1234.0 in {row[0] for row in grouped}
    assert {row[0] for row in grouped} - {row[0] for row in plain} == {1234.0}
    text = (tmp_path / "plain.csv").read_text().splitlines()  # a comma-separated file quotes such numbers
    text[250] = '"1,234.00"' + text[250][text[250].index(","):]
    (tmp_path / "quoted.csv").write_text("\n".join(text) + "\n")
    quoted = examples(config(tmp_path, tmp_path / "quoted.csv", "data.thousands=,"))
    assert {row[0] for row in quoted} - {row[0] for row in plain} == {1234.0} and len(quoted) == len(plain)


def test_pipeline_prepare_says_how_many_bad_rows_it_skipped(tmp_path, capsys):
    from pipeline.cli import main

    frame = table().astype(str)
    frame.loc[[10, 20], "area"] = "abc"
    frame.to_csv(tmp_path / "t.csv", index=False)
    argv = [f"workdir={tmp_path / 'work'}", f"data.path={tmp_path / 't.csv'}", "data.label_key=kind"]
    assert main(["prepare", str(CSV), *argv, "data.on_bad_input=skip"]) == 0
    (line,) = capsys.readouterr().out.splitlines()  # one line: TFDS' "Downloading and preparing" is not shown
    assert line.startswith("Prepared csv") and line.endswith("; 2 bad rows or files skipped (data.on_bad_input: skip)")


def test_a_bad_number_after_many_good_chunks_is_named_or_skipped_exactly_as_in_the_first_chunk(tmp_path, small_shards):
    """Numbers are parsed by the CSV reader until a value is not one; the rest of the file is then read as text,
    from the row it stopped at, so no row is lost or read twice, and skipped ragged rows before it still count."""
    from pipeline.data import dataset

    frame = table().astype(str)
    frame.loc[250, "area"] = "abc"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad\.csv: line 252, column 'area': 'abc' is not a number"):
        dataset.prepare(config(tmp_path, tmp_path / "bad.csv"))
    lines = frame.to_csv(index=False).splitlines()
    lines[21] += ",9"  # and row 20 has a field too many
    (tmp_path / "worse.csv").write_text("\n".join(lines) + "\n")
    cfg = config(tmp_path, tmp_path / "worse.csv", "data.on_bad_input=skip")
    good = table().drop(index=[20, 250])
    assert examples(cfg) == sorted((r.area, r.rooms, r.city, r.kind) for r in good.itertuples())
    assert dataset.load(cfg).spec.skipped == 2

@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_text("area,rooms,city,kind,extra\n1,2,north,flat,9\n"),
     r"part-2\.csv: its columns differ from those of part-0\.csv \(it adds extra\); every shard must have the same"),
    (lambda p: p.write_text("area,kind,city\n1,flat,north\n"),
     r"part-2\.csv: its columns differ from those of part-0\.csv \(it lacks rooms\); every shard"),
    (lambda p: p.write_text("kind,rooms,area,city,city\n1,2,north,flat,north\n"), r"\(it repeats city\)"),
    (lambda p: p.write_bytes(b"area,rooms,city,kind\n1,2,\xff\xfe,flat\n"),
     r"^\S*part-2\.csv: line 2, column 'city' is not utf-8 text"),
    (lambda p: p.write_text("area,rooms,city,kind\n1,2,north,flat\n1,2,north,flat,9\n"),
     r"^\S*part-2\.csv: line 3 has 5 fields, the header 4 \(`data.on_bad_input: skip`"),
])
def test_an_unreadable_shard_stops_the_preparation_with_its_path(tmp_path, small_shards, damage, message):
    from pipeline.data import dataset

    folder = shards(table(), tmp_path / "folder", 4)
    damage(folder / "part-2.csv")
    with pytest.raises(DataError, match=message):
        dataset.prepare(config(tmp_path, folder))


@pytest.mark.parametrize("on_bad_input", ["error", "skip"])
def test_a_parquet_shard_cut_short_stops_the_preparation_with_its_path_whatever_on_bad_input_says(
        tmp_path, small_shards, on_bad_input):
    """Its rows cannot be counted, let alone skipped one by one: a shard that a failed copy cut short is named, and
    so is a file that is no Parquet at all; nothing is blamed on another setting."""
    from pipeline.data import dataset

    folder = shards(table(), tmp_path / "folder", 4, "parquet")
    whole = (folder / "part-2.parquet").read_bytes()
    (folder / "part-2.parquet").write_bytes(whole[:len(whole) // 2])
    cfg = config(tmp_path, folder, f"data.on_bad_input={on_bad_input}")
    with pytest.raises(DataError, match=r"^Cannot read \S+part-2\.parquet: Parquet magic bytes not found in footer"):
        dataset.prepare(cfg)
    (folder / "part-0.parquet").write_text("area,rooms\n1,2\n")  # the first shard, whose header and sample come first
    with pytest.raises(DataError, match=r"^Cannot read \S+part-0\.parquet: "):
        dataset.prepare(cfg)


def test_a_disk_that_fills_up_ends_with_one_line_and_no_dataset(tmp_path, small_shards, monkeypatch):
    import tensorflow_datasets as tfds

    from pipeline.data import dataset, records
    from pipeline.data.builders import builder_kwargs

    table().to_csv(tmp_path / "t.csv", index=False)

    def full(self, paths_for, encode):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records.ShuffledShards, "write", full)
    cfg = config(tmp_path, tmp_path / "t.csv")
    with pytest.raises(DiskFullError, match=r"^Preparing \S+t\.csv into .* failed: No space left on device$"):
        dataset.prepare(cfg)
    assert not tfds.builder("csv", data_dir=cfg.data.data_dir, **builder_kwargs(cfg)).is_prepared()
    assert not list((tmp_path / "tfds").rglob("*.tfrecord*")) and not list((tmp_path / "tfds").rglob("*.arrow"))


def test_a_real_full_disk_ends_the_same_way(tmp_path):
    """A 1 MB tmpfs as the data_dir, where this machine lets the tests mount one (root on Linux)."""
    import tensorflow_datasets as tfds

    from pipeline.data import dataset
    from pipeline.data.builders import builder_kwargs

    with small_disk(tmp_path / "disk", "1m") as disk:
        table(20_000).to_csv(tmp_path / "t.csv", index=False)  # 2 MB of records
        cfg = config(tmp_path, tmp_path / "t.csv", f"data.data_dir={disk}")
        with pytest.raises(DiskFullError, match=r"^Preparing \S+t\.csv into .* failed: .*No space left on device$"):
            dataset.prepare(cfg)
        assert not tfds.builder("csv", data_dir=str(disk), **builder_kwargs(cfg)).is_prepared()
        left = [p for p in disk.rglob("*") if p.is_file() and p.suffix != ".lock"]  # the empty lock file stays
        assert not left  # nothing half-written, the space given back


KILLED = """
import os, signal, sys
from pipeline.config import load
from pipeline.data import dataset, records
records.SHARD_ROWS = 40
write = records.ShuffledShards.write
def dying(self, paths_for, encode):
    calls = []
    def encode_then_die(table):
        calls.append(1)
        if len(calls) == 3:  # two shards written, the third under way
            os.kill(os.getpid(), signal.SIGKILL)
        return encode(table)
    return write(self, paths_for, encode_then_die)
records.ShuffledShards.write = dying
dataset.prepare(load(sys.argv[1], sys.argv[2:]))
"""


@pytest.mark.slow
def test_a_preparation_killed_half_way_is_never_read_as_complete_and_the_rerun_starts_over(tmp_path):
    import tensorflow_datasets as tfds

    from pipeline.data import dataset
    from pipeline.data.builders import builder_kwargs

    table().to_csv(tmp_path / "t.csv", index=False)
    cfg = config(tmp_path, tmp_path / "t.csv")
    overrides = [f"workdir={cfg.workdir}", f"data.data_dir={cfg.data.data_dir}", f"data.path={cfg.data.path}",
                 "data.label_key=kind", "features.target_transform=none"]
    proc = subprocess.run([sys.executable, "-c", KILLED, str(CSV), *overrides], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert list((tmp_path / "tfds").rglob("*.tfrecord*"))  # it had written shards...
    assert not tfds.builder("csv", data_dir=cfg.data.data_dir, **builder_kwargs(cfg)).is_prepared()  # ...unread
    assert sum(dataset.load(cfg).spec.sizes.values()) == 300


def test_a_column_whole_in_the_sample_but_not_later_names_the_declaration_that_fixes_it(tmp_path, monkeypatch):
    from pipeline.data import dataset, sources

    monkeypatch.setattr(sources, "SAMPLE_ROWS", 100)
    frame = table().astype({"rooms": float})
    frame.loc[250, "rooms"] = 2.5
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"t\.csv: line 252, column 'rooms' is '2\.5', but the column holds whole "
                                        r"numbers in the first 100 rows: declare it with `data\.dtypes: \{rooms: float\}`"):
        dataset.prepare(config(tmp_path, tmp_path / "t.csv"))
    spec = dataset.load(config(tmp_path, tmp_path / "t.csv", "data.dtypes={rooms: float}")).spec
    assert spec.feature("rooms").dtype == "float32"


def test_a_row_longer_than_the_type_samples_block_is_read_as_the_full_pass_reads_it(tmp_path):
    from pipeline.data import dataset, sources

    frame = table(100).assign(note="short")
    frame.loc[3, "note"] = "x" * (2 * sources.SAMPLE_BYTES)  # one row wider than the sample's block
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = config(tmp_path, tmp_path / "t.csv")
    dataset.prepare(cfg)
    assert prepared_rows(cfg) == 100


def test_quoted_values_with_line_breaks_across_chunk_boundaries_prepare_every_row(tmp_path, small_shards):
    """Free text with line breaks, as databases and spreadsheets export it: 1 KB chunks end inside such values."""
    from pipeline.data import dataset

    frame = table(200).assign(note=[f"line one\nline two, {i}" for i in range(200)])
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = config(tmp_path, tmp_path / "t.csv")
    dataset.prepare(cfg)
    assert prepared_rows(cfg) == 200


@pytest.mark.parametrize("bad, message", [("2,2,north", "has 3 fields, the header 4"),
                                          ("many,2,north,flat", "column 'area': 'many' is not a number")])
def test_a_bad_row_after_values_with_line_breaks_is_named_by_the_line_it_is_on(tmp_path, small_shards, bad, message):
    from pipeline.data import dataset

    lines = ["area,rooms,city,kind"] + [f'{i}.5,2,"north\nby the sea",flat' for i in range(100)]
    lines += [f"{i}.5,2,north,house" for i in range(100, 200)]
    lines[151] = bad  # row 150, on line 1 + 2 x 100 + 50 + 1
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"t\.csv: line 252,? {message}"):
        dataset.prepare(config(tmp_path, tmp_path / "t.csv"))


@pytest.mark.parametrize("at, long", [(1, 3), (150, 1)])
def test_a_row_over_a_chunk_is_named_by_its_first_line_a_quote_left_open_among_the_causes(tmp_path, small_shards,
                                                                                           at, long):
    """1 KB chunks: a value of 3 KB on line 3, or an opening quote on line 152 that takes in the lines after it."""
    from pipeline.data import dataset

    lines = ["area,rooms,city,kind"] + [f"{i}.5,2,north,{'flat' if i % 2 else 'house'}" for i in range(300)]
    lines[at + 1] = lines[at + 1].replace("north", "x" * 3000 if long == 3 else '"north')
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"t\.csv: the row from line {at + 2} on holds a value of more than 1 KB, the most"):
        dataset.prepare(config(tmp_path, tmp_path / "t.csv"))


def test_chunks_read_ahead_arrive_in_order_with_the_readers_error_and_an_early_stop_ends_the_reader():
    import threading

    from pipeline.data.inputs import read_ahead

    produced = [0]

    def chunks(fail_after: int):
        for i in range(10):
            if i == fail_after:
                raise DataError(f"t.csv: line {i + 2}, column 'x': 'abc' is not a number")
            produced[0] += 1
            yield i

    got = []
    with pytest.raises(DataError, match=r"^t\.csv: line 6, column 'x'"):
        for item in read_ahead(chunks(fail_after=4)):
            got.append(item)
    assert got == [0, 1, 2, 3]
    produced[0], got = 0, []
    for item in read_ahead(chunks(fail_after=99), depth=2):
        time.sleep(0.01)  # a slow consumer: the reader runs ahead, but never more than depth chunks
        assert produced[0] <= len(got) + 1 + 2
        got.append(item)
    assert got == list(range(10))
    stream = read_ahead(chunks(fail_after=99), depth=1)
    assert [next(stream), next(stream)] == [0, 1]
    readers = [t for t in threading.enumerate() if t.name.startswith("read-ahead")]
    assert readers
    stream.close()  # the caller stops early: the reader thread ends instead of waiting forever to hand over
    for thread in readers:
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_cache_auto_keeps_a_split_in_memory_then_in_a_file_then_nowhere_by_budget():
    from pipeline.data.feed import cache_mode

    cfg = load(None, ["data.cache_memory_mb=100"])
    mb = 2**20
    assert cache_mode(cfg, 99 * mb, free_disk=10**12) == "memory"
    assert cache_mode(cfg, 101 * mb, free_disk=10**12) == "file"
    assert cache_mode(cfg, 101 * mb, free_disk=150 * mb) == "none"  # a file needs twice its size free
    assert cache_mode(load(None, ["data.cache=none"]), 1, 10**12) == "none"
    assert cache_mode(load(None, ["data.cache=true"]), 10**12, 0) == "memory"  # what older configs say
    assert cache_mode(cfg, 1, 10**12, cut=True) == "none"  # a series' windows: cut again from the series in memory


def test_an_input_over_the_full_hash_size_is_fingerprinted_by_size_time_and_sampled_blocks(tmp_path, monkeypatch):
    import os

    from pipeline.data import inputs

    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 100_000)
    full = inputs.fingerprint([path])
    monkeypatch.setattr(inputs, "FULL_HASH_BYTES", 1000)
    sampled = inputs.fingerprint([path])
    assert sampled != full
    with open(path, "r+b") as handle:  # an edit inside a sampled block (the first one), same size
        handle.seek(4)
        handle.write(b"9")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert inputs.fingerprint([path]) != sampled


def test_a_lookup_keeps_the_most_frequent_values_up_to_the_vocabulary_cap():
    from pipeline.data.spec import Feature
    from pipeline.models.features import lookup

    column = np.array([b"a"] * 5 + [b"b"] * 3 + [b"c"] * 3 + [b"d"])
    table = lookup(Feature("city", "categorical", "string"), column, "int", limit=2)
    assert table.get_vocabulary() == ["[UNK]", "a", "b"]  # c ties b and loses on order; d is out of vocabulary
    assert table(np.array(["c", "d", "a"])).numpy().tolist() == [0, 0, 1]


def test_a_long_preparation_logs_its_progress_rate_and_time_left_where_no_terminal_shows_a_bar(capsys, tmp_path,
                                                                                                  monkeypatch):
    """Both of its passes: reading the rows into spill files, then writing the shards."""
    from pipeline.data import dataset, records
    from pipeline.text import progress

    assert list(progress(iter([3, 4]), 10, "preparing", "rows", size=lambda n: n, every=0)) == [3, 4]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("preparing: 3 of about 10 rows (") and " rows/s, about " in lines[0]
    assert lines[1].startswith("preparing: 7 of about 10 rows") and lines[1].endswith(" s left)")

    monkeypatch.setattr(records, "progress", functools.partial(progress, every=0))
    monkeypatch.setattr(records, "SHARD_ROWS", 40)
    table(100).to_csv(tmp_path / "t.csv", index=False)
    dataset.prepare(config(tmp_path, tmp_path / "t.csv"))
    written = [line for line in capsys.readouterr().err.splitlines() if line.startswith("writing shards: ")]
    assert written and written[-1].startswith("writing shards: 100 of about 100 rows (")


def test_on_a_terminal_the_progress_is_a_bar_with_its_rate_unknown_until_measured():
    """What a user at a terminal sees (a pseudo-terminal here): rich's bar, drawn before the first item too,
    when no rate is known yet (it crashed there, so every preparation at a terminal did)."""
    import os
    import pty

    try:
        master, terminal = pty.openpty()
    except OSError:
        pytest.skip("no pseudo-terminal on this machine")
    code = "from pipeline.text import progress; print(sum(progress(iter([3, 4]), 10, 'preparing', 'rows', lambda n: n)))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=terminal, text=True,
                          timeout=60)
    os.close(terminal)
    drawn = os.read(master, 1 << 16).decode(errors="replace")
    os.close(master)
    assert proc.returncode == 0 and proc.stdout == "7\n", drawn[-2000:]
    assert "preparing" in drawn and "? rows/s" in drawn and "7/10" in drawn


def test_rows_serialize_to_the_bytes_protobuf_and_tensorflows_record_writer_give(tmp_path):
    """The bulk encoder writes protobuf's wire format itself: it must agree with protobuf on every edge."""
    import pyarrow as pa
    import tensorflow as tf

    from pipeline.data import records

    rng = np.random.default_rng(0)
    n = 500
    texts = ["", "a", "é€😀", "x" * 127, "y" * 128, "z" * 20_000]
    floats = rng.normal(size=n).astype(np.float32)
    floats[:4] = [np.nan, np.inf, -0.0, 3.4e38]
    columns = {  # in key order: protobuf's deterministic output sorts a map's keys
        "a_float": floats,
        "b_int": np.concatenate([[0, 127, 128, -1, 2**63 - 1, -(2**63)], rng.integers(-2**40, 2**40, n - 6)]),
        "c_small": rng.integers(0, 300, n),
        "d_text": pa.array([texts[i] for i in rng.integers(0, len(texts), n)]),
        "k" * 150: np.zeros(n, np.float32),  # a key whose length takes two varint bytes
    }
    kinds = {"a_float": "float", "b_int": "int", "c_small": "int", "d_text": "bytes", "k" * 150: "float"}
    encoded = records.serialize(columns, kinds)
    got = encoded.messages()
    for i in range(n):
        feature = {}
        for name, values in columns.items():
            value = values[i].as_py() if isinstance(values, pa.Array) else values[i]
            feature[name] = {"float": lambda v: tf.train.Feature(float_list=tf.train.FloatList(value=[v])),
                             "int": lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=[v])),
                             "bytes": lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
                             }[kinds[name]](value)
        expected = tf.train.Example(features=tf.train.Features(feature=feature))
        assert got[i] == expected.SerializeToString(deterministic=True), i
    assert len(records.serialize({"x": np.zeros(0, np.float32)}, {"x": "float"})) == 0
    # Framed as a TFRecord file in one piece: the bytes TensorFlow's own writer gives, record by record.
    path = tmp_path / "rows.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for message in got:
            writer.write(message)
    assert encoded.tfrecord() == path.read_bytes()


def test_workers_reading_by_file_each_get_their_own_rows_and_the_same_steps_every_epoch(tmp_path, monkeypatch):
    """FILE sharding: two workers read disjoint shards of the training split, each as many batches an epoch."""
    import tensorflow as tf

    from pipeline.data import dataset, records

    monkeypatch.setattr(records, "SHARD_ROWS", 250)  # 2,000 rows: 8 shard files, the training split in 6 of them
    frame = table(2000).assign(id=np.arange(2000))
    frame.to_csv(tmp_path / "rows.csv", index=False)
    cfg = config(tmp_path, tmp_path / "rows.csv", "data.batch_size=64")
    data = dataset.load(cfg)
    train_ids = {int(i) for x, _ in data.train_epoch() for i in x["id"].numpy()}
    assert data.train_files >= 2 and len(train_ids) == data.spec.sizes["train"]

    def worker(index: int, loaded) -> list[list[int]]:
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index, num_replicas_in_sync=2)
        batches = loaded.train_for(context).take(2 * loaded.steps_per_epoch)  # two epochs
        return [sorted(int(i) for i in x["id"].numpy()) for x, _ in batches]

    first, second = worker(0, data), worker(1, data)
    assert len(first) == len(second) == 2 * data.steps_per_epoch  # the same steps, so the all-reduce never waits
    assert {len(b) for b in first + second} == {32}  # each half of the global batch of 64
    mine, theirs = ({i for b in w[:data.steps_per_epoch] for i in b} for w in (first, second))
    assert not mine & theirs and mine | theirs <= train_ids  # their own rows, only training rows
    assert len(mine | theirs) > 0.9 * len(train_ids)
    resumed = worker(0, dataset.load(cfg, start_epoch=1))  # a run resumed at epoch 1 replays worker 0's epoch 1
    assert resumed[:data.steps_per_epoch] == first[data.steps_per_epoch:]


def test_splits_parsed_a_block_at_a_time_are_tfds_own_examples_in_its_order(tmp_path, small_shards, tiny_cfg,
                                                                            monkeypatch):
    """Every value and dtype of every example, in TFDS's order: a table (gaps, whole numbers, text, a class label)
    across shard and block boundaries, a worker's share of its files, and digits' PNG images; and the features
    picked from the reader's own blocks are those picked from TFDS's examples."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from pipeline.data import columns, dataset, tfds_reader
    from pipeline.data.builders import builder_kwargs

    monkeypatch.setattr(tfds_reader, "BLOCK", 7)
    frame = table(300)
    frame.loc[::9, "area"] = np.nan
    frame.to_csv(tmp_path / "rows.csv", index=False)
    worker = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    for cfg, contexts in ((config(tmp_path, tmp_path / "rows.csv"), [worker]), (tiny_cfg(), [])):
        dataset.prepare(cfg)
        builder = tfds.builder(cfg.data.dataset, data_dir=cfg.data.data_dir, **builder_kwargs(cfg))
        assert tfds_reader.batchable(builder.info)
        spec = dataset.describe(cfg)
        for split, context in (("train[:70%]", None), ("train[85%:]", None), *(("train[:70%]", c) for c in contexts)):
            read_config = tfds.ReadConfig(input_context=context)
            read = tfds_reader.read(builder, split, read_config)
            tfds_own = builder.as_dataset(split, shuffle_files=False, read_config=read_config)
            assert tfds_reader.blocks_of(read) is not None and tfds_reader.blocks_of(tfds_own) is None
            picked = [(columns.pairs(read, spec), columns.pairs(tfds_own, spec))] if split == "train[:70%]" else []
            for ours, theirs in [(read, tfds_own), *picked]:
                ours, theirs = list(ours.as_numpy_iterator()), list(theirs.as_numpy_iterator())
                assert len(ours) == len(theirs) > 10
                for a, b in zip(ours, theirs):
                    a, b = tf.nest.flatten(a), tf.nest.flatten(b)  # an example, or a (features, label) pair
                    assert len(a) == len(b)
                    for x, y in zip(a, b):
                        assert np.asarray(x).dtype == np.asarray(y).dtype
                        np.testing.assert_array_equal(x, y)


def test_a_prepared_dataset_is_read_without_writing_in_its_folder_so_a_read_only_copy_serves_every_run(tmp_path):
    import os

    from pipeline.data import dataset

    table().to_csv(tmp_path / "t.csv", index=False)
    cfg = config(tmp_path, tmp_path / "t.csv")
    dataset.prepare(cfg)
    data_dir = tmp_path / "tfds"
    for lock in data_dir.glob(".*.lock"):
        lock.unlink()
    before = sorted((str(p), p.stat().st_mtime_ns) for p in data_dir.rglob("*"))
    folders = [data_dir, *(p for p in data_dir.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)  # read-only for all but root, which is asked by what the read leaves behind
    try:
        assert sum(dataset.load(cfg).spec.sizes.values()) == 300
    finally:
        for folder in folders:
            os.chmod(folder, 0o755)
    assert sorted((str(p), p.stat().st_mtime_ns) for p in data_dir.rglob("*")) == before


def test_a_dataset_to_prepare_in_a_folder_that_takes_no_file_is_one_line_naming_the_folder(tmp_path):
    from pipeline.data import dataset

    table().to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "file").write_text("")
    cfg = config(tmp_path, tmp_path / "t.csv", f"data.data_dir={tmp_path / 'file' / 'tfds'}")
    with pytest.raises(DataError, match=r"^Invalid `data\.data_dir`: cannot write in .*/file/tfds \(Not a directory\) to "
                                        r"prepare .*t\.csv there: prepare it with write access there"):
        dataset.load(cfg)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_shards_of_a_table_that_gained_columns_are_refused_or_read_as_one_table_with_data_merge_columns(
        tmp_path, suffix, small_shards):
    import tensorflow_datasets as tfds

    from pipeline.data import dataset
    from pipeline.data.builders import builder_kwargs

    frame = table(240).assign(floor=np.arange(240) % 7)
    parts = [frame.iloc[:80][["area", "rooms", "kind"]],  # before the table had a city and a floor
             frame.iloc[80:160][["kind", "city", "rooms", "area"]],  # a city added, the columns in another order
             frame.iloc[160:]]  # and a floor
    folder = tmp_path / "lake"
    folder.mkdir()
    for i, part in enumerate(parts):
        part.to_parquet(folder / f"part-{i}.parquet") if suffix == "parquet" else part.to_csv(
            folder / f"part-{i}.csv", index=False)
    with pytest.raises(DataError, match=rf"part-1\.{suffix}: its columns differ from those of part-0\.{suffix} "
                                        r"\(it adds city\); .* unless `data\.merge_columns: true` reads them"):
        dataset.prepare(config(tmp_path, folder))

    cfg = config(tmp_path, folder, "data.merge_columns=true")
    dataset.prepare(cfg)
    ds, info = tfds.load("csv", split="train", data_dir=cfg.data.data_dir, with_info=True,
                         builder_kwargs=builder_kwargs(cfg))
    assert {n: f.np_dtype for n, f in info.features.items() if n != "kind"} == {
        "area": np.float32, "rooms": np.int64, "city": np.object_, "floor": np.float32}  # gaps make floor a float
    names = info.features["kind"].names
    got = sorted((round(float(x["area"]), 2), int(x["rooms"]), x["city"].decode(), float(x["floor"]),
                  names[int(x["kind"])]) for x in ds.as_numpy_iterator())
    merged = pd.concat(parts)  # pandas' own union: a column a frame lacks is missing in its rows
    expected = sorted((round(float(r.area), 2), int(r.rooms), r.city if isinstance(r.city, str) else "",
                       float(r.floor), r.kind) for r in merged.itertuples())
    assert len(got) == 240
    assert [g[:3] + g[4:] for g in got] == [e[:3] + e[4:] for e in expected]
    np.testing.assert_array_equal([g[3] for g in got], [e[3] for e in expected])  # NaN where a shard had no floor

    parts[2].drop(columns="kind").to_csv(folder / "part-2.csv", index=False) if suffix == "csv" else \
        parts[2].drop(columns="kind").to_parquet(folder / "part-2.parquet")
    with pytest.raises(DataError, match=rf"part-2\.{suffix}: its header has no label column 'kind'"):
        dataset.prepare(config(tmp_path, folder, "data.merge_columns=true"))


def test_a_csv_without_a_header_line_is_read_with_data_column_names_and_its_lines_are_counted_from_the_first(
        tmp_path, small_shards):
    from pipeline.data import dataset
    from pipeline.data.checks import check

    frame = table()
    frame.to_csv(tmp_path / "headed.csv", index=False)
    frame.to_csv(tmp_path / "bare.csv", index=False, header=False)  # as Hive, Spark and database dumps write them
    with pytest.raises(DataError, match=r"bare\.csv: missing label column 'kind' .* may be a row of data: if the file has "
                                        r"no header line, name its columns in `data\.column_names`"):
        check(config(tmp_path, tmp_path / "bare.csv"))
    named = "data.column_names=[area, rooms, city, kind]"
    cfg = config(tmp_path, tmp_path / "bare.csv", named)
    check(cfg)
    dataset.prepare(cfg)
    assert examples(cfg) == examples(config(tmp_path, tmp_path / "headed.csv"))  # every row, the first line's too

    rows = (tmp_path / "bare.csv").read_text().splitlines()
    rows[199] = "abc," + rows[199].split(",", 1)[1]
    (tmp_path / "bare.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"bare\.csv: line 200, column 'area': 'abc' is not a number"):
        dataset.prepare(config(tmp_path, tmp_path / "bare.csv", named))
    rows[199], rows[249] = frame.iloc[199].astype(str).str.cat(sep=","), rows[249] + ",1"
    (tmp_path / "bare.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"bare\.csv: line 250 has 5 fields, `data\.column_names` names 4"):
        dataset.prepare(config(tmp_path, tmp_path / "bare.csv", named))
    frame.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet: a Parquet file names its own columns: leave `data\.column_names`"):
        check(config(tmp_path, tmp_path / "t.parquet", named))


def test_a_delimiter_closing_every_line_is_no_column_and_a_value_after_it_is_a_bad_row(tmp_path, small_shards):
    from pipeline.data import dataset
    from pipeline.data.checks import check

    table().to_csv(tmp_path / "plain.csv", index=False)
    lines = [line + "," for line in (tmp_path / "plain.csv").read_text().splitlines()]  # as some exports close them
    (tmp_path / "closed.csv").write_text("\n".join(lines) + "\n")
    cfg = config(tmp_path, tmp_path / "closed.csv")
    check(cfg)
    dataset.prepare(cfg)
    assert examples(cfg) == examples(config(tmp_path, tmp_path / "plain.csv"))

    lines[250] += "x"
    (tmp_path / "closed.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"closed\.csv: line 251, after the last column: 'x' stands under no column "
                                        r"name: name the column in the header"):
        dataset.prepare(config(tmp_path, tmp_path / "closed.csv"))
    skipping = config(tmp_path, tmp_path / "closed.csv", "data.on_bad_input=skip")
    dataset.prepare(skipping)
    assert prepared_rows(skipping) == 299
