"""``pipeline`` command line: argument parsing over the Python API (pipeline/api.py).

Nothing here imports TensorFlow at module level: ``pipeline --help`` and config
errors answer in well under a second. User mistakes print one line and exit
with the error's code (2 for config errors); Ctrl-C exits 130, SIGTERM 143.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys

from pipeline import api
from pipeline.errors import ConfigError, PipelineError, disk_full
from pipeline.report.summary import print_summary

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_SPOOLED = 6  # trained and exported, but the tracking server never took the run: `pipeline sync` it


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so runs end KILLED and files stay whole."""


def _load(args, tracked: bool = True):
    """The command's config, its dataset's name and its tracking server checked (before TensorFlow, like
    every check here: a wrong password fails in a second, not after the data is prepared)."""
    from pipeline.data.checks import check_name
    from pipeline.track.server import check

    cfg = api.load_config(args.config, args.overrides)
    check_name(cfg)
    if tracked and cfg.tracking.enabled:
        check(cfg.tracking.uri)
    return cfg


def _train(args) -> int:
    cfg = _load(args)
    if args.workers > 1:
        from pathlib import Path

        from pipeline.train.cluster import launch
        from pipeline.train.strategy import check_workers

        check_workers(cfg.train.strategy, args.workers)
        api.prepare_for_workers(cfg)  # once, before the workers start reading it
        stores = [cfg.tracking.uri, cfg.data.data_dir, cfg.data.path, cfg.export.root, cfg.workdir]
        return launch(args.config, args.overrides, args.workers, Path(cfg.workdir) / "workers", stores)
    result = api.train(cfg)
    print_summary(cfg, result)
    return EXIT_SPOOLED if result.spooled else 0


def _sync(args) -> int:
    """Deliver the spools of runs whose tracking server was away (a run folder, or every run of a workdir)."""
    from pathlib import Path

    from pipeline.track.spool import NAME, sync

    folders = [f for path in map(Path, args.runs) for f in ([path] if (path / NAME).exists()
                                                            else sorted(p.parent for p in path.glob(f"runs/*/{NAME}")))]
    if not folders:
        raise PipelineError(f"Nothing to sync: no {NAME} in {' '.join(args.runs)} (a run folder, or a workdir)")
    for folder in folders:
        done = sync(folder)
        print(f"Synced run {done.run_id} to {done.server}: {done.operations} operations, {done.metrics} metric values")
    return 0


def _tune(args) -> int:
    cfg = _load(args)
    if cfg.tune is None:
        raise ConfigError(f"{args.config} has no `tune` section: add one (configs/digits.yaml has an example)")
    outcome = api.tune(cfg, workers=args.workers, command=["tune", args.config, *args.overrides])
    if outcome is None:  # a worker: the chief reports
        return 0
    if outcome.best_config is None:
        raise PipelineError(f"No trial of the search finished with a score (trials: {outcome.folder / 'trials.csv'})")
    print(f"Best config: {outcome.best_config}  (train it: pipeline train {outcome.best_config})")
    if args.then_train:
        best = api.load_config(outcome.best_config)
        print_summary(best, api.train(best, run_tags={"tune.parent_run": outcome.parent_run_id}))
    return 0


def _backtest(args) -> int:
    outcome = api.backtest(_load(args), args.folds)
    print(outcome.table.read_text(), end="")
    print(f"Table: {outcome.table} (parent run {outcome.parent_run_id})")
    return 0


def _retrain(args) -> int:
    decision = api.retrain(_load(args))
    verdict = f"PROMOTED to serving version {decision.served.name}" if decision.promoted else "KEPT the champion"
    print(f"{verdict}: {decision.reason} (decision run {decision.run_id})")
    return decision.exit_code(args.exit_code_on_kept)


def _study(args) -> int:
    result = api.run_study(args.study, args.overrides)
    print(result.markdown)
    print(f"Table: {result.table} (parent run {result.parent_run_id})")
    return 0


def _report(args) -> int:
    uri = args.tracking_uri or f"sqlite:///{args.workdir}/mlflow.db"
    out = api.report(args.run_id, args.experiment, uri, args.out)
    print(f"Wrote {out} (also logged to the {'experiment' + chr(39) + 's report run' if args.experiment else 'run'})")
    return 0


def _prepare(args) -> int:
    if args.beam_flags and not args.beam:
        raise ConfigError(f"Beam options after `--` ({' '.join(args.beam_flags)}) need --beam")
    spec = api.prepare(_load(args, tracked=False), beam=args.beam_flags if args.beam else None)
    sizes = ", ".join(f"{k} {v}" for k, v in spec.sizes.items())
    skipped = f"; {spec.skipped} bad rows or files skipped (data.on_bad_input: skip)" if spec.skipped else ""
    print(f"Prepared {spec.name} {spec.version} ({sizes}; digest {spec.digest}){skipped}")
    return 0


