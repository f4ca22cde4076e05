"""Search strategies side by side on digits, and what a trial costs beyond its own training.

Usage: python bench/tune.py [--budget 120] [--trials 20] [--quick]

1. Random, Bayesian and Hyperband search the space of configs/digits.yaml, each
   for the same wall-clock budget (``tune.time_budget``), one after another in
   fresh processes. Reported: the best validation accuracy, and the time from
   the search's first trial to the first trial within 0.5 points of that
   search's final best.
2. A random search of ``--trials`` two-epoch trials, as ``pipeline tune`` runs
   it (one worker slot, whose process hands over to a warm spare as its memory
   grows): resident memory after the last trial divided by after the first
   (KerasTuner issues 873 and 395), and the overhead per trial beyond
   ``model.fit`` (oracle, model build, data, MLflow, clearing Keras' state,
   hand-overs): the search's wall time from the first trial's start to the
   last trial's end, less the time inside ``fit``, per trial.

Writes bench/results/tune.json and tune.md.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine, parser, publish, scratch

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = {
    "random": ["tune.algorithm=random"],
    "bayesian": ["tune.algorithm=bayesian"],
    "hyperband": ["tune.algorithm=hyperband", "tune.max_epochs=8", "tune.factor=3", "tune.hyperband_iterations=10"],
}


def search(workdir: str, overrides: list[str]) -> list[dict]:
    """Run ``pipeline tune configs/digits.yaml`` in a fresh process; return its trials.csv rows."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = [sys.executable, "-m", "pipeline", "tune", "configs/digits.yaml", f"workdir={workdir}", "export.enabled=false",
            *overrides]
    done = subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args[2:])} failed with exit code {done.returncode}:\n{done.stderr[-3000:]}")
    table = next(Path(workdir, "tuning").glob("*/trials.csv"))
    rows = []
    for row in csv.DictReader(open(table)):
        if row["status"] == "COMPLETED" and row["score"]:
            rows.append({k: float(row[k]) for k in ("score", "seconds", "fit_seconds", "ended", "rss_mb")}
                        | {"epochs": int(row["epochs"])})
    return sorted(rows, key=lambda r: r["ended"])


def strategy_figures(rows: list[dict], overall: float) -> dict:
    start = min(r["ended"] - r["seconds"] for r in rows)
    best = max(r["score"] for r in rows)

    def seconds_to(target: float):
        reached = next((r for r in rows if r["score"] >= target - 0.005), None)
        return round(reached["ended"] - start, 1) if reached else None

    return {"trials": len(rows), "epochs_trained": sum(r["epochs"] for r in rows), "best_val_accuracy": round(best, 4),
            "seconds_to_within_0.5_points": seconds_to(best), "seconds_to_within_0.5_points_of_overall": seconds_to(overall)}


def overhead_figures(rows: list[dict]) -> dict:
    start = min(r["ended"] - r["seconds"] for r in rows)
    wall = max(r["ended"] for r in rows) - start
    fit = sum(r["fit_seconds"] for r in rows)
    return {"trials": len(rows), "rss_first_mb": rows[0]["rss_mb"], "rss_last_mb": rows[-1]["rss_mb"],
            "rss_last_over_first": round(rows[-1]["rss_mb"] / rows[0]["rss_mb"], 3),
            "mean_fit_seconds": round(fit / len(rows), 3), "overhead_seconds_per_trial": round((wall - fit) / len(rows), 3)}


def main() -> None:
    options = parser(__doc__, "tune")
    options.add_argument("--budget", type=float, default=120.0, help="seconds of search per algorithm (default 120)")
    options.add_argument("--trials", type=int, default=20, help="trials of the memory/overhead search (default 20)")
    args = options.parse_args()
    quick = ["model.width=8", "model.head_units=16", "data.batch_size=128"] if args.quick else []
    tfds = scratch("bench-tfds-")
    results: dict = {"machine": machine(),
                     "command": "python bench/tune.py " + " ".join(sys.argv[1:]), "budget_seconds": args.budget,
                     "strategies": {}}
    searches = {}
    for name, overrides in ALGORITHMS.items():
        with tempfile.TemporaryDirectory() as workdir:
            searches[name] = search(workdir, [f"data.data_dir={tfds}", f"tune.time_budget={args.budget}",
                                              "tune.max_trials=1000", *overrides, *quick])
        print(name, len(searches[name]), "trials", flush=True)
    overall = max(r["score"] for rows in searches.values() for r in rows)
    for name, rows in searches.items():
        results["strategies"][name] = strategy_figures(rows, overall)
    with tempfile.TemporaryDirectory() as workdir:
        rows = search(workdir, [f"data.data_dir={tfds}", "tune.algorithm=random", f"tune.max_trials={args.trials}",
                                "tune.trial={train.epochs: 2, train.early_stopping.enabled: false}", *quick])
    results["trial_costs"] = overhead_figures(rows)  # RSS is measured after each trial, its state cleared
    print("trial costs", results["trial_costs"], flush=True)

    publish(args.out, "tune", results, markdown(results))


def markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']}. Command: `{results['command']}`.", "",
             f"Same space (configs/digits.yaml), {results['budget_seconds']:g} s of search each:", "",
             "| algorithm | trials | epochs trained | best val accuracy | s to within 0.5 points of its best "
             "| s to within 0.5 points of the best of all |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results["strategies"].items():
        lines.append(f"| {name} | {r['trials']} | {r['epochs_trained']} | {r['best_val_accuracy']:.4f} | "
                     f"{r['seconds_to_within_0.5_points']} | {r['seconds_to_within_0.5_points_of_overall'] or 'not reached'} |")
    c = results["trial_costs"]
    lines += ["", f"Random search, {c['trials']} two-epoch trials in one worker slot (a worker hands over to a warm "
              f"spare as its memory grows): RSS after the last trial / after "
              f"the first = {c['rss_last_over_first']} ({c['rss_first_mb']} -> {c['rss_last_mb']} MB); "
              f"overhead per trial beyond fit = {c['overhead_seconds_per_trial']} s "
              f"(fit {c['mean_fit_seconds']} s per trial).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
