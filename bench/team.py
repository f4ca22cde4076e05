"""Many writers on one tracking store, and what a tracking server costs per epoch.

Usage: python bench/team.py [--quick] [--out DIR] [--stores postgresql sqlite]

The nightly crowd: 4 ``pipeline train`` processes and a ``pipeline tune --workers 2`` search
started together, writing to one store, as cron starts them:
- ``postgresql``: a throwaway PostgreSQL cluster under ``mlflow server --app-name basic-auth``
  (tests/test_team.py's ``team_server``: needs PostgreSQL's binaries), the jobs signed in;
- ``sqlite``: one SQLite file shared by the same jobs (the default store).
Counted from the store afterwards: runs and how they ended, every epoch's metric points against
the epochs each run reports (``epochs_run``), and "database is locked" / duplicate-key errors in
the jobs' and the server's output. Then ``bench/perf.py --only tracking`` against the server:
an epoch with the pipeline's tracking over one without, side by side in one process. The server
and its database run at niceness 19 (``--server-nice``): a team's server runs on a machine of
its own, and here it would otherwise take its CPU from the training it is measured against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, parser, publish

ROOT = Path(__file__).resolve().parents[1]

ERRORS = ("database is locked", "duplicate key", "UniqueViolation", "IntegrityError", "Traceback")
EPOCH_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate")


def crowd(uri: str, root: Path, env: dict, epochs: int) -> dict:
    """4 trainings and a 2-worker search of digits at once on the store ``uri``; what the store holds after."""
    from mlflow.tracking import MlflowClient

    shared = [f"tracking.uri={uri}", "tracking.experiment=crowd", "export.model_name=digits_crowd",
              f"train.epochs={epochs}", f"data.data_dir={root / 'tfds'}", "train.verbose=0"]
    commands = [["train", f"workdir={root / f'train{i}'}"] for i in range(4)]
    commands.append(["tune", "--workers", "2", f"workdir={root / 'tune'}", "tune.algorithm=random", "tune.max_trials=2",
                     f"tune.trial={{train.epochs: {epochs}}}"])
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline", command[0], str(ROOT / "configs" / "digits.yaml"),
                               *command[1:], *shared], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for command in commands]
    outputs = [p.communicate(timeout=3600)[0] for p in procs]
    seconds = time.perf_counter() - started

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("crowd")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    expected = stored = 0
    for run in runs:
        if "epochs_run" in run.data.metrics:
            epochs_run = int(run.data.metrics["epochs_run"])
            for key in EPOCH_KEYS:
                steps = {m.step for m in client.get_metric_history(run.info.run_id, key)}
                expected += epochs_run
                stored += len(steps & set(range(1, epochs_run + 1)))
    errors = {e: sum(out.count(e) for out in outputs) for e in ERRORS}
    return {"processes_failed": sum(p.returncode != 0 for p in procs), "runs": len(runs),
            "runs_not_finished": sum(r.info.status != "FINISHED" for r in runs),
            "epoch_metric_points": stored, "lost_epoch_metric_points": expected - stored,
            "errors": {k: v for k, v in errors.items() if v}, "seconds": round(seconds, 1),
            "first_failure": next((out[-600:] for p, out in zip(procs, outputs) if p.returncode), None)}


def overhead(uri: str, env: dict, quick: bool, repeats: int) -> dict:
    """``bench/perf.py --only tracking`` with the run on ``uri``."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "bench/perf.py", *(["--quick"] if quick else []), "--only", "tracking",
                        "--repeats", str(repeats),
                        "--out", out, "--set", f"tracking.uri={uri}"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        return json.loads((Path(out) / "perf.json").read_text())["tracking"]


def main() -> None:
    options = parser(__doc__, "team")
    options.add_argument("--stores", nargs="*", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"])
    options.add_argument("--no-crowd", action="store_true", help="only the tracking overhead against the server")
    options.add_argument("--repeats", type=int, default=10,
                         help="perf.py's rounds / 3 for the overhead (default 10: 30 rounds; at 15 the medians of "
                              "two runs differed by 3 points)")
    options.add_argument("--server-nice", type=int, default=19,
                         help="the server's and PostgreSQL's niceness (default 19: they take only CPU that training "
                              "leaves, as a server on another machine would; 0 shares the cores evenly)")
    args = options.parse_args()
    epochs = 2 if args.quick else 10
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    results = {"machine": machine(), "command": "python bench/team.py " + " ".join(sys.argv[1:]), "epochs": epochs,
               "server_nice": args.server_nice}
    with tempfile.TemporaryDirectory(prefix="bench-team-") as tmp:
        root = Path(tmp)
        if "sqlite" in args.stores and not args.no_crowd:
            results["sqlite"] = crowd(f"sqlite:///{root / 'shared.db'}", root / "sqlite", env, epochs)
        if "postgresql" in args.stores:
            sys.path.insert(0, str(ROOT))
            from tests.test_team import team_server

            with team_server(root / "server", nice=args.server_nice) as team:
                os.environ.update(MLFLOW_TRACKING_USERNAME="trainer", MLFLOW_TRACKING_PASSWORD="trainer-secret-1")
                signed_in = {**env, **os.environ}  # the jobs and this process's own client
                if not args.no_crowd:
                    results["postgresql"] = crowd(team.uri, root / "pg", signed_in, epochs)
                    results["postgresql"]["server_errors"] = {e: n for e in ERRORS
                                                              if (n := team.log.read_text().count(e))}
                results["server_tracking"] = overhead(team.uri, signed_in, args.quick, args.repeats)

    lines = ["| store | processes failed | runs (not FINISHED) | epoch metric points stored (lost) | errors | wall |",
             "| --- | --- | --- | --- | --- | --- |"]
    for store in ("postgresql", "sqlite"):
        if store in results:
            r = results[store]
            errors = {**r["errors"], **r.get("server_errors", {})}
            lines.append(f"| {store} | {r['processes_failed']} of 5 | {r['runs']} ({r['runs_not_finished']}) | "
                         f"{r['epoch_metric_points']} ({r['lost_epoch_metric_points']}) | "
                         f"{', '.join(f'{k} x{v}' for k, v in errors.items()) or 'none'} | {r['seconds']:.0f} s |")
    if "server_tracking" in results:
        t = results["server_tracking"]
        sides = "; ".join(f"{k} {v['median']:.3f} s" for k, v in t["epoch_seconds"].items())
        lines.append(f"\ntracking overhead against the server (epoch with / without): **{t['tracking_overhead']}** "
                     f"({sides} per epoch)")
    publish(args.out, "team", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
