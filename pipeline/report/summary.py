"""The table ``pipeline train`` prints when a run ends (the HTML reports are run.py and experiment.py)."""

from __future__ import annotations

from pipeline.text import ratio

FEW_EXAMPLES = 30  # test examples below which one of them is more than 3% of every test figure


def print_summary(cfg, result) -> None:
    """The test metrics, each baseline beside the model, the kept epoch, where the run and export are, and the
    fit diagnosis: what a user reads first, so the baselines and the verdict are never a click away."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{cfg.name}: done", show_header=False)
    metrics = result.test_metrics
    for key, value in metrics.items():
        if not key.startswith(("baseline.", "skill.")):
            table.add_row(key, f"{value:.4f}")
    beside = _beside_baselines(metrics)
    for name, line in beside.items():
        table.add_row(f"vs {name}", line)
    if "skill.ratio" in metrics and len(beside) > 1:  # with one baseline its row says it already
        table.add_row("skill ratio", f"{ratio(metrics['skill.ratio'])} (95% interval {metrics['skill.ratio_low']:.3f} to "
                                     f"{metrics['skill.ratio_high']:.3f}; below 1 beats the best baseline)")
    if few := _few_windows(cfg, metrics):
        table.add_row("test windows", few)
    elif few := _few_examples(cfg, metrics):
        table.add_row("test examples", few)
    table.add_row("best epoch", f"{result.best_epoch} of {result.epochs_run} run")
    table.add_row("run id", result.run_id)
    if cfg.tracking.enabled:
        table.add_row("tracking", f"{cfg.tracking.uri} (experiment {cfg.tracking.experiment!r}; `make ui`)")
    table.add_row("run folder", str(result.run_dir))
    table.add_row("export", str(result.export_path) if result.export_path else "disabled")
    if result.diagnosis is not None:
        d = result.diagnosis
        table.add_row("fit", f"{d.verdict}: " + "; ".join(d.reasons))
        table.add_row("advice", "\n".join(d.advice[:3]))
    Console().print(table)


def _beside_baselines(metrics: dict) -> dict[str, str]:
    """Per baseline, its first two figures beside the model's (``mae 0.1719 (model 0.1634, -4.9%)``, ``accuracy
    0.9721 (model 0.9777, +0.6 points)``), and the ratio of their errors with its interval."""
    from pipeline.tasks import metric_of  # here: the CLI imports this module, and tasks.py NumPy

    lines: dict[str, list[str]] = {}
    for key, value in metrics.items():
        if key.startswith("baseline.") and f"test_{key.rsplit('.', 1)[1]}" in metrics:
            _, name, figure = key.split(".", 2)
            if len(lines.get(name, [])) == 2:
                continue
            model = metrics[f"test_{figure}"]
            # Rounded first: a tie reads +0.0, not -0.0 (float32 figures differ in their last bits).
            if getattr(metric_of(figure), "share", False):  # 0.078 -> 0.978 is 90 points, not +1,154%
                change = f", {round(100 * (model - value), 1) + 0.0:+.1f} points"
            else:
                change = f", {round(model / value - 1, 3) + 0.0:+.1%}" if value else ""
            lines.setdefault(name, []).append(f"{figure} {value:.4f} (model {model:.4f}{change})")
    for name, parts in lines.items():
        if f"skill.vs_{name}" in metrics:
            parts.append(f"error ratio {ratio(metrics[f'skill.vs_{name}'])} (95% interval "
                         f"{metrics[f'skill.vs_{name}_low']:.3f} to {metrics[f'skill.vs_{name}_high']:.3f})")
    return {name: "; ".join(parts) for name, parts in lines.items()}


def _few_examples(cfg, metrics: dict) -> str | None:
    """A table's or folder's test split of a few examples: each of them moves every test figure by a large step."""
    n = metrics.get("skill.examples")
    if cfg.forecast or n is None or n >= FEW_EXAMPLES:
        return None
    return (f"{n:.0f}: each is {1 / n:.0%} of every test figure (an accuracy moves {100 / n:.0f} points with one "
            "example), and the intervals above rest on them: more data, or a larger test share (`data.splits`)")


def _few_windows(cfg, metrics: dict) -> str | None:
    """A series' test stretch too short for blocks of a horizon's windows (skill.py): its figures rest on few steps."""
    from pipeline.skill import MIN_BLOCKS

    windows, horizon = metrics.get("skill.examples"), cfg.forecast.horizon if cfg.forecast else None
    if horizon is None or windows is None or windows >= MIN_BLOCKS * horizon:
        return None
    return (f"{windows:.0f}, of a {horizon}-step horizon: these figures rest on {windows + horizon - 1:.0f} steps, too "
            f"few for a firm interval; `pipeline backtest` pools the test windows of {cfg.forecast.folds} folds")
