"""Performance of the training pipeline: every figure a ratio of two things measured side by side.

Usage: python bench/perf.py [--repeats 3] [--quick] [--out bench/results]   (``make bench``)

Each group of figures runs in a fresh process (one TensorFlow state per group);
inside it the two sides of a ratio alternate, A B A B A B, and each figure is the
median over ``--repeats``. Throughput is steady state: a callback starts the clock
after the first compiled call of each ``fit``, so starting the iterator and filling
the prefetch buffer are left out on both sides.

Groups:
  input     the real pipeline (TFDS -> cache -> shuffle -> batch -> augment -> prefetch)
            against the same model fed batches already in memory (input efficiency);
  naive     the real pipeline against the tutorial way: augmentation layers inside
            the model, NumPy arrays into ``fit`` (speed-up);
  knobs     what steps_per_execution, jit_compile, parallel augmentation and
            deterministic=false give on this machine (ratios to the shipped config);
  tracking  epoch time of ``train`` with MLflow tracking against without;
  startup   ``pipeline train`` until its first training step, and ``pipeline --help``,
            against ``python -c "import tensorflow"``;
  families  digits, Ames and MovieLens through ``train``: training and inference
            examples/s, evaluation and export time against one epoch.

Writes <out>/perf.json and <out>/perf.md (machine, command, every figure).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import machine, parser, publish, scratch

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2"}


# ---- measuring ----------------------------------------------------------------------------


def _setup(config: str, overrides: list[str]):
    """The experiment's config, data (augmenter as configured), task and strategy, as ``train`` makes them."""
    from pipeline import runtime
    from pipeline.config import load

    cfg = load(ROOT / "configs" / config, overrides)
    runtime.configure(cfg)
    from pipeline import runtime
    from pipeline.data import dataset
    from pipeline.data.augment import build_augmenter
    from pipeline.tasks import task_for
    from pipeline.train.strategy import make_strategy

    strategy = make_strategy(cfg.train)
    runtime.determinism(cfg)
    runtime.seed(cfg)
    augmenter = build_augmenter(cfg.augment, cfg.seed)
    in_model = cfg.augment.placement == "model"
    data = dataset.load(cfg, augmenter=None if in_model else augmenter)
    return cfg, data, task_for(cfg, data.spec), strategy, augmenter if in_model else None


def _model(cfg, data, task, strategy, augmenter=None):
    from pipeline import runtime
    from pipeline.train.loop import build_compiled

    runtime.seed(cfg)
    return build_compiled(cfg, data, task, strategy, augmenter)


def _clock():
    """A callback timing the steps after the first compiled call (``steps_per_execution`` steps) of a fit call."""
    import keras

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start, self.start_step, self.end, self.steps = None, 0, None, 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps = batch + 1
            if self.start is None:
                self.start, self.start_step = time.perf_counter(), batch + 1

        def on_train_end(self, logs=None):
            self.end = time.perf_counter()

        def rate(self, batch_size: int) -> float:
            return (self.steps - self.start_step) * batch_size / (self.end - self.start)

    return Clock()


def _phases():
    """A callback recording, per epoch, the seconds of its training steps (up to the validation pass) and in all."""
    import keras

    class Phases(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.train_s, self.epoch_s = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()
            self.validating = False

        def on_test_begin(self, logs=None):
            if not self.validating:
                self.train_s.append(time.perf_counter() - self.t)
                self.validating = True

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_s.append(time.perf_counter() - self.t)

    return Phases()


def throughput(model, x, steps: int, batch_size: int, y=None) -> float:
    """Training examples/s of ``model.fit`` over ``steps`` steps (a dataset, or arrays with ``y``)."""
    clock = _clock()
    if y is None:
        model.fit(x, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock], shuffle=False)
    else:
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[clock], shuffle=True)
    return clock.rate(batch_size)


def side_by_side(sides: dict, repeats: int) -> dict:
    """Call each side's measuring function in turn, ``repeats`` rounds after one warm-up round.

    Returns each side's median and runs; ``ratio`` pairs the runs of one round, so a slow
    spell of the shared machine hits both sides of a ratio alike.
    """
    for measure in sides.values():
        measure()  # traces, fills caches, lets tf.data's autotuner settle
    runs = {name: [] for name in sides}
    for round_ in range(repeats):
        order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]  # A B, B A, ...: drift hits both sides
        for name in order:
            runs[name].append(sides[name]())
    return {name: {"median": round(statistics.median(values), 3), "runs": values} for name, values in runs.items()}


def ratio(results: dict, a: str, b: str) -> float:
    """The median over rounds of a's figure divided by b's in the same round."""
    return round(statistics.median(x / y for x, y in zip(results[a]["runs"], results[b]["runs"])), 3)


