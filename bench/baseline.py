"""Each shipped experiment beside its classical baselines, as every run scores them (pipeline/baselines.py).

Usage: python bench/baseline.py [digits|ames|movielens|electricity ...] [-- key=value ...]
(default: all; overrides apply to each experiment config)

One implementation: the figures are the run's own ``baseline.<name>.<metric>`` metrics (fitted on
the training split, scored on the test split the model is scored on) and its skill ratio.
"""

from __future__ import annotations

import sys

EXPERIMENTS = {
    # name: (config, the metric compared)
    "digits": ("configs/digits.yaml", "accuracy"),
    "ames": ("configs/ames.yaml", "rmse_log"),
    "movielens": ("configs/movielens.yaml", "rmse"),
    "electricity": ("configs/electricity.yaml", "mae"),
}


def main(argv: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipeline import api

    names = [a for a in argv if a in EXPERIMENTS] or list(EXPERIMENTS)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    table = Table(title="each run beside its baselines (same test split; pipeline/baselines.py, forecast.py)")
    for col in ("experiment", "model", "metric", "test", "error ratio (95%)", "seconds"):
        table.add_column(col)
    for name in names:
        path, metric = EXPERIMENTS[name]
        cfg = api.load_config(path, ["export.enabled=false", "train.verbose=0", *overrides])
        result = api.train(cfg)
        m = result.test_metrics
        run_seconds = sum(result.seconds.values())
        table.add_row(name, f"pipeline {cfg.model.name}", metric, f"{m[f'test_{metric}']:.4f}",
                      f"{m['skill.ratio']:.3f} ({m['skill.ratio_low']:.3f} to {m['skill.ratio_high']:.3f})"
                      if "skill.ratio" in m else "-", f"{run_seconds:.1f}")
        for key in (k for k in m if k.startswith("baseline.") and k.endswith(f".{metric}")):
            baseline = key.split(".")[1]
            table.add_row("", baseline, metric, f"{m[key]:.4f}",
                          f"{m[f'skill.vs_{baseline}']:.3f}" if f"skill.vs_{baseline}" in m else "-",
                          f"{result.seconds.get('baselines', 0):.1f} (all)")
        verdict = result.diagnosis.verdict if result.diagnosis else "-"
        table.add_row("", "[b]fit verdict[/b]", "", verdict, "", "", end_section=True)
    Console(width=140).print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
