"""The CLI end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DIGITS, ROOT, run_cli, small_disk, tiny


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tfds_dir):
    """`pipeline train` of the tiny digits config in a fresh process on a new workdir, in a user's environment."""
    workdir = tmp_path_factory.mktemp("cli") / "work"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell: the CLI's own
    return workdir, run_cli("train", str(DIGITS), *tiny(workdir, tfds_dir, "train.baselines=auto", new_store=True),
                            env=env)


@pytest.mark.slow
def test_train_command_trains_tracks_exports_and_prints_a_summary(cli_run):
    workdir, proc = cli_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ("test_accuracy", "vs majority", "best epoch", "run id", "export", "fit"):
        assert label in proc.stdout
    assert (workdir / "exports" / "digits" / "1" / "saved_model.pb").is_file()
    assert (workdir / "mlflow.db").is_file() and (workdir / "mlartifacts").is_dir()
    _quiet(proc)


def _quiet(proc):
    """Quiet by default: none of TensorFlow's import-time native lines, nor MLflow's or TFDS' notices (`-v` shows them)."""
    for noise in ("absl::InitializeLog", "cuInit", "cudart_stub", "cpu_feature_guard", "Creating initial MLflow",
                  "Using custom data configuration", "NodeDef mentions attribute", "Downloading and preparing",
                  "WARNING"):
        assert noise not in proc.stderr + proc.stdout, proc.stderr[-3000:]


@pytest.mark.slow
def test_the_same_config_and_seed_give_the_same_metrics_in_a_fresh_process_and_after_other_runs(cli_run, tmp_path,
                                                                                                tfds_dir):
    """Deterministic ops: a fresh process and one that trained another seed first agree to 1e-6."""
    from mlflow.tracking import MlflowClient

    from pipeline.config import load
    from pipeline.jobs.train import train

    fresh, proc = cli_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{fresh}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    fresh_val_loss = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)]

    other = train(load(DIGITS, tiny(tmp_path / "before", tfds_dir, "seed=7", "tracking.enabled=false", "export.enabled=false")))
    after = train(load(DIGITS, tiny(tmp_path / "after", tfds_dir, "tracking.enabled=false", "export.enabled=false")))
    assert len(fresh_val_loss) == 2 and after.history["val_loss"] == pytest.approx(fresh_val_loss, abs=1e-6)
    assert after.test_metrics["test_accuracy"] == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-6)
    assert other.history["val_loss"] != pytest.approx(fresh_val_loss, abs=1e-6)  # the seed matters