def _in_memory(data, steps: int):
    """One epoch of the real pipeline's batches (augmented), held as tensors, replayed without any input work."""
    import tensorflow as tf

    batches = [b for b in data.train.take(steps) if b[1].shape[0] == data.global_batch]  # full batches only
    stacked = tf.nest.map_structure(lambda *t: tf.stack(t), *batches)
    return tf.data.Dataset.from_tensor_slices(stacked).repeat()


# ---- groups (each in its own process) -------------------------------------------------------


def group_input(args) -> dict:
    cfg, data, task, strategy, _ = _setup("digits.yaml", args.overrides)
    steps = data.steps_per_epoch * args.epochs
    memory = _in_memory(data, data.steps_per_epoch)
    real_model, memory_model = (_model(cfg, data, task, strategy) for _ in range(2))
    r = side_by_side({
        "real pipeline": lambda: throughput(real_model, data.train, steps, data.global_batch),
        "tensors in memory": lambda: throughput(memory_model, memory, steps, data.global_batch),
    }, args.repeats * 4)  # short rounds, many of them: a 5% effect under +-10% round-to-round noise
    return {"examples_per_s": r, "input_efficiency": ratio(r, "real pipeline", "tensors in memory"),
            "augmentation": [a.type for a in cfg.augment.layers], "batch": data.global_batch}


def group_naive(args) -> dict:
    import numpy as np

    from pipeline.data.augment import build_augmenter

    cfg, data, task, strategy, _ = _setup("digits.yaml", args.overrides)
    steps = data.steps_per_epoch * args.epochs
    images, labels = [], []
    for x, y in data.train_epoch().unbatch().as_numpy_iterator():  # the tutorial's arrays (not augmented)
        images.append(x["image"])
        labels.append(y)
    repeat = -(-steps // data.steps_per_epoch)
    x_np = {"image": np.tile(np.stack(images), (repeat, 1, 1, 1))}
    y_np = np.tile(np.stack(labels), repeat)
    ours = _model(cfg, data, task, strategy)
    naive = _model(cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "steps_per_execution": 1, "jit_compile": False})}), data, task, strategy, build_augmenter(cfg.augment, cfg.seed))
    r = side_by_side({
        "pipeline": lambda: throughput(ours, data.train, steps, data.global_batch),
        "naive (augmentation in the model, NumPy into fit)": lambda: throughput(naive, x_np, steps, data.global_batch, y_np),
    }, args.repeats * 2)
    return {"examples_per_s": r, "speed_up": ratio(r, "pipeline", "naive (augmentation in the model, NumPy into fit)")}


KNOBS = {  # process kind -> {variant: overrides}; determinism is process-wide (oneDNN is chosen at import)
    "deterministic": {
        "shipped config": [],
        "steps_per_execution=1": ["train.steps_per_execution=1"],
        "tf.data threads=2": ["data.threads=2"],
        "augmentation one batch at a time": ["augment.chunk=32"],
        "augmentation in the model": ["augment.placement=model"],
        "no cache": ["data.cache=false"],
        "last partial batch kept": ["data.drop_remainder=false"],
    },
    "nondeterministic": {
        "deterministic=false": ["deterministic=false"],
        "deterministic=false, jit_compile": ["deterministic=false", "train.jit_compile=true"],
    },
}


def knob_process(kind: str, args) -> dict:
    """Examples/s of each knob of ``kind``, measured side by side in this process (one round after a warm-up)."""
    models = {}
    for name, overrides in KNOBS[kind].items():
        cfg, data, task, strategy, in_model = _setup("digits.yaml", [*args.overrides, *overrides])
        models[name] = (_model(cfg, data, task, strategy, in_model), data)
    steps = next(iter(models.values()))[1].steps_per_epoch * args.epochs
    r = side_by_side({name: (lambda m=m, d=d: throughput(m, d.train, steps, d.global_batch))
                      for name, (m, d) in models.items()}, 1)
    return {name: v["median"] for name, v in r.items()}


def group_knobs(args) -> dict:
    """Alternate a deterministic and a nondeterministic process 3 times; ratios to the shipped config."""
    rounds = []
    for _ in range(min(args.repeats, 3)):
        rounds.append({**run_group("knobs-deterministic", args), **run_group("knobs-nondeterministic", args)})
    names = [n for kind in KNOBS.values() for n in kind]
    return {name: {"examples_per_s": round(statistics.median(r[name] for r in rounds), 1),
                   "ratio_to_shipped": round(statistics.median(r[name] / r["shipped config"] for r in rounds), 3)}
            for name in names}


