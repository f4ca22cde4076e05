"""``pipeline report --experiment NAME``: one self-contained HTML page about every run of an experiment.

Where the run report looks at one training, this page answers the questions of
someone coming back to an experiment after a week: which run is best and is it
serving, how the test metric moved from run to run, how the runs fit (verdict
counts; test metric against the generalisation gap), how the best runs' validation
curves compare, and which searches and studies were run.

Sections (``<section id=...>``): summary, leaderboard, progress, fit, curves,
models, searches. The page is written to ``out`` and logged to a run of its own in
the experiment (tag ``pipeline.job=report``, ended FINISHED), which later
experiment reports leave out; the experiment's tag ``report.run_id`` points at it.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from pipeline.files import pyplot
from pipeline.report.page import img, page, table
from pipeline.text import fmt, ratio

TOP = 25  # leaderboard rows
CURVES = 5  # runs whose validation curves are drawn
PRIMARY = ("test_accuracy", "test_rmse_log", "test_rmse", "test_loss")  # first one the runs have is ranked on

KINDS = {  # run kind <- (tag, value); the first match wins, else "train"
    "report": ("pipeline.job", "report"),
    "search": ("tune.role", "parent"),
    "trial": ("tune.role", "trial"),
    "study": ("pipeline.job", "study"),
    "retrain": ("pipeline.job", "retrain"),
    "challenger": ("pipeline.role", "challenger"),
    "study variant": ("study.variant", None),
}


def experiment_report(name: str, tracking_uri: str, out: Path | None = None) -> Path:
    """Write the report of experiment ``name`` (``out``, default <store folder>/reports/<name>.html); log it."""
    from mlflow.tracking import MlflowClient

    from pipeline.errors import ConfigError
    from pipeline.files import write_text

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise ConfigError(f"No experiment {name!r} in {tracking_uri} (experiments: {known})")
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=5000, order_by=["attributes.start_time ASC"])
            if kind(r) != "report"]
    if not runs:
        raise ConfigError(f"Experiment {name!r} in {tracking_uri} has no runs yet")
    metric = next((m for m in PRIMARY if any(m in r.data.metrics for r in runs)), None)
    ranked = _ranked(runs, metric)
    sections = [
        ("summary", "Summary", _summary(experiment, runs, tracking_uri)),
        ("leaderboard", f"Leaderboard by {metric or 'nothing yet'}", _leaderboard(ranked, metric)),
        ("progress", "Progress", _progress(runs, metric)),
        ("fit", "Fit of the runs", _fit(runs, metric)),
        ("curves", f"Validation curves of the best {CURVES}", _curves(client, ranked[:CURVES])),
        ("models", "Registered models", _models(client, runs)),
        ("searches", "Searches and studies", _searches(runs)),
    ]
    html_text = page(f"Experiment {name}", sections)
    out = write_text(Path(out or _default_out(tracking_uri, name)), html_text)
    _log(client, experiment.experiment_id, out)
    return out


def kind(run) -> str:
    tags = run.data.tags
    return next((k for k, (tag, value) in KINDS.items() if tag in tags and value in (None, tags[tag])), "train")


# ---- sections -----------------------------------------------------------------------------


def _summary(experiment, runs, uri: str) -> str:
    kinds = Counter(kind(r) for r in runs)
    statuses = Counter(r.info.status for r in runs)
    first, last = runs[0].info.start_time, runs[-1].info.start_time
    rows = [("experiment", f"{experiment.name} (id {experiment.experiment_id})"), ("tracking store", uri),
            ("runs", f"{len(runs)}: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common())),
            ("status", ", ".join(f"{n} {s}" for s, n in statuses.most_common())),
            ("first run started", _when(first)), ("last run started", _when(last))]
    return table(["", ""], rows)


def _leaderboard(ranked, metric: str | None) -> str:
    if not ranked:
        return "<p>No run has a test metric yet (runs still training, or trials and searches only).</p>"
    rows = []
    for i, r in enumerate(ranked[:TOP], 1):
        m, t = r.data.metrics, r.data.tags
        rows.append((i, r.info.run_name, r.info.run_id[:8], kind(r), r.info.status, f"{m[metric]:.4f}",
                     _versus(m), fmt(m.get("best_epoch")), fmt(m.get("epochs_run")), t.get("fit.verdict", "-"),
                     fmt(t.get("fit.final_gap")), _duration(r), _when(r.info.start_time)))
    note = (f"<p>{len(ranked)} runs with {metric}; the best {min(TOP, len(ranked))} shown. \"vs best baseline\" is "
            "the model's test error over the best classical baseline's, with its 95% interval: below 1 is better.</p>")
    return note + table(["rank", "run", "id", "kind", "status", metric, "vs best baseline", "kept epoch", "epochs",
                         "fit", "gap", "duration", "started"], rows)


def _versus(metrics: dict) -> str:
    """``0.941 (0.863-1.032) ridge``: the run's error over its best baseline's, or - for runs without baselines."""
    if "skill.ratio" not in metrics:
        return "-"
    best = next((k.rsplit(".", 1)[1] for k in metrics if k.startswith("skill.best_baseline.")), "")
    return (f"{ratio(metrics['skill.ratio'])} ({metrics['skill.ratio_low']:.3f}-{metrics['skill.ratio_high']:.3f}) "
            f"{best}").strip()


def _progress(runs, metric: str | None) -> str:
    scored = [r for r in runs if metric and metric in r.data.metrics]
    if not scored:
        return "<p>Nothing to plot yet.</p>"
    plt = pyplot()
    better = max if _higher_is_better(metric) else min
    values = [r.data.metrics[metric] for r in scored]
    best = [better(values[: i + 1]) for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for k in sorted({kind(r) for r in scored}):
        points = [(i + 1, v) for i, (r, v) in enumerate(zip(scored, values)) if kind(r) == k]
        ax.plot(*zip(*points), "o", label=k, alpha=0.7)
    ax.step(range(1, len(best) + 1), best, where="post", color="black", label="best so far")
    ax.set(xlabel="run (in order of start)", ylabel=metric, title=f"{metric} of every run")
    ax.legend(fontsize=8)
    return img(fig, "progress")


def _fit(runs, metric: str | None) -> str:
    verdicts = Counter(r.data.tags["fit.verdict"] for r in runs if "fit.verdict" in r.data.tags)
    if not verdicts:
        return "<p>No run was diagnosed.</p>"
    parts = [table(["verdict", "runs"], verdicts.most_common())]
    points = [(float(r.data.tags["fit.final_gap"]), r.data.metrics[metric], r.data.tags["fit.verdict"])
              for r in runs if "fit.final_gap" in r.data.tags and metric in r.data.metrics]
    if points:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        for verdict in sorted({p[2] for p in points}):
            ax.plot([p[0] for p in points if p[2] == verdict], [p[1] for p in points if p[2] == verdict], "o",
                    label=verdict, alpha=0.7)
        ax.set(xlabel="generalisation gap (val_loss - loss, last epoch)", ylabel=metric,
               title="test metric against the gap")
        ax.legend(fontsize=8)
        parts.append(img(fig, "test metric against gap"))
    return "".join(parts)


def _curves(client, best) -> str:
    histories = [(r, sorted(client.get_metric_history(r.info.run_id, "val_loss"), key=lambda m: m.step)) for r in best]
    histories = [(r, h) for r, h in histories if h]
    if not histories:
        return "<p>No validation curves logged.</p>"
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for r, h in histories:
        ax.plot([m.step for m in h], [m.value for m in h], label=f"{r.info.run_name} ({r.info.run_id[:8]})")
    ax.set(xlabel="epoch", ylabel="val_loss", yscale="log", title="validation loss")
    ax.legend(fontsize=8)
    return img(fig, "validation curves")


def _models(client, runs) -> str:
    names = sorted({r.data.tags["registry.model"] for r in runs if "registry.model" in r.data.tags})
    if not names:
        return "<p>No run registered a model.</p>"
    rows = []
    for name in names:
        aliases = {}
        for alias, version in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        for v in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: -int(v.version)):
            tests = ", ".join(f"{k}={float(x):.4f}" for k, x in sorted(v.tags.items()) if k.startswith("test_"))
            rows.append((name, v.version, ", ".join(aliases.get(str(v.version), [])) or "-", v.run_id[:8],
                         tests or "-", _when(v.creation_timestamp)))
    return table(["model", "version", "aliases", "run", "test metrics", "registered"], rows[:TOP])


def _searches(runs) -> str:
    parents = [r for r in runs if kind(r) in ("search", "study", "retrain")]
    if not parents:
        return "<p>No searches, studies or retrainings in this experiment.</p>"
    children = Counter(r.data.tags.get("mlflow.parentRunId") for r in runs)
    rows = []
    for r in parents:
        best = ", ".join(f"{k}={v:.4f}" for k, v in sorted(r.data.metrics.items()) if k.startswith("best_")) or "-"
        label = r.data.tags.get("study") or r.data.tags.get("tune.algorithm") or ""
        rows.append((r.info.run_name, r.info.run_id[:8], kind(r), label, r.info.status, children[r.info.run_id],
                     best, _when(r.info.start_time)))
    return table(["run", "id", "kind", "what", "status", "nested runs", "best", "started"], rows)


# ---- helpers ------------------------------------------------------------------------------


def _ranked(runs, metric: str | None) -> list:
    scored = [r for r in runs if metric and metric in r.data.metrics]
    return sorted(scored, key=lambda r: r.data.metrics[metric], reverse=_higher_is_better(metric))


def _higher_is_better(metric: str | None) -> bool:
    from pipeline.tasks import direction

    return bool(metric) and direction(metric) == "max"


def _log(client, experiment_id: str, path: Path) -> None:
    """Log the page to a report run of its own (FINISHED, or FAILED if logging breaks)."""
    run = client.create_run(experiment_id, run_name="experiment-report", tags={"pipeline.job": "report"})
    status = "FAILED"
    try:
        client.log_artifact(run.info.run_id, str(path))
        client.set_experiment_tag(experiment_id, "report.run_id", run.info.run_id)
        status = "FINISHED"
    finally:
        client.set_terminated(run.info.run_id, status)


def _default_out(uri: str, name: str) -> Path:
    from pipeline.track.server import sqlite_file

    store = sqlite_file(uri)
    root = store.parent if store else Path("work")
    return root / "reports" / f"{name}.html"


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000)) if ms else "-"


def _duration(run) -> str:
    if not run.info.end_time:
        return "-"
    return f"{(run.info.end_time - run.info.start_time) / 1000:.0f} s"