def _serve(args) -> int:
    from serving.server import serve

    return serve(args)


def _config_show(args) -> int:
    print(api.load_config(args.config, args.overrides).to_yaml(), end="")
    return 0


def _config_get(args) -> int:
    """One resolved value (``tracking.uri``, ``export.root``...), for scripts and the Makefile."""
    import json

    from pipeline.config.loading import value_at

    value = value_at(api.load_config(args.config, args.overrides), args.key)
    print(json.dumps(value) if isinstance(value, (dict, list)) else value)
    return 0


def _config_schema(args) -> int:
    import json

    from pipeline.config import ExperimentConfig

    print(json.dumps(ExperimentConfig.model_json_schema(), indent=1))
    return 0


def _ui(args) -> int:
    """Print where the experiment's runs are, then become ``mlflow ui`` on 127.0.0.1 over the config's store.

    One person's browser needs one web worker, not MLflow's four; and MLflow's job runner (a process
    and seven queue consumers, for its GenAI scorers and trace roll-ups) serves nothing that the
    pipeline logs, so it stays off unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` asks for it.
    """
    import os

    cfg = api.load_config(args.config, args.overrides)
    from pipeline.track.mlflow import tracking_client

    _, experiment_id = tracking_client(cfg)  # the store and the (tagged) experiment exist from here on
    print(f"Runs of experiment {cfg.tracking.experiment!r}: "
          f"http://127.0.0.1:{args.port}/#/experiments/{experiment_id}/runs", flush=True)
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", cfg.tracking.uri,
                              "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1"])


