"""Config: typed, validated before TensorFlow is imported, one-line errors naming the field."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from pipeline.config import ExperimentConfig, load
from pipeline.config.loading import read_yaml
from pipeline.errors import ConfigError

from .conftest import ROOT

# Experiment configs; configs/studies/ holds study files (tests/test_study.py validates those).
SHIPPED = sorted(p for p in (ROOT / "configs").glob("**/*.yaml") if "studies" not in p.parts)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    assert isinstance(load(path), ExperimentConfig)


def test_overrides_win_over_yaml_and_yaml_over_defaults():
    cfg = load(ROOT / "configs/digits.yaml", ["train.epochs=3", "model.dropout=0.3"])
    assert (cfg.train.epochs, cfg.model.dropout) == (3, 0.3)
    assert cfg.data.batch_size == 32  # from the YAML
    assert cfg.data.shuffle_buffer == 2048  # a default


def test_paths_default_under_workdir():
    cfg = load(None, ["workdir=/tmp/x", "name=exp"])
    assert cfg.data.data_dir == "/tmp/x/tfds"
    assert cfg.tracking.uri == "sqlite:////tmp/x/mlflow.db"
    assert cfg.export.root == "/tmp/x/exports"
    assert (cfg.tracking.experiment, cfg.export.model_name) == ("exp", "exp")


def test_paths_from_home_are_read_as_a_shell_reads_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load(ROOT / "configs/examples/csv.yaml", ["workdir=~/work", "data.path=~/sales.csv", "export.root=~/exports"])
    assert (cfg.workdir, cfg.data.path, cfg.data.data_dir) == (f"{tmp_path}/work", f"{tmp_path}/sales.csv",
                                                               f"{tmp_path}/work/tfds")
    assert (cfg.export.root, cfg.tracking.uri) == (f"{tmp_path}/exports", f"sqlite:///{tmp_path}/work/mlflow.db")


@pytest.mark.parametrize("example, path, name", [
    ("csv", "sales/2024 orders.csv", "2024_orders"), ("csv", "data/shards/*.parquet", "shards"),
    ("image_folder", "/data/x-rays/", "x-rays"), ("series", "load.csv", "load"), ("backbone", "pets", "pets")])
def test_a_users_data_names_the_experiment_its_exports_and_model_unless_name_is_set(example, path, name):
    """Two tables trained from one example config must not share an experiment, a model name and its versions."""
    cfg = load(ROOT / f"configs/examples/{example}.yaml", [f"data.path={path}"])
    assert (cfg.name, cfg.tracking.experiment, cfg.export.model_name) == (name, name, name)
    assert load(ROOT / f"configs/examples/{example}.yaml", [f"data.path={path}", "name=mine"]).export.model_name == "mine"


def test_config_is_frozen():
    cfg = load(None)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.model.dropout = 0.5


def test_override_can_address_list_items():
    cfg = load(ROOT / "configs/digits.yaml", ["augment.layers.0.degrees=20"])
    assert cfg.augment.layers[0].degrees == 20


BAD_OVERRIDES = {
    "unknown key": (["model.dropuot=0.3"], "Unknown key `model.dropuot`; did you mean `model.dropout`?"),
    "dropout out of range": (["model.dropout=1.5"], "Invalid value for `model.dropout`: 1.5. Expected a float in [0, 1)."),
    "negative lambda": (["regularization.l2=-0.1"], "Invalid value for `regularization.l2`: -0.1. Expected a float in [0, inf)."),
    "unknown optimizer": (["optimizer.name=adamx"], "Invalid value for `optimizer.name`: 'adamx'. Expected one of 'sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'rmsprop' or 'adagrad'; did you mean 'adam'?"),
    "unknown layer": (["augment.layers=[{type: rotate}]"], "Invalid value for `augment.layers[0].type`: 'rotate'."),
    "layer without a type": (["augment.layers=[{mode: horizontal}]"],
                             "Invalid value for `augment.layers[0]`: {'mode': 'horizontal'}. It needs a `type` key (rotation, "),
    "search range without a type": (["tune.space={optimizer.learning_rate: {min: 0.001, max: 0.1}}"],
                                    "Invalid value for `tune.space['optimizer.learning_rate']`: {'min': 0.001, 'max': 0.1}. "
                                    "It needs a `type` key (choice, int, float)."),
    "unknown model": (["model.name=resnet"], "Invalid value for `model.name`: 'resnet'. Expected one of 'cnn', 'mlp', 'tabular_mlp', 'recommender', 'lstm', 'gru', 'conv1d', 'backbone' or 'audio_cnn'."),
    "wrong type": (["train.epochs=many"], "Invalid value for `train.epochs`: 'many'. Expected an integer in [1, inf)."),
    "lambda missing": (["regularization.kernel=l1"], "Invalid `regularization`: `l1` must be > 0 when kernel is 'l1'."),
    "bad override": (["epochs"], "Invalid override `epochs`: expected key=value"),
    "seed beyond numpy's range": (["seed=4294967296"], "Invalid value for `seed`: 4294967296. Expected an integer in [0, 4294967296)."),
    "model name with a path": (["export.model_name=../../evil"], "Invalid value for `export.model_name`: '../../evil'. String should match pattern"),
    "infinite learning rate": (["optimizer.learning_rate=.inf"], "Invalid value for `optimizer.learning_rate`: inf. Expected a finite number."),
    "unknown delimiter": (["data.delimiter=:"], "Invalid value for `data.delimiter`: ':'. Expected one of ',', ';', "),
    "decimal comma between commas": (["data.decimal=,"], "Invalid `data`: `decimal` cannot be the delimiter (',')"),
    "thousands as the decimal mark": (["data.delimiter=;", "data.decimal=,", "data.thousands=,"],
                                      "Invalid `data`: `thousands` cannot be the decimal mark (',')"),
    "renamed data.features": (["data.features=[image]"], "`data.features` was renamed: use `data.columns`."),
    "renamed column_types": (["data.column_types={a: int}"], "`data.column_types` was renamed: use `data.dtypes`."),
    "renamed features.types": (["features.types={a: numeric}"], "`features.types` was renamed: use `features.kinds`."),
    "renamed early stopping mode": (["train.early_stopping.mode=max"],
                                    "`train.early_stopping.mode` was renamed: use `train.early_stopping.direction`."),
}


@pytest.mark.parametrize("overrides,message", BAD_OVERRIDES.values(), ids=BAD_OVERRIDES.keys())
def test_bad_values_name_the_field_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as err:
        load(ROOT / "configs/digits.yaml", overrides)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_a_missing_key_says_what_it_holds():
    with pytest.raises(ConfigError, match=r"^Missing required key `tune.space`: Dotted config path -> parameter; .*"
                                          r"e.g. tune.space='\{model.width: \[64, 128\]"):
        load(None, ["tune.max_trials=3"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"Config file not found: .*nope\.yaml"):
        load(tmp_path / "nope.yaml")


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  dropout: [0.1\ntrain: {}\n")
    with pytest.raises(ConfigError, match=r"Malformed YAML in .*bad\.yaml \(line \d+, column \d+\)"):
        load(bad)


def test_a_key_given_twice_is_refused_with_both_lines_unless_merged_in_by_yaml(tmp_path):
    """Plain YAML keeps the last of two equal keys: a second ``data:`` section would drop the first whole."""
    twice = tmp_path / "twice.yaml"
    twice.write_text("data:\n  dataset: csv\nmodel:\n  width: 8\ndata:\n  path: x.csv\n")
    with pytest.raises(ConfigError, match=r"^Malformed YAML in .*twice\.yaml \(line 5, column 1\): the key 'data' "
                                          r"appears twice in one mapping \(first on line 1\)"):
        load(twice)
    with pytest.raises(ConfigError, match=r"^Invalid override `augment.layers=\[\{type: flip, type: rotation\}\]`: "
                                          r"the key 'type' appears twice"):
        load(None, ["augment.layers=[{type: flip, type: rotation}]"])
    merged = tmp_path / "merged.yaml"  # YAML's own way to override: a merge key's values give way
    merged.write_text("x-small: &small {width: 8, depth: 1}\nmodel:\n  <<: *small\n  width: 16\n")
    assert read_yaml(merged)["model"] == {"width": 16, "depth": 1}


BAD_CLI_CASES = {
    "unknown key": (["configs/digits.yaml", "model.dropuot=0.3"], "Unknown key `model.dropuot`"),
    "out of range": (["configs/digits.yaml", "model.dropout=1.5"], "`model.dropout`: 1.5"),
    "negative lambda": (["configs/digits.yaml", "regularization.l2=-1"], "`regularization.l2`"),
    "unknown optimizer": (["configs/digits.yaml", "optimizer.name=adamx"], "`optimizer.name`"),
    "unknown layer": (["configs/digits.yaml", "augment.layers=[{type: blur}]"], "`augment.layers[0].type`"),
    "missing file": (["configs/nope.yaml"], "Config file not found: configs/nope.yaml"),
    "malformed yaml": (["{bad}"], "Malformed YAML in"),
}


@pytest.mark.parametrize("args,message", BAD_CLI_CASES.values(), ids=BAD_CLI_CASES.keys())
def test_bad_config_exits_2_with_one_line_before_tensorflow_and_writes_nothing(tmp_path, args, message):
    if args == ["{bad}"]:
        bad = tmp_path / "bad.yaml"
        bad.write_text("train: {epochs: 3\n")
        args = [str(bad)]
    workdir = tmp_path / "work"
    script = (
        "import sys; from pipeline.cli import main; "
        f"rc = main(['train', *{args!r}, 'workdir={workdir}']); "
        "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED'); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "TF_NOT_IMPORTED" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not workdir.exists()


def test_help_and_the_python_api_import_no_tensorflow():
    script = (
        "import sys, pipeline; from pipeline.cli import main\n"
        "cfg = pipeline.load_config('configs/digits.yaml', ['train.epochs=3'])\n"
        "assert callable(pipeline.train) and cfg.train.epochs == 3\n"
        "import pipeline.train.loop, pipeline.tune.space, pipeline.report.page  # stages named like the API\n"
        "assert all(callable(f) for f in (pipeline.train, pipeline.tune, pipeline.report))\n"
        "api = ('load_config', 'train', 'tune', 'backtest', 'retrain', 'run_study', 'report', 'prepare',\n"
        "       'augment_preview')  # as the README\n"
        "assert all(callable(getattr(pipeline, name)) for name in api) and set(api) == set(pipeline.__all__)\n"
        "try: main(['--help'])\nexcept SystemExit as e: code = e.code\n"
        "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED', code)"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "TF_NOT_IMPORTED 0" in proc.stdout
    for command in ("train", "config", "augment-preview"):
        assert command in proc.stdout


def test_config_show_prints_the_resolved_config():
    import yaml

    from .conftest import run_cli

    proc = run_cli("config", "show", "configs/digits.yaml", "train.epochs=3", "workdir=/tmp/w")
    assert proc.returncode == 0, proc.stderr
    shown = yaml.safe_load(proc.stdout)
    assert shown["train"]["epochs"] == 3
    assert shown["tracking"]["uri"] == "sqlite:////tmp/w/mlflow.db"
    assert ExperimentConfig.model_validate(shown).train.epochs == 3


def test_registries_cover_every_name_the_config_allows():
    import typing

    from pipeline.config.data import AugmentLayer
    from pipeline.config.schema import (
        ModelConfig,
        OptimizerConfig,
        ScheduleConfig,
        TrainConfig,
    )
    from pipeline.data.augment import AUDIO_SPECTROGRAM_LAYERS, AUDIO_WAVE_LAYERS, LAYERS
    from pipeline.models.registry import MODELS
    from pipeline.train.optim import OPTIMIZERS, SCHEDULES
    from pipeline.train.strategy import STRATEGIES

    def names(model, field):
        return set(typing.get_args(model.model_fields[field].annotation))

    assert set(OPTIMIZERS) == names(OptimizerConfig, "name")
    assert set(SCHEDULES) == names(ScheduleConfig, "name")
    assert set(MODELS) == names(ModelConfig, "name")
    assert set(STRATEGIES) == names(TrainConfig, "strategy")
    layer_types = {typing.get_args(c.model_fields["type"].annotation)[0]
                   for c in typing.get_args(typing.get_args(AugmentLayer)[0])}
    assert set(LAYERS) | set(AUDIO_WAVE_LAYERS) | set(AUDIO_SPECTROGRAM_LAYERS) == layer_types


def test_two_clipping_modes_are_rejected_before_keras_sees_them():
    with pytest.raises(ConfigError, match=r"Invalid `optimizer`: set `clipnorm` or `clipvalue`, not both"):
        load(None, ["optimizer.clipnorm=1", "optimizer.clipvalue=1"])


def test_config_get_prints_one_resolved_value_and_schema_the_json_schema(capsys):
    import json

    from pipeline.cli import main

    assert main(["config", "get", "configs/digits.yaml", "tracking.uri", "workdir=/tmp/w"]) == 0
    assert capsys.readouterr().out.strip() == "sqlite:////tmp/w/mlflow.db"
    assert main(["config", "get", "configs/digits.yaml", "train.epochz"]) == 2
    assert "Unknown key `train.epochz`; did you mean `train.epochs`?" in capsys.readouterr().err
    assert main(["config", "get", "configs/digits.yaml", "trian.early_stopping.patience"]) == 2
    assert "did you mean `train.early_stopping.patience`?" in capsys.readouterr().err
    assert main(["config", "get", "configs/digits.yaml", "model.width.units"]) == 2
    assert "Unknown key `model.width.units`: `model.width` is a value, not a section" in capsys.readouterr().err
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    dropout = schema["$defs"]["ModelConfig"]["properties"]["dropout"]
    assert dropout["description"].startswith("Dropout rate") and (dropout["minimum"], dropout["exclusiveMaximum"]) == (0, 1)


def test_overrides_may_follow_options():
    from pipeline.cli import parse

    args = parse(["train", "configs/digits.yaml", "--workers", "2", "train.epochs=2"])
    assert (args.workers, args.overrides) == (2, ["train.epochs=2"])
    with pytest.raises(SystemExit):
        parse(["train", "configs/digits.yaml", "--workers", "2", "--nope"])


@pytest.mark.parametrize("argv, message", [
    (["train", "configs/digits.yaml", "--workers", "0"], "argument --workers: expected at least 1, got 0"),
    (["tune", "configs/digits.yaml", "--workers", "-1"], "argument --workers: expected at least 0, got -1"),  # 0: in process
    (["backtest", "configs/electricity.yaml", "--folds", "0"], "argument --folds: expected at least 1, got 0"),
    (["augment-preview", "configs/digits.yaml", "--images", "two"], "argument --images: expected a whole number, got 'two'"),
])
def test_an_option_that_counts_is_refused_below_its_least(argv, message, capsys):
    """0 workers trained as one, and 0 folds backtested the default five; `tune --workers 0` runs the trials in
    its own process."""
    from pipeline.cli import parse

    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2 and capsys.readouterr().err.strip().endswith(message)
    assert parse(["tune", "configs/digits.yaml", "--workers", "0"]).workers == 0


@pytest.mark.parametrize("name,expected", [("val_accuracy", "max"), ("test_rmse_log", "min"), ("loss", "min"),
                                           ("challenger_accuracy", "max"), ("val_mae", "min"),
                                           ("test_recall_at_10", "max")])
def test_every_metric_has_one_direction_owned_by_the_tasks(name, expected):
    from pipeline.tasks import direction

    assert direction(name) == expected


def test_an_unknown_metric_has_no_direction():
    from pipeline.tasks import direction

    with pytest.raises(ConfigError, match="Unknown metric 'val_f1'"):
        direction("val_f1")


def test_a_directory_or_a_binary_file_as_config_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^Config path .* is a directory: give a YAML file$"):
        load(tmp_path)
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"^Config file .*latin1\.yaml is not UTF-8 text \(byte 0xe9 at offset 9\)$"):
        load(binary)


def test_a_config_that_expands_past_the_limit_is_refused_quickly(tmp_path):
    """Billion laughs: ten lines of nested aliases would be 10**9 values for validation to walk."""
    laughs = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]" for i in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(laughs) + "\n")
    with pytest.raises(ConfigError, match=r"expands to more than 100,000 values \(nested YAML aliases\?\)$"):
        load(path)


@pytest.mark.parametrize("key", ["workdir", "export.root"])
def test_an_unwritable_workdir_or_export_root_is_found_before_anything_runs(tmp_path, key):
    import os

    import pipeline

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: use a path under a file instead
            (tmp_path / "file").write_text("")
            locked = tmp_path / "file" / "work"
        cfg = load(ROOT / "configs/digits.yaml", [f"workdir={tmp_path / 'work'}", f"{key}={locked}"])
        with pytest.raises(ConfigError, match=rf"^Invalid `{key}`: cannot write in {locked} \("):
            pipeline.train(cfg)
    finally:
        (tmp_path / "locked").chmod(0o700)


def test_an_auto_batch_gives_about_fifty_steps_an_epoch_within_bounds():
    from pipeline.data.dataset import auto_batch

    assert [auto_batch(n) for n in (10, 354, 2_051, 7_000, 10_000_000)] == [8, 8, 32, 128, 256]
    assert load(None, ["data.batch_size=auto"]).data.batch_size == "auto"
    with pytest.raises(ConfigError, match=r"^Invalid value for `data.batch_size`: 'autoo'. Expected a valid integer, "
                                          r"or 'auto'; did you mean 'auto'\?$"):
        load(None, ["data.batch_size=autoo"])
