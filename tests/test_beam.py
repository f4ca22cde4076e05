"""`pipeline prepare --beam`: the csv and image_folder builders as Apache Beam pipelines prepare what the local path does.

The DirectRunner in multi-process mode stands in for a cluster: its workers are separate
processes that share nothing with the test but the files, as Spark or Dataflow workers would.
"""

from __future__ import annotations

import pytest

from pipeline.cli import main
from pipeline.errors import DataError

from .conftest import ROOT
from .test_streaming import config, examples, shards, table
from .test_tabular import csv_overrides, write_image_folder

pytest.importorskip("apache_beam", reason="the .[beam] extra is not installed")

WORKERS = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def beam_options(flags):
    from pipeline.data import beam

    return beam.options(flags)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The system's temporary folder, for this test: a nightly preparation must leave nothing there."""
    import tempfile

    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def damaged(folder, part: int, line: int, value: str = "abc"):
    """The table folder with one value of ``part-<part>.csv`` at ``line`` (a file line, header = 1) made bad."""
    import pandas as pd

    frame = pd.read_csv(folder / f"part-{part}.csv", dtype=str)
    frame.loc[line - 2, "area"] = value
    frame.to_csv(folder / f"part-{part}.csv", index=False)
    return folder


@pytest.mark.slow
def test_beam_workers_prepare_a_sharded_table_into_exactly_the_rows_classes_and_skips_of_the_local_path(
        tmp_path, monkeypatch, scratch):
    from pipeline.data import dataset, records

    monkeypatch.setattr(records, "SHARD_ROWS", 400)  # 3,000 rows: 8 output shards, each grouped from 4 files
    folder = damaged(shards(table(3000), tmp_path / "in", 4), part=2, line=7)
    here, there = (config(tmp_path / side, folder, "data.on_bad_input=skip") for side in ("here", "beam"))
    dataset.prepare(here)
    dataset.prepare(there, beam_options=beam_options(WORKERS))
    assert not list(scratch.iterdir())  # Beam's job server and stager leave their folders: removed

    assert examples(there) == examples(here) and len(examples(here)) == 2999
    local, distributed = dataset.load(here).spec, dataset.load(there).spec
    assert (distributed.skipped, distributed.class_names) == (local.skipped, local.class_names) == (1, ["flat", "house"])
    written = sorted((tmp_path / "beam" / "tfds" / "csv").rglob("csv-train.tfrecord-*"))
    assert [p.name[-14:] for p in written] == [f"{i:05d}-of-00008" for i in range(8)]  # TFDS's own shard names
    test_labels = [ex[-1] for ex in examples(there, "train[85%:]")]
    assert 0.3 < test_labels.count("flat") / len(test_labels) < 0.7  # the input is sorted by label: shards are not


def test_a_bad_row_under_beam_is_one_line_naming_file_line_and_column_and_leaves_no_dataset(tmp_path, scratch):
    from pipeline.data import dataset

    folder = damaged(shards(table(200), tmp_path / "in", 2), part=1, line=5)
    with pytest.raises(DataError, match=r"^\S*part-1\.csv: line 5, column 'area': 'abc' is not a number \(`data"):
        dataset.prepare(config(tmp_path, folder), beam_options=beam_options([]))
    assert not list((tmp_path / "tfds").rglob("dataset_info.json")) and not list(scratch.iterdir())


def test_an_image_folder_prepared_by_beam_holds_the_local_images_and_counts_the_unreadable_one(tmp_path, tfds_dir):
    import numpy as np

    from pipeline.config import load
    from pipeline.data import dataset

    root = write_image_folder(tmp_path / "pictures", per_class=6, broken=True)

    def prepared(where, beam=None):
        cfg = load(ROOT / "configs/examples/image_folder.yaml",
                   csv_overrides(tmp_path, where, root, "name=pictures", "data.on_bad_input=skip"))
        dataset.prepare(cfg, beam_options=beam)
        raw, info, _ = dataset._read(cfg)
        images = {ex["file"].decode(): (ex["image"], ex["label"]) for split in raw for ex in split.as_numpy_iterator()}
        return images, dataset.load(cfg).spec

    (here, spec_here), (there, spec_there) = prepared(tmp_path / "a"), prepared(tmp_path / "b", beam_options([]))
    assert sorted(there) == sorted(here) and len(here) == 12
    assert all(np.array_equal(there[f][0], here[f][0]) and there[f][1] == here[f][1] for f in here)
    assert spec_there.skipped == spec_here.skipped == 1
    assert spec_there.digest == spec_here.digest  # the same bytes: the same data has one digest


@pytest.mark.parametrize("argv,message", [
    (["configs/digits.yaml", "--beam"], "`pipeline prepare --beam` prepares csv and image_folder datasets; 'digits'"),
    (["configs/examples/csv.yaml", "--", "--runner=DirectRunner"], "Beam options after `--` (--runner=DirectRunner) "
                                                                    "need --beam"),
    (["configs/examples/csv.yaml", "--beam", "--", "--runnr=DirectRunner"], "Invalid Beam options "
                                                                             "--runnr=DirectRunner: unknown option"),
])
def test_prepare_refuses_beam_flags_it_cannot_use_in_one_line(tmp_path, capsys, argv, message):
    table(50).to_csv(tmp_path / "t.csv", index=False)
    paths = [f"workdir={tmp_path}", f"data.data_dir={tmp_path / 'tfds'}",
             *([f"data.path={tmp_path / 't.csv'}", "data.label_key=kind"] if "csv" in argv[0] else [])]
    cut = argv.index("--") if "--" in argv else len(argv)
    assert main(["prepare", *argv[:cut], *paths, *argv[cut:]]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


def test_beam_flags_go_to_prepare_only(capsys):
    with pytest.raises(SystemExit):
        main(["train", "configs/digits.yaml", "--", "--runner=DirectRunner"])
    assert "only `pipeline prepare --beam` takes them" in capsys.readouterr().err