@pytest.mark.slow
def test_augment_preview_command_writes_the_png_quietly(tmp_path, tfds_dir):
    out = tmp_path / "preview.png"
    proc = run_cli("augment-preview", str(DIGITS), *tiny(tmp_path / "work", tfds_dir), "--out", str(out))
    assert proc.returncode == 0 and proc.stdout.strip() == f"Wrote {out}", proc.stderr[-3000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _quiet(proc)


def test_tensorflows_warnings_stay_hidden_after_a_saved_model_is_written(tmp_path):
    """TensorFlow's SavedModel walk sets absl's logger back to absl's own flag when it is done: quieting the logger
    alone let the export's warnings through again (an input named '1st_floor' warned of its Python name)."""
    import logging

    import tensorflow as tf

    from pipeline import runtime

    runtime.quiet_loggers()
    module = tf.Module()
    module.f = tf.function(lambda x: x, input_signature=[tf.TensorSpec([None], name="x")])
    tf.saved_model.save(module, str(tmp_path / "model"))
    assert logging.getLogger("absl").getEffectiveLevel() == logging.ERROR


def test_a_plot_whose_font_is_missing_falls_back_without_a_word(caplog):
    """A matplotlib font cache without its own fonts (one built while a virtual environment was being removed) made
    every plot's text log "findfont: Font family ['STIXGeneral'] not found" to the console."""
    import logging

    from matplotlib import font_manager

    from pipeline import runtime

    runtime.quiet_loggers()
    caplog.set_level(logging.NOTSET)  # every record a logger lets through is kept
    font_manager.findfont(font_manager.FontProperties(family="No Such Font"))
    assert not [r for r in caplog.records if r.name.startswith("matplotlib") and r.levelno >= logging.WARNING]


def test_make_help_lists_the_user_verbs():
    out = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    for target in ("train", "test", "ui", "baseline", "preview", "clean"):
        assert f"make {target}" in out


@pytest.mark.parametrize("key, code", [("train.epochs", 0), ("train.epoch", 2)])
def test_the_command_exits_with_mains_code_its_objects_frozen_out_of_the_last_collection(key, code):
    """`python -m pipeline` (and the `pipeline` script) freezes the job's objects before it exits: the
    interpreter's shutdown then does not walk a TensorFlow process's half million and more for cycles."""
    script = ("import atexit, gc, runpy, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count())); "
              f"sys.argv = ['pipeline', 'config', 'get', {str(DIGITS)!r}, {key!r}]; "
              "runpy.run_module('pipeline', run_name='__main__', alter_sys=True)")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    frozen = proc.stdout.splitlines()[-1].split()
    assert frozen[0] == "frozen" and int(frozen[1]) > 1000


def test_sync_names_an_empty_folder_or_a_damaged_spool_in_one_line(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["sync", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"error: Nothing to sync: no spool.jsonl in {tmp_path} (a run folder, or a workdir)\n"
    spool = tmp_path / "runs" / "abc" / "spool.jsonl"
    spool.parent.mkdir(parents=True)
    for header in ('{"run_id": "abc", "config": {"bad": 1}}\n', ""):
        spool.write_text(header)
        assert main(["sync", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {spool} is damaged: its first line is no run's header (") and err.count("\n") == 1
        assert err.endswith("); nothing was synced\n") and spool.read_text() == header  # left as it was


def test_several_workers_under_a_strategy_that_would_train_each_alone_are_refused(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["train", str(DIGITS), "--workers", "2", f"workdir={tmp_path}", "train.strategy=mirrored"]) == 2
    assert capsys.readouterr().err == ("error: Invalid `train.strategy`: 'mirrored' would train each of the 2 workers "
                                       "alone; several workers train one model under 'multi_worker' (or 'auto').\n")
    assert not (tmp_path / "workers").exists()  # no worker was started


@pytest.mark.parametrize("flag,value,message", [("--poll", "0", "Invalid --poll 0: expected at least 0.05"),
                                                ("--keep", "0", "Invalid --keep 0: expected at least 1")])
def test_serve_refuses_settings_that_busy_loop_or_serve_nothing(tmp_path, capsys, flag, value, message):
    from pipeline.cli import main

    (tmp_path / "exports").mkdir()
    assert main(["serve", "--root", str(tmp_path / "exports"), flag, value]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_serve_finds_a_busy_port_before_loading_any_model(tmp_path, trained):
    """One line and exit 2 at once; TensorFlow (needed to load a model) never imported."""
    import shutil
    import socket
    import sys

    shutil.copytree(trained[1].export_path, tmp_path / "exports" / "digits" / "1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        script = ("import sys; from pipeline.cli import main; "
                  f"rc = main(['serve', '--root', {str(tmp_path / 'exports')!r}, '--port', '{port}']); "
                  "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED'); sys.exit(rc)")
        proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "TF_NOT_IMPORTED" in proc.stdout, proc.stderr
    assert proc.stderr.strip().startswith(f"error: Cannot listen on 127.0.0.1:{port}: ")


def test_a_server_restarted_right_after_serving_gets_its_port_back(tmp_path):
    """The connections a stopped server closed wait a minute in TIME_WAIT on its port; they do not hold it."""
    import socket

    from serving.server import build_parser, check

    with socket.socket() as old:
        old.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        old.bind(("127.0.0.1", 0))
        old.listen()
        port = old.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = old.accept()
        served.close()  # the server closes first: its side of the connection waits in TIME_WAIT
        client.close()
    local_states = [(line.split()[1], line.split()[3]) for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    assert (f"0100007F:{port:04X}", "06") in local_states  # 06: TIME_WAIT
    (tmp_path / "exports").mkdir()
    check(build_parser().parse_args(["--root", str(tmp_path / "exports"), "--port", str(port)]), tmp_path / "exports")


def test_mlflow_telemetry_is_off_unless_the_config_opts_in(monkeypatch):
    import os

    from pipeline import runtime
    from pipeline.config import load

    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    runtime.configure(load(DIGITS))
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    runtime.configure(load(DIGITS, ["tracking.telemetry=true"]))
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"


@pytest.mark.slow
def test_ui_prints_the_url_of_the_experiments_runs_and_serves_it_on_loopback(trained):
    import json
    import signal
    import time
    import urllib.request

    from pipeline.train.cluster import free_ports

    cfg, _ = trained
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "ui", str(DIGITS), f"workdir={cfg.workdir}",
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"Runs of experiment 'digits': http://127.0.0.1:{port}/#/experiments/")
        experiment_id = line.strip().split("/experiments/")[1].split("/")[0]
        deadline, page = time.time() + 90, None
        while time.time() < deadline and page is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment_id}")
                page = json.loads(urllib.request.urlopen(request, timeout=5).read())
            except OSError:
                time.sleep(0.5)
        assert page["experiment"]["name"] == "digits"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.parametrize("answer,message", [
    ("2.22.0", "The tracking server {uri} runs MLflow 2.22.0; this pipeline's client is MLflow 3."),
    ("<html>hello</html>", "{uri} is not an MLflow tracking server (GET /version answered 200): check tracking.uri"),
])
def test_a_tracking_server_of_another_mlflow_major_version_or_none_is_one_line_before_any_work(
        tmp_path, capsys, answer, message):
    """A real HTTP server on loopback stands in for an old MLflow server (or a web page at a mistyped address)."""
    import http.server
    import threading

    from pipeline.cli import main

    class Version(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Version)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_port}"
    try:
        assert main(["train", str(DIGITS), f"workdir={tmp_path}", f"tracking.uri={uri}"]) == 5
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message.format(uri=uri)}") and err.count("\n") == 1
    assert not (tmp_path / "tfds").exists()


def test_a_tracking_host_that_does_not_resolve_is_one_line_naming_it(tmp_path, capsys):
    from pipeline.cli import main

    uri = "http://mlflow-server.invalid:5000"  # .invalid never resolves (RFC 2606)
    assert main(["train", str(DIGITS), f"workdir={tmp_path}", f"tracking.uri={uri}"]) == 5
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot reach the tracking server {uri}: ") and err.count("\n") == 1


# ---- a full disk ------------------------------------------------------------------------------


@pytest.mark.parametrize("failure,where", [
    (OSError(28, "No space left on device", "/w/runs/r/plot.png"), " writing /w/runs/r/plot.png"),
    (RuntimeError("Can't decrement id ref count (file write failed: time = Sun Dec  6 04:24:11 2026\n, filename = "
                  "'/w/best.weights.h5', file descriptor = 3, errno = 28, error message = 'No space left on device')"),
     " writing /w/best.weights.h5"),  # h5py
    (RuntimeError("{{function_node __wrapped__SaveV2}} /e/digits/.tmp-1/model/variables/part-0; No space left on "
                  "device [Op:SaveV2]"), " writing /e/digits/.tmp-1/model/variables/part-0"),  # TensorFlow
    (OSError(122, "Disk quota exceeded"), ""),
])
def test_a_full_disk_is_one_error_naming_the_file_in_each_librarys_wording(failure, where):
    from pipeline.errors import disk_full

    wrapped = RuntimeError("the client's wrapper")  # MLflow and SQLAlchemy raise theirs from the store's error
    wrapped.__cause__ = failure
    assert str(disk_full(wrapped)) == (f"No space left on device{where}: free some space, or give workdir, "
                                       "data.data_dir or export.root a larger disk, and run again")
    sqlite = RuntimeError("(sqlite3.OperationalError) database or disk is full")
    assert str(disk_full(sqlite)).startswith("No space left on device: ")
    assert disk_full(OSError(13, "Permission denied", "/w")) is None and disk_full(ValueError("x")) is None


def test_weights_are_not_begun_without_room_for_them(tmp_path):
    """HDF5, failing half way, keeps the file open with its unwritten cache, and its close at the process's
    exit crashed it (SIGSEGV): the room is checked first, and the estimate covers the file."""
    import errno

    import keras

    from pipeline.files import _weights_bytes, save_weights

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)  # its moments are in the file too
    roomy = save_weights(model, tmp_path / "m.weights.h5")
    assert roomy.stat().st_size <= _weights_bytes(model) <= roomy.stat().st_size + 2**17  # no refusal of room to spare
    with small_disk(tmp_path / "disk", "64k") as disk:
        with pytest.raises(OSError) as failure:
            save_weights(model, disk / "m.weights.h5")
        assert failure.value.errno == errno.ENOSPC and failure.value.filename == str(disk / "m.weights.h5")
        assert not list(disk.iterdir())


def test_a_disk_that_fills_up_during_the_export_ends_in_one_line_and_publishes_nothing(tmp_path, tfds_dir, capsys):
    from mlflow.tracking import MlflowClient

    from pipeline.cli import main

    workdir = tmp_path / "work"
    with small_disk(tmp_path / "exports", "16k") as disk:
        assert main(["train", str(DIGITS), *tiny(workdir, tfds_dir, f"export.root={disk}")]) == 74  # EX_IOERR
        err = capsys.readouterr().err
        (line,) = [line for line in err.splitlines() if line.startswith("error:")]
        assert line.startswith(f"error: No space left on device writing {disk}/digits/.tmp-") and "Traceback" not in err
        assert [p.name for p in (disk / "digits").iterdir()] == []  # no version, no temporary folder
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED" and client.search_registered_models() == []