def group_tracking(args) -> dict:
    """Epochs of one model, alternately with the pipeline's MLflow epoch logging (a real SQLite store) and without.

    Same model, data and callbacks on both sides, validation pass included: what differs is
    exactly the per-epoch tracking. (Per-run costs, such as parameters and artifacts, are paid
    once before and after the epochs; ``seconds_setup``/``seconds_log`` in each run show them.)
    """
    from pipeline import track

    workdir = scratch("bench-tracking-")
    cfg, data, task, strategy, _ = _setup("digits.yaml", [*args.overrides, f"workdir={workdir}"])
    model = _model(cfg, data, task, strategy)
    epochs_per_side = 2 if args.quick else 4
    done = [0]

    def epochs(callbacks: list) -> float:
        phases = _phases()  # last: the logger's time is inside the epoch
        model.fit(data.train, validation_data=data.validation, steps_per_epoch=data.steps_per_epoch, verbose=0,
                  initial_epoch=done[0], epochs=done[0] + epochs_per_side, callbacks=[*callbacks, phases])
        done[0] += epochs_per_side
        return statistics.median(phases.epoch_s)

    with track.start_run(cfg, run_name="bench-tracking") as run:
        logger = track.epoch_logger(run)
        r = side_by_side({"tracked": lambda: epochs([logger]), "untracked": lambda: epochs([])}, args.repeats * 3)
    return {"epoch_seconds": r, "tracking_overhead": ratio(r, "tracked", "untracked"), "store": cfg.tracking.uri}


def group_startup(args) -> dict:
    python = sys.executable
    env = {**os.environ, **QUIET}

    def wall(cmd: list[str], until: str | None = None) -> float:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if until is None:
            proc.communicate()
        else:
            for line in proc.stdout:
                if line.startswith(until):
                    break
            else:
                raise SystemExit(f"{' '.join(cmd)} never printed {until!r}")
        seconds = time.perf_counter() - start
        proc.kill()
        proc.wait()
        return seconds

    workdir = scratch("bench-startup-")
    train = [python, "-m", "pipeline", "train", "configs/digits.yaml", f"workdir={workdir}", "train.verbose=2",
             *args.overrides]
    subprocess.run([*train, "train.epochs=1"], cwd=ROOT, env=env, capture_output=True, check=True)  # data prepared
    r = side_by_side({
        "pipeline train to its first step": lambda: wall(train, until="Epoch 1/"),
        "pipeline --help": lambda: wall([python, "-m", "pipeline", "--help"]),
        "python -c 'import tensorflow'": lambda: wall([python, "-c", "import tensorflow"]),
    }, args.repeats)
    return {"seconds": r, "train_to_first_step_over_tensorflow_import": ratio(
        r, "pipeline train to its first step", "python -c 'import tensorflow'"),
        "help_over_tensorflow_import": ratio(r, "pipeline --help", "python -c 'import tensorflow'")}


FAMILIES = {"image classification (digits)": "digits.yaml", "house prices (Ames)": "ames.yaml",
            "recommendation (MovieLens)": "movielens.yaml"}


