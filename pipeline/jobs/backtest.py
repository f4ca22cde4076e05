"""``backtest(cfg)``: a walk-forward backtest of a forecasting config, fold by fold over expanding windows.

Fold k of N ends its series ``(N - k) x forecast.test`` before the end (the last fold at the
end): each fold trains on everything before its own test window, which is the next stretch of
the series, so the N test windows tile the last ``N x forecast.test`` of it. Every fold is an
ordinary training run nested under one parent run; the parent holds the pooled figures: the
errors of every test window of every fold, for the model and each baseline, and the skill
ratio's interval over all of them. A model that beats its baseline on one fold only is no result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ExperimentConfig
from pipeline.errors import ConfigError
from pipeline.files import write_text
from pipeline.text import fmt


@dataclass
class Backtest:
    rows: list[dict]  # one per fold, then "pooled"
    verdict: str  # skill | no skill
    reason: str
    table: Path
    parent_run_id: str


def backtest(cfg: ExperimentConfig, folds: int | None = None) -> Backtest:
    """Train ``folds`` (default ``forecast.folds``) folds, each nested in one parent run; pool their test errors."""
    from pipeline import forecast, track
    from pipeline.data import dataset
    from pipeline.jobs.train import train
    from pipeline.skill import skill

    fc = cfg.forecast
    if fc is None:
        raise ConfigError("A backtest needs a forecasting config (a `forecast` section)")
    n = fc.folds if folds is None else folds
    if n < 1:  # 0 is a number of folds asked for, not "the default"
        raise ConfigError(f"Invalid number of folds (--folds): {n}; a backtest needs at least 1")
    ends = [round(fc.end - (n - 1 - k) * fc.test, 6) for k in range(n)]
    if ends[0] <= 2 * (fc.test + fc.validation):
        raise ConfigError(f"{n} folds of `forecast.test` {fc.test} leave the first fold {max(ends[0], 0):.0%} of the series, "
                          "too little to train on: use fewer folds (--folds) or a smaller forecast.test")
    rows, pooled = [], None
    tags = {"pipeline.job": "backtest", "backtest.folds": n}
    with track.start_run(cfg, run_name=f"backtest-{cfg.name}", tags=tags) as parent:
        for k, end in enumerate(ends, start=1):
            fold = cfg.model_copy(update={"forecast": fc.model_copy(update={"end": end}),
                                          "export": cfg.export.model_copy(update={"enabled": False})})
            print(f"backtest fold {k}/{n}: series up to {end:.0%}, test window the last {fc.test:.0%} of it",
                  flush=True)
            result = train(fold, alias=None, run_tags={"mlflow.parentRunId": parent.id, "backtest.fold": k})
            errors, figures = forecast.score(result.model, dataset.load(fold), fold)
            pooled = errors if pooled is None else pooled.concat(errors)
            rows.append({"fold": k, "end": end, "windows": len(errors), **_row(figures),
                         **skill(errors, fc.bootstrap, cfg.seed), "run_id": result.run_id})
        figures = pooled.figures()
        pooled_skill = skill(pooled, fc.bootstrap, cfg.seed)
        rows.append({"fold": "pooled", "end": fc.end, "windows": len(pooled), **_row(figures), **pooled_skill})
        verdict, reason = _verdict(rows, fc.min_skill)
        parent.log_metrics({f"pooled.{k}": v for k, v in {**figures, **pooled_skill}.items()})
        parent.log_metrics({"backtest.folds_beating_baseline": sum(r["skill.ratio"] < 1 for r in rows[:-1])})
        parent.set_tags({"backtest.verdict": verdict, "fit.verdict": verdict})
        table = write_text(Path(cfg.workdir) / "backtests" / f"{cfg.name}.md", markdown(rows, verdict, reason))
        parent.log_file(table)
    return Backtest(rows, verdict, reason, table, parent.id)


def _row(figures: dict) -> dict:
    return {k.removeprefix("test_"): v for k, v in figures.items()}


def _verdict(rows: list[dict], min_skill: float) -> tuple[str, str]:
    """Skill: the pooled interval lies below ``1 - min_skill`` and the model beats the best baseline on most folds."""
    folds, pooled = rows[:-1], rows[-1]
    wins = sum(r["skill.ratio"] < 1 for r in folds)
    best = next(k.rsplit(".", 1)[1] for k in pooled if k.startswith("skill.best_baseline."))
    said = (f"pooled error {pooled['skill.ratio']:.3f}x {best}'s (95% interval {pooled['skill.ratio_low']:.3f} to "
            f"{pooled['skill.ratio_high']:.3f}); better on {wins} of {len(folds)} folds")
    if pooled["skill.ratio_high"] < 1 - min_skill and wins > len(folds) / 2:
        return "skill", said
    return "no skill", said


def markdown(rows: list[dict], verdict: str, reason: str) -> str:
    """The verdict, then per fold and pooled: the model's error beside each baseline's, and the skill ratio.

    Every figure of every forecaster is in the runs' and the parent's metrics; the table keeps the
    one the verdict rests on (MAE; RMSE for returns) and, for returns, the directional accuracy.
    """
    pooled = rows[-1]
    metric = "rmse" if "directional_accuracy" in pooled else "mae"
    baselines = [k for k in pooled if k.startswith("baseline.") and k.endswith(f".{metric}")]
    versus = "naive" if metric == "rmse" else "seasonal_naive"  # returns: the zero return; levels: a season ago
    versus = next((k.removeprefix("skill.vs_") for k in pooled if k.startswith(f"skill.vs_{versus}")
                   and not k.endswith(("_low", "_high"))), None)
    columns = ["fold", "windows", metric, *baselines, *(["directional_accuracy"] if metric == "rmse" else []),
               "skill.ratio", "skill.ratio_low", "skill.ratio_high",
               *([f"skill.vs_{versus}", f"skill.vs_{versus}_low", f"skill.vs_{versus}_high"] if versus else [])]
    names = ["fold", "windows", f"model {metric}", *(f"{k.split('.')[1]} {metric}" for k in baselines),
             *(["model direction"] if metric == "rmse" else []), "vs best", "95% low", "95% high",
             *([f"vs {versus}", "95% low", "95% high"] if versus else [])]
    lines = [f"**Backtest: {verdict}** ({reason})", "", "| " + " | ".join(names) + " |", "|" + " --- |" * len(names)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"
