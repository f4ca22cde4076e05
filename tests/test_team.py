"""Team tracking: a real PostgreSQL, and a real ``mlflow server`` over it with MLflow's basic authentication."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.train.cluster import free_ports

from .conftest import DIGITS, ROOT, tiny

pytestmark = pytest.mark.slow

ADMIN = ("admin", "admin-secret-1")
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
if not PG_BIN and not shutil.which("initdb"):
    pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does)",
                allow_module_level=True)


def _wait(url: str, proc: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    import requests

    deadline = time.time() + seconds
    while True:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.3)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """PostgreSQL on a loopback port (as the ``postgres`` user when run as root: initdb refuses root),
    then ``mlflow server --app-name basic-auth`` over it with a local artifact store."""
    from mlflow.server.auth.client import AuthServiceClient

    root = tmp_path_factory.mktemp("team")
    bindir = Path(PG_BIN[-1]) if PG_BIN else Path(shutil.which("initdb")).parent
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    cluster = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))  # pytest's folders are root's alone
    data, sock = cluster / "data", cluster / "sock"
    for folder in (cluster, data, sock):
        folder.mkdir(exist_ok=True)
        if owner:
            os.chown(folder, owner.pw_uid, owner.pw_gid)

    def as_db(*cmd: str) -> None:
        become = (lambda: (os.setgid(owner.pw_gid), os.setuid(owner.pw_uid))) if owner else None
        subprocess.run([str(bindir / cmd[0]), *cmd[1:]], preexec_fn=become, check=True, capture_output=True)

    pg = free_ports(1)[0]
    as_db("initdb", "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8", "--no-sync")
    as_db("pg_ctl", "-D", str(data), "-l", str(sock / "pg.log"), "-w", "-o", f"-h 127.0.0.1 -p {pg} -k {sock} -F",
          "start")
    server = None
    try:
        as_db("createdb", "-h", "127.0.0.1", "-p", str(pg), "-U", "mlflow", "mlflow")
        ini = root / "auth.ini"
        ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root}/auth.db\n"
                       f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        port, log = free_ports(1)[0], root / "mlflow.log"
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--backend-store-uri", f"postgresql://mlflow@127.0.0.1:{pg}/mlflow",
             "--artifacts-destination", str(root / "artifacts")],
            env={**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "tests"},
            stdout=log.open("w"), stderr=subprocess.STDOUT)
        uri = f"http://127.0.0.1:{port}"
        _wait(f"{uri}/health", server, log)

        admin = AuthServiceClient(uri)  # MLflow's own client of its user and permission API
        with _as_admin():
            admin.create_user("trainer", "trainer-secret-1")
            admin.create_user("reader", "reader-secret-1")
        yield SimpleNamespace(uri=uri, root=root, admin=admin)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        as_db("pg_ctl", "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(cluster, ignore_errors=True)


def _as_admin():
    """Sign MLflow's clients in as the administrator, for what only it may do (users, permissions)."""
    from unittest import mock

    return mock.patch.dict(os.environ, {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]})


def _as(user: str, password: str) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password,
            "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def _cli(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_run_lands_on_the_team_server_with_credentials_from_the_environment_only(team, tmp_path, tfds_dir,
                                                                                    monkeypatch):
    from mlflow.tracking import MlflowClient

    proc = _cli("train", str(DIGITS), *tiny(tmp_path / "work", tfds_dir, f"tracking.uri={team.uri}",
                                            "train.epochs=2", "export.model_name=digits_team"),
                env=_as("trainer", "trainer-secret-1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")  # a reader browses what the trainer wrote
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "reader-secret-1")
    client = MlflowClient(team.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.user"] == "trainer"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    assert client.get_model_version_by_alias("digits_team", "champion").run_id == run.info.run_id
    logged = [*run.data.params.values(), *run.data.tags.values(), proc.stdout, proc.stderr,
              *(p.read_text(errors="ignore") for p in (team.root / "artifacts").rglob("*.yaml"))]
    assert not any("trainer-secret-1" in text for text in logged)  # the password is never logged
    assert any((team.root / "artifacts").rglob("saved_model.pb"))  # artifacts went to the server...
    assert not (tmp_path / "work" / "mlflow.db").exists()  # ...and nothing to the embedded store


def test_bad_credentials_or_addresses_fail_in_one_line_before_any_work(team, tmp_path):
    """Each names the server (never the password) and exits before data or TensorFlow are touched."""
    cases = [
        (team.uri, _as("trainer", "wrong-secret"), 5,
         f"The tracking server {team.uri} refused the credentials of user 'trainer'"),
        (team.uri, {k: v for k, v in _as("x", "x").items() if not k.startswith("MLFLOW_TRACKING_")}, 5,
         f"The tracking server {team.uri} refused no credentials"),
        (f"http://127.0.0.1:{free_ports(1)[0]}", _as("trainer", "trainer-secret-1"), 5, "Cannot reach the tracking server"),
        (f"{team.uri}/mlflw", _as("trainer", "trainer-secret-1"), 5,
         f"{team.uri}/mlflw is not an MLflow tracking server (GET /version answered 403)"),
        (team.uri.replace("://", "://trainer:trainer-secret-1@"), _as("trainer", "trainer-secret-1"), 2,
         "Invalid `tracking.uri`: holds a password"),
    ]
    for uri, env, code, message in cases:
        started = time.time()
        proc = _cli("train", str(DIGITS), f"workdir={tmp_path}", f"tracking.uri={uri}", env=env, timeout=60)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == code and len(lines) == 1 and message in lines[0], (uri, proc.stderr[-2000:])
        assert "secret" not in proc.stderr and time.time() - started < 20
        assert not (tmp_path / "tfds").exists()  # nothing was prepared


def test_a_reader_cannot_move_the_champion_and_the_retrain_account_can(team, tmp_path, monkeypatch):
    from pipeline.config import load
    from pipeline.track import registry
    from pipeline.track.mlflow import tracking_client
    from pipeline.track.server import TrackingError

    cfg = load(DIGITS, [f"workdir={tmp_path}", f"tracking.uri={team.uri}", "export.model_name=digits_perm"])
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    client, experiment = tracking_client(cfg)
    run = client.create_run(experiment)
    first = registry.register(cfg, run.info.run_id, tmp_path / "1", {}, alias="champion")
    second = registry.register(cfg, run.info.run_id, tmp_path / "2", {}, alias=None)
    with _as_admin():
        team.admin.create_user("retrain", "retrain-secret-1")
        team.admin.grant_user_permission("retrain", "registered_model", "digits_perm", "MANAGE")

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "reader-secret-1")
    assert registry.by_alias(cfg, "champion").version == first.version  # READ: browses
    with pytest.raises(TrackingError, match=r"^User 'reader' may not move the 'champion' alias of model "
                                            r"'digits_perm' on http://127\.0\.0\.1:\d+: the registry refused it"):
        registry.set_alias(cfg, "champion", second.version)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(TrackingError, match="may not read the 'champion' alias"):  # never "no champion"
        registry.by_alias(cfg, "champion")

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "retrain")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "retrain-secret-1")
    registry.set_alias(cfg, "champion", second.version)
    assert registry.by_alias(cfg, "champion").version == second.version
