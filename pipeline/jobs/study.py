"""``pipeline study configs/studies/NAME.yaml``: variants of a base config, side by side, to measure what a technique buys.

A study file names a base experiment, overrides for every variant, and the variants
(each a mapping of dotted config paths to values)::

    base: ../digits.yaml
    overrides: {train.epochs: 40, export.enabled: false}
    target: {metric: val_accuracy, value: 0.97}     # optional: epochs and seconds to reach it
    variants:
      none: {model.dropout: 0.0}
      dropout: {model.dropout: 0.3}

Each variant is an ordinary tracked training run, nested under one parent run. The
comparison (test metric, generalisation gap at the kept epoch, epochs, seconds, time
to the target, share of near-zero weights, fit verdict) is written as Markdown and
CSV with two plots (validation loss of every variant; training loss) and logged to
the parent.

With ``kind: tune`` each variant is a hyperparameter search instead (the base
config's ``tune`` section, varied: ``tune.algorithm: grid`` ...), run in this
process from a fresh search folder, its parent run nested under the study's. The
comparison is the best score, the trials and seconds it took to reach it, and the
best score so far against trials and against seconds, one line per variant.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config.loading import read_yaml
from pipeline.config.messages import describe
from pipeline.diagnose import SPARSE
from pipeline.errors import ConfigError, PipelineError
from pipeline.files import pyplot, save_figure, write_text
from pipeline.text import fmt


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str = "val_accuracy"
    value: float


class StudyConfig(BaseModel):
    """A study file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    base: str
    kind: Literal["train", "tune"] = "train"
    overrides: dict[str, Any] = {}
    target: Target | None = None
    variants: dict[str, dict[str, Any]] = Field(min_length=1)


@dataclass
class Study:
    name: str
    rows: list[dict]
    table: Path
    markdown: str
    parent_run_id: str


def load_study(path: str | Path, extra: list[str] = ()) -> tuple[StudyConfig, dict]:
    """The study and each variant's validated experiment config (errors are one line, before TensorFlow)."""
    from pipeline.config import load

    path = Path(path)
    try:
        study = StudyConfig.model_validate(read_yaml(path, what="Study"))
    except ValidationError as exc:
        raise ConfigError(describe(exc, StudyConfig, prefix=f"Invalid study {path}: ")) from None
    if study.target is not None:
        from pipeline.tasks import direction

        try:
            direction(study.target.metric)
        except ConfigError as exc:
            raise ConfigError(f"Invalid study {path}: `target.metric`: {exc}") from None
    base = (path.parent / study.base).resolve()
    configs = {}
    for name, values in study.variants.items():
        items = [f"{k}={_yaml(v)}" for k, v in {**study.overrides, **values}.items()]
        try:
            cfg = load(base, [*items, *extra])
            if study.kind == "tune":
                if cfg.tune is None:
                    raise ConfigError("a `kind: tune` study needs a `tune` section (in the base config or overrides)")
                cfg = load(base, [*items, *extra, f"tune.directory={cfg.workdir}/studies/{path.stem}/tuning/{name}"])
        except ConfigError as exc:
            raise ConfigError(f"Study {path.name}, variant {name!r}: {exc}") from None
        configs[name] = cfg
    return study, configs


def run_study(path: str | Path, extra: list[str] = ()) -> Study:
    """Train every variant (nested under one parent run) and write the comparison."""
    from pipeline import track

    study, configs = load_study(path, extra)
    name = Path(path).stem
    first = next(iter(configs.values()))
    variant_row, plots = RUNNERS[study.kind]
    rows = []
    tags = {"pipeline.job": "study", "study": name, "study.kind": study.kind}
    with track.start_run(first, run_name=f"study-{name}", tags=tags) as parent:
        parent.log_text(Path(path).read_text(), "study.yaml")
        for variant, cfg in configs.items():
            rows.append(variant_row(variant, cfg, study, {"mlflow.parentRunId": parent.id, "study": name,
                                                          "study.variant": variant}))
            print(f"{name}/{variant}: " + ", ".join(f"{k}={fmt(v)}" for k, v in rows[-1].items()
                                                   if k != "variant" and not k.startswith("_")), flush=True)
        out = Path(first.workdir) / "studies" / name
        out.mkdir(parents=True, exist_ok=True)
        table, markdown = _write(rows, out, study, name)
        for file in (table, out / f"{name}.md", *plots(rows, out, name)):
            parent.log_file(file)
    return Study(name, rows, table, markdown, parent.id)


# ---- kind: train --------------------------------------------------------------------------


# Test figures a study row shows (forecasting adds each baseline's MAE).
ROW_METRICS = ("test_accuracy", "test_loss", "test_rmse", "test_rmse_log", "test_mae", "skill.ratio",
               "skill.ratio_low", "skill.ratio_high")