def group_families(args) -> dict:
    from pipeline import runtime
    from pipeline.config import load

    runtime.configure(load(ROOT / "configs" / "digits.yaml"))
    import tensorflow as tf

    from pipeline.data import dataset
    from pipeline.export.saved_model import as_served
    from pipeline.jobs.train import train

    def one(config: str) -> dict:
        workdir = scratch("bench-family-")
        cfg = load(ROOT / "configs" / config, [*args.overrides, f"workdir={workdir}", "tracking.enabled=false",
                                               f"train.epochs={min(args.epochs, 4) + 1}",
                                               "train.early_stopping.enabled=false"])
        phases = _phases()
        result = train(cfg, callbacks=[phases], alias=None)
        data = dataset.load(cfg)
        serve = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
        batches = [as_served(data.spec, x) for x, _ in data.test]  # raw dtypes (uint8 pixels): the pipeline decoded them
        serve(**batches[0])  # warm
        start = time.perf_counter()
        served = sum(int(next(iter(serve(**x).values())).shape[0]) for x in batches)
        infer = time.perf_counter() - start
        epoch = statistics.median(phases.epoch_s[1:])
        return {"train_examples_per_s": data.spec.sizes["train"] / statistics.median(phases.train_s[1:]),
                "inference_examples_per_s": served / infer, "epoch_s": epoch,
                "evaluate_over_epoch": result.seconds["evaluate"] / epoch,  # with the family's own figures (ranking)
                "baselines_over_epoch": result.seconds.get("baselines", 0.0) / epoch,
                "export_over_epoch": result.seconds["export"] / epoch}

    out = {}
    families = dict(list(FAMILIES.items())[:1]) if args.quick else FAMILIES
    for _ in range(min(args.repeats, 3)):
        for family, config in families.items():
            out.setdefault(family, []).append(one(config))
    return {family: {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
            for family, runs in out.items()}


GROUPS = {"input": group_input, "naive": group_naive, "knobs": group_knobs, "tracking": group_tracking,
          "startup": group_startup, "families": group_families}
HELPERS = {f"knobs-{kind}": (lambda args, kind=kind: knob_process(kind, args)) for kind in KNOBS}


# ---- the driver -----------------------------------------------------------------------------


def run_group(name: str, args) -> dict:
    """Run one group in a fresh process; return what it printed as JSON on its last line."""
    cmd = [sys.executable, __file__, "--group", name, "--repeats", str(args.repeats), "--epochs", str(args.epochs),
           *(["--quick"] if args.quick else []), "--set", *args.set]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **QUIET}, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench group {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    options = parser(__doc__, "perf")
    options.add_argument("--repeats", type=int, default=5, help="rounds per figure; medians are reported (default 5)")
    options.add_argument("--epochs", type=int, default=3, help="epochs of steps per throughput measurement (default 3)")
    options.add_argument("--group", choices=[*GROUPS, *HELPERS], help="run one group in this process (the driver uses it)")
    options.add_argument("--only", nargs="*", choices=GROUPS, help="these groups only")
    options.add_argument("--set", nargs="*", default=[], metavar="key=value", help="config overrides for every group")
    args = options.parse_args()
    args.overrides = [*(["model.width=8", "model.head_units=16", "data.batch_size=128"] if args.quick else []), *args.set]
    if args.quick:
        args.repeats, args.epochs = 1, 2
    if args.group:
        print(json.dumps({**GROUPS, **HELPERS}[args.group](args)))
        return
    results = {"machine": machine(), "command": "python bench/perf.py " + " ".join(sys.argv[1:]),
               "repeats": args.repeats}
    for name in args.only or GROUPS:
        started = time.perf_counter()
        results[name] = run_group(name, args)
        print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    publish(args.out, "perf", results, markdown(results))


def markdown(r: dict) -> str:
    """The figures as one table: what, goal, measured, and the two sides behind the ratio."""
    rows = []

    def add(figure, goal, value, detail):
        rows.append(f"| {figure} | {goal} | **{value}** | {detail} |")

    def sides(block, unit):
        return "; ".join(f"{name} {v['median']:.4g} {unit}" for name, v in block.items())

    if "input" in r:
        add("input efficiency: real pipeline / tensors in memory", ">= 0.95", r["input"]["input_efficiency"],
            sides(r["input"]["examples_per_s"], "ex/s") + f" (augmentation: {', '.join(r['input']['augmentation'])})")
    if "naive" in r:
        add("speed-up over the naive tutorial pipeline", "report", r["naive"]["speed_up"],
            sides(r["naive"]["examples_per_s"], "ex/s"))
    for name, k in r.get("knobs", {}).items():
        add(f"knob: {name} / shipped config", "report", k["ratio_to_shipped"], f"{k['examples_per_s']:.0f} ex/s")
    if "tracking" in r:
        add("tracking overhead: epoch with MLflow / without", "<= 1.03", r["tracking"]["tracking_overhead"],
            sides(r["tracking"]["epoch_seconds"], "s per epoch"))
    if "startup" in r:
        s = r["startup"]
        add("start-up: `pipeline train` to its first step / `import tensorflow`", "report",
            s["train_to_first_step_over_tensorflow_import"], sides(s["seconds"], "s"))
        add("`pipeline --help` / `import tensorflow`", "report", s["help_over_tensorflow_import"], "")
    for family, f in r.get("families", {}).items():
        add(f"{family}: evaluation / one epoch", "report", f["evaluate_over_epoch"], f"epoch {f['epoch_s']:.3g} s")
        add(f"{family}: classical baselines / one epoch", "report", f["baselines_over_epoch"], "")
        add(f"{family}: export / one epoch", "report", f["export_over_epoch"], "")
        add(f"{family}: inference / training examples per second", "report",
            round(f["inference_examples_per_s"] / f["train_examples_per_s"], 2),
            f"training {f['train_examples_per_s']:.0f} ex/s, inference {f['inference_examples_per_s']:.0f} ex/s")
    head = [f"Machine: {r['machine']}. Command: `{r['command']}`. Each figure: the median over {r['repeats']} "
            "rounds of a ratio taken side by side (see bench/README.md).", "",
            "| figure | goal | measured | sides (medians) |", "| --- | --- | --- | --- |"]
    return "\n".join(head + rows) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