def _augment_preview(args) -> int:
    print(f"Wrote {api.augment_preview(api.load_config(args.config, args.overrides), args.out, args.images)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Train, track and export Keras models from one YAML config.",
        epilog="Overrides are dotted key=value pairs, e.g. train.epochs=3 model.dropout=0.3.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show TensorFlow's and the libraries' own log lines (hidden by default)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p):
        p.add_argument("config", help="experiment YAML, e.g. configs/digits.yaml")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
        return p

    train = with_config(sub.add_parser("train", help="train, evaluate, track and export an experiment"))
    train.add_argument("--workers", type=_at_least(1), default=1,
                       help="start N worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy (default 1)")
    train.epilog = (f"Exit codes: 0 done, 1-5 failed (2 config, 3 data, 4 export, 5 tracking server), {EXIT_SPOOLED} "
                    "done but the tracking server never came back (`pipeline sync`), 74 a full disk, 130/143 interrupted.")
    train.set_defaults(run=_train)

    tune = with_config(sub.add_parser("tune", help="search hyperparameters (the config's `tune` section) with KerasTuner"))
    tune.add_argument("--workers", type=_at_least(0), default=1,
                      help="worker processes on 127.0.0.1 running trials in parallel (default 1); each hands over "
                           "to a fresh process before its memory grows past tune.max_memory_growth; 0 runs the "
                           "trials in this process")
    tune.add_argument("--then-train", action="store_true", help="train, track and export the best config afterwards")
    tune.set_defaults(run=_tune)

    backtest = with_config(sub.add_parser(
        "backtest", help="walk-forward backtest of a forecasting config: a run per fold, pooled test figures"))
    backtest.add_argument("--folds", type=_at_least(1), default=None, metavar="N", help="default forecast.folds (5)")
    backtest.set_defaults(run=_backtest)

    retrain = with_config(sub.add_parser(
        "retrain", help="the nightly job: check data, train a challenger, promote it only if it beats the champion",
        epilog="Exit codes: 0 done (promoted or kept), 75 another retraining holds the lock, 74 a full disk, 1-4 failed."))
    retrain.add_argument("--exit-code-on-kept", type=int, default=0, metavar="N",
                         help="exit N when the champion is kept (default 0: a kept champion is a success)")
    retrain.set_defaults(run=_retrain)

    study = sub.add_parser("study", help="train the variants of a study file side by side and compare them")
    study.add_argument("study", help="e.g. configs/studies/regularization.yaml")
    study.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides for every variant")
    study.set_defaults(run=_study)

    report = sub.add_parser("report", help="write a self-contained HTML report of a run or an experiment (and log it)")
    report.add_argument("run_id", nargs="?", help="MLflow run id (the summary of `pipeline train` prints it)")
    report.add_argument("--experiment", metavar="NAME", help="report on every run of this experiment instead")
    report.add_argument("--workdir", default="work", help="the experiment's workdir (default work)")
    report.add_argument("--tracking-uri", help="default sqlite:///<workdir>/mlflow.db")
    report.add_argument("--out", help="HTML path (default <workdir>/runs/<run id>/report.html, or "
                                      "<store folder>/reports/<experiment>.html)")
    report.set_defaults(run=_report)

    sync = sub.add_parser("sync", help="deliver the tracking a run kept on disk while its tracking server was away")
    sync.add_argument("runs", nargs="+", metavar="RUN", help="a run folder (<workdir>/runs/<id>), or a workdir for "
                                                             "all its runs")
    sync.set_defaults(run=_sync)

    prepare = with_config(sub.add_parser(
        "prepare", help="prepare the configured dataset as its own step",
        usage="pipeline prepare CONFIG [key=value ...] [--beam [-- BEAM FLAGS]]",
        epilog="With --beam, csv and image_folder datasets are prepared as an Apache Beam pipeline (the .[beam] "
               "extra); flags after -- go to Beam, e.g. -- --runner=DirectRunner --direct_num_workers=4 "
               "--direct_running_mode=multi_processing (docs/data.md has Spark, Flink and Dataflow)."))
    prepare.add_argument("--beam", action="store_true", help="prepare as an Apache Beam pipeline")
    prepare.set_defaults(run=_prepare)

    ui = with_config(sub.add_parser("ui", help="browse the experiment's runs in the MLflow UI on 127.0.0.1"))
    ui.add_argument("--port", type=int, default=5000, help="default 5000")
    ui.set_defaults(run=_ui)

    from serving.server import build_parser as serve_options

    serve = serve_options(sub.add_parser("serve", help="serve the export root over TF Serving's REST API"))
    serve.set_defaults(run=_serve)

    config = sub.add_parser("config", help="inspect configs")
    config_sub = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    with_config(config_sub.add_parser("show", help="print the resolved config")).set_defaults(run=_config_show)
    get = config_sub.add_parser("get", help="print one resolved value, e.g. tracking.uri")
    get.add_argument("config")
    get.add_argument("key")
    get.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    get.set_defaults(run=_config_get)
    config_sub.add_parser("schema", help="print the config's JSON schema (for editors)").set_defaults(
        run=_config_schema)

    preview = with_config(sub.add_parser("augment-preview", help="write a PNG grid of the configured augmentations"))
    preview.add_argument("--out", help="PNG path (default <workdir>/augment-preview-<name>.png)")
    preview.add_argument("--images", type=_at_least(1), default=6, help="sample images, one per row (default 6)")
    preview.set_defaults(run=_augment_preview)
    return parser


def _at_least(low: int):
    """An option that counts something (workers, folds, images): a whole number, at least ``low``. A lower
    value is refused here, where it would otherwise read as "the default" or as one."""
    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected at least {low}, got {value}")
        return value

    return count


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; ``key=value`` overrides may also come after options (``--workers 2 train.epochs=3``)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_flags = []
    if "--" in argv:  # what follows goes to Apache Beam (`pipeline prepare CONFIG --beam -- --runner=...`)
        argv, beam_flags = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args, extra = parser.parse_known_args(argv)
    if beam_flags and getattr(args, "run", None) is not _prepare:
        parser.error(f"flags after `--` go to Apache Beam: only `pipeline prepare --beam` takes them ({' '.join(beam_flags)})")
    args.beam_flags = beam_flags
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    from pipeline import runtime

    args = parse(argv)
    if args.verbose:
        import os

        os.environ.update({runtime.VERBOSE: "1", "TF_CPP_MIN_LOG_LEVEL": "0", "MLFLOW_LOGGING_LEVEL": "INFO"})
    runtime.quiet_mlflow()  # before anything imports MLflow
    signal.signal(signal.SIGTERM, _raise_terminated)
    # Ctrl-C stops a run cleanly even when started from a shell that ignored SIGINT (`cmd &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return args.run(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a full disk is the machine's, not a bug: one line too; anything else keeps its traceback
        full = disk_full(exc)
        if full is None:
            raise
        print(f"error: {full}", file=sys.stderr)
        return full.exit_code


def run() -> None:
    """The ``pipeline`` command (and ``python -m pipeline``): ``main``, then exit with its code.

    Before exiting, the objects of the job are frozen out of Python's cyclic collector: a process that
    ran TensorFlow holds half a million and more, and the interpreter's shutdown walks them all for cycles
    only to hand the memory back to the system (bench/README.md, the exit). Exit handlers still run and files
    still close. ``main`` itself, called in a longer-lived process (a test, a notebook), freezes nothing.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


def _raise_terminated(signum, frame):
    raise Terminated()