def _train_row(variant: str, cfg, study: StudyConfig, tags: dict) -> dict:
    """Train the variant; its row: test metric, gap, epochs, seconds, time to the target, sparsity, fit."""
    import numpy as np

    from pipeline.jobs.train import train
    from pipeline.tasks import direction

    started = time.perf_counter()
    result = train(cfg, alias=None, run_tags=tags)
    seconds = time.perf_counter() - started
    target = study.target
    history = result.history
    best = (result.best_epoch or len(history["loss"])) - 1
    kernels = [w.numpy().ravel() for w in result.model.weights
               if w.path.split("/")[-1] in ("kernel", "embeddings")]
    weights = np.concatenate(kernels) if kernels else np.zeros(1)
    row = {"variant": variant, **{k: round(v, 4) for k, v in result.test_metrics.items()
                                  if k in ROW_METRICS or k.startswith("baseline.") and k.endswith(".mae")},
           "gap_at_kept_epoch": round(history["val_loss"][best] - history["loss"][best], 4),
           "epochs": len(history["loss"]), "kept_epoch": best + 1, "seconds": round(seconds, 1),
           "near_zero_weights": round(float(np.mean(np.abs(weights) < SPARSE)), 4),
           "fit": result.diagnosis.verdict if result.diagnosis else "-", "_history": history}
    if target is not None:
        curve = history.get(target.metric, [])
        higher = direction(target.metric) == "max"
        hit = next((i for i, v in enumerate(curve) if (v >= target.value if higher else v <= target.value)), None)
        row["epochs_to_target"] = hit + 1 if hit is not None else "not reached"
        row["seconds_to_target"] = round(seconds * (hit + 1) / len(curve), 1) if hit is not None else "not reached"
    return row


def _train_plots(rows: list[dict], out: Path, name: str) -> list[Path]:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        h = row["_history"]
        axes[0].plot(range(1, len(h["val_loss"]) + 1), h["val_loss"], label=row["variant"])
        axes[1].plot(range(1, len(h["loss"]) + 1), h["loss"], label=row["variant"])
    axes[0].set(xlabel="epoch", ylabel="val_loss", title=f"{name}: validation loss", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="loss", title=f"{name}: training loss", yscale="log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return [save_figure(fig, out / f"{name}_curves.png")]


# ---- kind: tune ---------------------------------------------------------------------------


def _search_row(variant: str, cfg, study: StudyConfig, tags: dict) -> dict:
    """Run the variant's search from scratch; its row: best score, and the trials and seconds to reach it."""
    from pipeline.jobs.tune import tune
    from pipeline.tune.search import objective

    shutil.rmtree(cfg.tune.directory, ignore_errors=True)  # a study measures a whole search, not a continuation
    started = time.perf_counter()
    outcome = tune(cfg, workers=0, run_tags=tags)
    seconds = time.perf_counter() - started
    metric, direction = objective(cfg)
    done = sorted((t for t in outcome.trials if t["score"] is not None and not math.isnan(t["score"])
                   and t.get("ended")), key=lambda t: t["ended"])
    if not done:
        raise PipelineError(f"Study variant {variant!r}: no trial finished with a score ({outcome.folder})")
    start = min(t["ended"] - t["seconds"] for t in done)
    best = (max if direction == "max" else min)(t["score"] for t in done)
    first = next(i for i, t in enumerate(done) if t["score"] == best)
    curve = [(t["ended"] - start, t["score"]) for t in done]
    return {"variant": variant, "algorithm": cfg.tune.algorithm, "trials": len(done),
            "epochs": sum(t.get("epochs") or 0 for t in done), f"best_{metric}": round(best, 4),
            "trials_to_best": first + 1, "seconds_to_best": round(curve[first][0], 1), "seconds": round(seconds, 1),
            "_curve": curve, "_metric": metric, "_direction": direction}


def _search_plots(rows: list[dict], out: Path, name: str) -> list[Path]:
    """The best score so far against trials (in order of completion) and against seconds."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        pick = max if row["_direction"] == "max" else min
        scores = [score for _, score in row["_curve"]]
        best = [pick(scores[: i + 1]) for i in range(len(scores))]
        axes[0].step(range(1, len(best) + 1), best, where="post", label=row["variant"])
        axes[1].step([s for s, _ in row["_curve"]], best, where="post", label=row["variant"])
    metric = rows[0]["_metric"]
    axes[0].set(xlabel="trials finished", ylabel=f"best {metric} so far", title=f"{name}: best score against trials")
    axes[1].set(xlabel="seconds since the first trial started", ylabel=f"best {metric} so far",
                title=f"{name}: best score against time")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return [save_figure(fig, out / f"{name}_curves.png")]


RUNNERS = {"train": (_train_row, _train_plots), "tune": (_search_row, _search_plots)}  # kind -> (row, plots)


# ---- files --------------------------------------------------------------------------------


def _write(rows: list[dict], out: Path, study: StudyConfig, name: str) -> tuple[Path, str]:
    columns = [k for k in rows[0] if not k.startswith("_")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    table = out / f"{name}.csv"
    write_text(table, buffer.getvalue())
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    target = f"; target {study.target.metric} >= {study.target.value:g}" if study.target else ""
    markdown = f"Study `{name}`{target}:\n\n" + "\n".join(lines) + "\n"
    write_text(out / f"{name}.md", markdown)
    return table, markdown


def _yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
