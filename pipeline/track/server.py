"""A tracking server, checked before any work: reachable, an MLflow server of this major version, credentials accepted.

MLflow's client would find out at its first write, after data preparation, and it retries an
unreachable host for minutes. A night's retraining should fail in a second, with one line
that names the server, instead.

Credentials come from the environment only, as MLflow's client reads them:
``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``, or ``MLFLOW_TRACKING_TOKEN``.
A tracking URI that holds a password is refused by the config (it would be logged with every
run), and every message here shows the URI without its user part.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import PipelineError

TIMEOUT = 10  # seconds per request


class TrackingError(PipelineError):
    """The tracking store cannot be used: unreachable, incompatible, or the credentials refused."""

    exit_code = 5


class Unreachable(TrackingError):
    """The tracking server went away after the checks (a restart, a network cut): it may come back."""


def sqlite_file(uri: str):
    """The file of an embedded SQLite store's ``uri`` (a Path), or None for a server."""
    from pathlib import Path

    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def public(uri: str) -> str:
    """``uri`` without a user or password in it."""
    parts = urlsplit(uri)
    if not parts.username and not parts.password:
        return uri
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


def check(uri: str) -> None:
    """Raise a TrackingError if the server at ``uri`` cannot take this pipeline's runs; stores on disk pass."""
    if not uri.startswith(("http://", "https://")):
        return
    from importlib.metadata import version as installed

    import requests

    shown, base = public(uri), uri.rstrip("/")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")

    def ask(method: str, path: str, **kwargs):
        try:
            return requests.request(method, base + path, timeout=TIMEOUT, verify=_verify(), **_credentials(), **kwargs)
        except requests.exceptions.SSLError as exc:
            raise TrackingError(f"The tracking server {shown} failed the TLS check ({reason(exc)}): set "
                                "MLFLOW_TRACKING_SERVER_CERT_PATH to its CA bundle") from None
        except requests.exceptions.Timeout:
            raise TrackingError(f"The tracking server {shown} did not answer within {TIMEOUT} s") from None
        except requests.exceptions.RequestException as exc:
            raise TrackingError(f"Cannot reach the tracking server {shown}: {reason(exc)}") from None

    answer = ask("GET", "/version")
    if answer.status_code == 401:
        given = f"the credentials of user {user!r}" if user else "no credentials"
        raise TrackingError(f"The tracking server {shown} refused {given}: set MLFLOW_TRACKING_USERNAME and "
                            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment")
    version = answer.text.strip()
    if not answer.ok or not version[:1].isascii() or not version[:1].isdigit():
        raise TrackingError(f"{shown} is not an MLflow tracking server (GET /version answered {answer.status_code}): "
                            "check tracking.uri")
    client = installed("mlflow")  # importing MLflow would cost a second here
    if version.split(".")[0] != client.split(".")[0]:
        raise TrackingError(f"The tracking server {shown} runs MLflow {version[:40]}; this pipeline's client is "
                            f"MLflow {client}, and the major versions must match")
    answer = ask("POST", "/api/2.0/mlflow/experiments/search", json={"max_results": 1})
    if answer.status_code == 403:
        raise TrackingError(f"User {user!r} may not read experiments on the tracking server {shown}: ask its "
                            "administrator for READ (and EDIT on the experiment to log runs)")
    if not answer.ok:
        raise TrackingError(f"The tracking server {shown} answered {answer.status_code} to a search of "
                            f"experiments: {answer.text[:200]}")


def _credentials() -> dict:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"headers": {"Authorization": f"Bearer {token}"}}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    return {"auth": (user, password or "")} if user else {}


def _verify():
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return False
    return os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True


def reason(exc: Exception) -> str:
    """The innermost cause of a requests error ("Connection refused"), not its nested repr."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                   "No route to host", "Network is unreachable", "certificate verify failed"):
        if marker in text:
            return marker
    return text.split(": ")[-1][:200]
