"""Run the REST server: a ``Repository`` of the export root behind uvicorn."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="serving", description="TF Serving's REST API over an export root.")
    parser.add_argument("--workdir", default="work", help="the experiments' workdir (default work)")
    parser.add_argument("--root", help="export root: <root>/<model>/<version>/ (default <workdir>/exports)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501, help="TF Serving's REST port by default (8501)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between scans for new versions (default 1)")
    parser.add_argument("--keep", type=int, default=2, help="newest versions kept loaded per model (default 2)")
    parser.add_argument("--max-batch", type=int, default=1024, help="most examples in one request (default 1024)")
    parser.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body in MiB (default 8)")
    parser.add_argument("--read-timeout", type=float, default=30.0,
                        help="seconds a request body may take to arrive (default 30; then 408)")
    parser.add_argument("--max-connections", type=int, default=512,
                        help="open connections at most; beyond them uvicorn answers 503 (default 512)")
    parser.add_argument("--max-predicting", type=int, default=4,
                        help="requests read, parsed and predicted at once; more get 503 with Retry-After (default 4)")
    parser.add_argument("--log-level", default="info")
    return parser


def serve(args) -> int:
    """Load the root, then serve until SIGINT/SIGTERM (uvicorn shuts down gracefully)."""
    from pipeline.runtime import load_tensorflow, quiet_tensorflow

    quiet_tensorflow()
    import uvicorn

    from serving.app import Limits, create_app
    from serving.models import Repository

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = Path(args.root or Path(args.workdir) / "exports")
    check(args, root)
    load_tensorflow()  # the log holds the server's lines, not TensorFlow's start-up notices (`pipeline -v` shows them)
    repository = Repository(root, poll_seconds=args.poll, keep=args.keep).start()
    app = create_app(repository, Limits(max_body_bytes=int(args.max_body_mb * 2**20), max_batch=args.max_batch,
                                        read_seconds=args.read_timeout, max_predicting=args.max_predicting))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                limit_concurrency=args.max_connections)
    repository.stop()
    return 0


def check(args, root: Path) -> None:
    """Refuse settings that could only fail later: before any model loads, so a mistake costs no minutes.

    Raises:
        ConfigError: ``--poll`` or ``--keep`` out of range (0 would busy-loop or serve nothing), no export root,
            or the port already taken.
    """
    import socket

    from pipeline.errors import ConfigError

    for flag, value, low in (("--poll", args.poll, 0.05), ("--keep", args.keep, 1), ("--max-batch", args.max_batch, 1),
                             ("--max-body-mb", args.max_body_mb, 0.001), ("--read-timeout", args.read_timeout, 0.1),
                             ("--max-connections", args.max_connections, 1),
                             ("--max-predicting", args.max_predicting, 1)):
        if not value >= low:
            raise ConfigError(f"Invalid {flag} {value:g}: expected at least {low:g}")
    if not root.is_dir():
        raise ConfigError(f"Export root {root} does not exist: train a model first (make train) or pass --root")
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        # As uvicorn binds: the last server's closed connections (TIME_WAIT, a minute) do not hold the port; a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise ConfigError(f"Cannot listen on {args.host}:{args.port}: {exc.strerror} (another server? pass --port)") from None


def main(argv: list[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))
