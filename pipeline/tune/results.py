"""What a search leaves behind: the best config as YAML, a table of trials, plots, a leaderboard.

All of it is logged to the search's parent MLflow run as well. Nothing here
needs TensorFlow: the inputs are plain dicts, one per trial.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ExperimentConfig
from pipeline.files import pyplot, save_figure, write_text
from pipeline.text import fmt


@dataclass
class Outcome:
    """A finished search."""

    folder: Path
    parent_run_id: str
    best_config: Path | None
    best_score: float | None
    best_values: dict | None
    trials: list[dict]


def summarize(cfg: ExperimentConfig, folder: Path, trials: list[dict], best_values: dict | None,
              objective: tuple[str, str], parent) -> Outcome:
    """Write best.yaml, trials.csv and the plots under ``folder``, log them to ``parent``, print the leaderboard."""
    from pipeline.config.search_space import apply

    metric, direction = objective
    params = list(cfg.tune.space)
    table = folder / "trials.csv"
    write_text(table, _csv(trials, params))
    parent.log_file(table)
    best_path, best_score = None, None
    scored = [t for t in trials if t["score"] is not None and not math.isnan(t["score"])]
    if best_values is not None and scored:
        best_score = (max if direction == "max" else min)(t["score"] for t in scored)
        best = apply(cfg, best_values)
        header = (f"# Best config of search {folder.name} ({cfg.tune.algorithm}, {len(scored)} scored trials): "
                  f"{metric} = {best_score:.4f}\n# Train it: pipeline train {folder / 'best.yaml'}\n")
        best_path = folder / "best.yaml"
        write_text(best_path, header + best.to_yaml())
        parent.log_file(best_path)
        parent.set_tags({f"best.{k}": v for k, v in best_values.items()})
        parent.log_metrics({f"best_{metric}": best_score, "trials": len(trials), "scored_trials": len(scored)})
    for plot in (_by_trial(scored, metric, direction, folder / "objective_by_trial.png"),
                 _by_param(scored, params, metric, cfg, folder / "objective_by_parameter.png")):
        if plot is not None:
            parent.log_file(plot, "plots")
    leaderboard(trials, params, metric, direction)
    return Outcome(folder, parent.id, best_path, best_score, best_values, trials)


def leaderboard(trials: list[dict], params: list[str], metric: str, direction: str, top: int = 5) -> None:
    from rich.console import Console
    from rich.table import Table

    ranked = sorted((t for t in trials if t["score"] is not None and not math.isnan(t["score"])),
                    key=lambda t: t["score"], reverse=direction == "max")
    table = Table(title=f"Top {min(top, len(ranked))} of {len(trials)} trials by {metric} ({direction})")
    for column in ("rank", "trial", metric, "epochs", "seconds"):
        table.add_column(column, no_wrap=True)
    table.add_column("values", overflow="fold")
    for rank, t in enumerate(ranked[:top], 1):
        values = ", ".join(f"{p}={fmt(t[p])}" for p in params if t.get(p) is not None)
        table.add_row(str(rank), t["trial"], f"{t['score']:.4f}", fmt(t.get("epochs")), fmt(t.get("seconds")), values)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


def _csv(trials: list[dict], params: list[str]) -> str:
    columns = ["trial", "status", "score", "epochs", "seconds", "fit_seconds", "rss_mb", "ended", "run_id", *params]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore")
    writer.writeheader()
    for t in sorted(trials, key=lambda t: t["trial"]):
        writer.writerow(t)
    return out.getvalue()


def _by_trial(trials: list[dict], metric: str, direction: str, path: Path) -> Path | None:
    """Each trial's score in the order trials ended, with the best so far."""
    if not trials:
        return None

    plt = pyplot()

    ordered = sorted(trials, key=lambda t: (t.get("ended") or 0, t["trial"]))
    scores = [t["score"] for t in ordered]
    pick = max if direction == "max" else min
    best = [pick(scores[: i + 1]) for i in range(len(scores))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(scores) + 1), scores, "o", label="trial")
    ax.step(range(1, len(scores) + 1), best, where="post", label="best so far")
    ax.set(xlabel="trial (in order of completion)", ylabel=metric, title=f"{metric} by trial")
    ax.legend()
    return _save(fig, path)


def _by_param(trials: list[dict], params: list[str], metric: str, cfg: ExperimentConfig, path: Path) -> Path | None:
    """The score against each hyperparameter (categories as positions, log ranges on a log axis)."""
    if not trials or not params:
        return None

    plt = pyplot()

    cols = min(3, len(params))
    rows = -(-len(params) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, params):
        points = [(t[name], t["score"]) for t in trials if t.get(name) is not None]
        param = cfg.tune.space[name]
        numeric = points and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points)
        if numeric:
            ax.plot([x for x, _ in points], [y for _, y in points], "o")
            if getattr(param, "sampling", "linear") == "log":
                ax.set_xscale("log")
        else:
            labels = [str(v) for v in getattr(param, "values", [])] or sorted({str(x) for x, _ in points})
            ax.plot([labels.index(str(x)) for x, _ in points], [y for _, y in points], "o")
            ax.set_xticks(range(len(labels)), labels)
        ax.set(xlabel=name, ylabel=metric)
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path)
