"""What each GPU knob gives, measured side by side on a GPU: the plan of bench/README.md, ready to run.

Usage: python bench/gpu.py [--repeats 3] [--epochs 10] [--batch 32,256,1024] [--quick]   (``make bench-gpu``)

On a machine with a GPU, each variant of the digits experiment trains in its own
process (mixed precision and XLA are process-wide choices), the variants in turn,
``repeats`` rounds; a figure is the median over rounds of the variant's steady-state
training examples/s divided by the baseline's in the same round. Variants:

  baseline              float32, augmentation in tf.data (CPU), deterministic, batch 32
  nondeterministic      deterministic=false (parallel augmentation, cuDNN autotuning)
  mixed_float16         + train.precision=mixed_float16 (Tensor Cores)
  xla                   + train.jit_compile=true
  augmentation on GPU   + augment.placement=model
  batch B               + data.batch_size=B, learning rate scaled linearly from 32

Without a GPU it says so and exits 3 (``--quick`` runs the same code on the CPU with
two tiny variants, for the test of this script). Writes <out>/gpu.json and gpu.md.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import machine, parser, publish

ROOT = Path(__file__).resolve().parents[1]
FAST = ["deterministic=false"]

RUNNER = """
import json, sys
sys.path.insert(0, "bench")
from common import scratch
from perf import _setup, _model, throughput
cfg, data, task, strategy, in_model = _setup("digits.yaml", [f"workdir={scratch('bench-gpu-')}", *sys.argv[2:]])
model = _model(cfg, data, task, strategy, in_model)
steps = data.steps_per_epoch * int(sys.argv[1])
throughput(model, data.train, steps, data.global_batch)  # warm-up: tracing, cache, autotuning
print("RESULT " + json.dumps({"examples_per_s": throughput(model, data.train, steps, data.global_batch)}))
"""


def variants(batches: list[int]) -> dict[str, list[str]]:
    found = {
        "baseline": [],
        "nondeterministic": FAST,
        "mixed_float16": [*FAST, "train.precision=mixed_float16"],
        "xla": [*FAST, "train.jit_compile=true"],
        "mixed_float16 + xla": [*FAST, "train.precision=mixed_float16", "train.jit_compile=true"],
        "augmentation on GPU": [*FAST, "augment.placement=model"],
    }
    for b in batches:  # linear scaling rule (Goyal et al.) from the shipped batch of 32 and lr of 0.003
        found[f"batch {b}, mixed_float16 + augmentation on GPU"] = [
            *FAST, "train.precision=mixed_float16", "augment.placement=model", f"data.batch_size={b}",
            f"optimizer.learning_rate={0.003 * b / 32:g}"]
    return found


def measure(overrides: list[str], epochs: int) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(epochs), *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"variant {overrides} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    line = next(row for row in done.stdout.splitlines() if row.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])["examples_per_s"]


def gpus() -> list[str]:
    """Physical GPUs, asked in a subprocess so this process stays free of TensorFlow.

    On Linux a GPU is a device file (NVIDIA's, or ROCm's ``/dev/kfd``): without one, there is no
    need to start TensorFlow (seconds of CPU) to hear that it sees none.
    """
    if sys.platform == "linux" and not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/kfd"):
        return []
    code = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout.strip().splitlines()
    return ["GPU"] * int(out[-1]) if out and out[-1].isdigit() else []


def main() -> None:
    options = parser(__doc__, "gpu")
    options.add_argument("--repeats", type=int, default=3)
    options.add_argument("--epochs", type=int, default=10, help="epochs of steps per measurement (default 10)")
    options.add_argument("--batch", default="256,1024", help="larger batches to try (default 256,1024)")
    args = options.parse_args()
    found = gpus()
    if args.quick:  # the code path on the CPU, two tiny variants: checks the script, measures nothing of GPUs
        plan = {"baseline": ["model.width=8", "model.head_units=16", "data.batch_size=128"],
                "nondeterministic": ["model.width=8", "model.head_units=16", "data.batch_size=128", *FAST]}
        args.repeats, args.epochs = 1, 2
    elif not found:
        print("No GPU here: bench/gpu.py measures GPU knobs only (bench/README.md has the plan).", file=sys.stderr)
        sys.exit(3)
    else:
        plan = variants([int(b) for b in args.batch.split(",") if b])
    runs: dict[str, list[float]] = {name: [] for name in plan}
    for _ in range(args.repeats):
        for name, overrides in plan.items():
            runs[name].append(measure(overrides, args.epochs))
    base = runs["baseline"]
    results = {"machine": machine(), "gpus": len(found), "command": "python bench/gpu.py " + " ".join(sys.argv[1:]),
               "repeats": args.repeats, "variants": {
                   name: {"examples_per_s": round(statistics.median(v), 1),
                          "ratio_to_baseline": round(statistics.median(x / b for x, b in zip(v, base)), 3),
                          "runs": v, "overrides": plan[name]} for name, v in runs.items()}}
    lines = [f"Machine: {results['machine']}, {len(found)} GPU(s). Command: `{results['command']}`. "
             f"Medians of {args.repeats} rounds.", "", "| variant | examples/s | / baseline |", "| --- | --- | --- |"]
    lines += [f"| {n} | {v['examples_per_s']:.0f} | **{v['ratio_to_baseline']}** |" for n, v in results["variants"].items()]
    publish(args.out, "gpu", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
