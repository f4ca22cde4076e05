"""Strategies side by side on the digits config, and the cost of a kill-and-resume cycle.

Usage: python bench/distribute.py [--epochs 6] [--repeats 3]

Each variant runs in its own processes (one strategy per process), ``repeats``
times; a figure is the median. Throughput is training examples per second over
the epochs after the first (tracing and caching happen in the first), an epoch
being its training steps plus the validation pass. Writes bench/results/distribute.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["tracking.enabled=false", "export.enabled=false", "train.verbose=0", "train.early_stopping.enabled=false"]
VARIANTS = {
    "default strategy, 1 device": ["train.strategy=default"],
    "mirrored, 1 logical CPU": ["train.strategy=mirrored", "train.virtual_cpus=1"],
    "mirrored, 2 logical CPUs": ["train.strategy=mirrored", "train.virtual_cpus=2"],
    "multi-worker, 2 local workers": ["train.strategy=multi_worker"],
}

RUNNER = """
import json, sys, time
from pipeline.config import load
from pipeline import runtime
cfg = load("configs/digits.yaml", sys.argv[1:])
runtime.configure(cfg)
import keras
import tensorflow_datasets as tfds
import pipeline.data.builders
from pipeline.jobs.train import train
times = []
class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None): times.append(time.perf_counter() - self.t)
result = train(cfg, callbacks=[Timer()])
examples = tfds.builder(cfg.data.dataset, data_dir=cfg.data.data_dir).info.splits[cfg.data.splits.train].num_examples
print("RESULT " + json.dumps({"epoch_s": times, "examples": examples, "val_loss": result.history["val_loss"][-1]}))
"""


def run_variant(overrides: list[str], workers: int, workdir: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = [f"workdir={workdir}", *COMMON, *overrides]
    if workers == 1:
        out = subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    else:
        from pipeline.train.cluster import free_ports

        cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(workers)]}
        procs = [subprocess.Popen([sys.executable, "-c", RUNNER, *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, env={**env, "TF_CONFIG": json.dumps(
                                      {"cluster": cluster, "task": {"type": "worker", "index": i}})})
                 for i in range(workers)]
        out = procs[0].communicate()[0]
        for p in procs[1:]:
            p.wait()
    line = next(row for row in out.splitlines() if row.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def kill_and_resume(epochs: int, workdir: str) -> dict:
    """Wall time of an uninterrupted run vs a run killed mid-epoch (after half the epochs) and rerun."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pipeline", "train", "configs/digits.yaml", "tracking.enabled=false",
           "export.enabled=false", "train.early_stopping.enabled=false", f"train.epochs={epochs}", "train.verbose=2"]
    start = time.perf_counter()
    subprocess.run([*cmd, f"workdir={workdir}/whole"], cwd=ROOT, env=env, capture_output=True, check=True)
    whole = time.perf_counter() - start

    start = time.perf_counter()
    proc = subprocess.Popen([*cmd, f"workdir={workdir}/killed"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    target = f"Epoch {epochs // 2 + 1}/{epochs}"
    for line in proc.stdout:
        if line.startswith(target):
            break
    time.sleep(0.2)  # inside that epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run([*cmd, f"workdir={workdir}/killed"], cwd=ROOT, env=env, capture_output=True, check=True)
    interrupted = time.perf_counter() - start
    return {"uninterrupted_s": whole, "killed_and_resumed_s": interrupted, "lost_s": interrupted - whole}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict = {"command": " ".join(["python", "bench/distribute.py", *sys.argv[1:]]),
                     "machine": machine(), "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, overrides in VARIANTS.items():
                workers = 2 if "workers" in name else 1
                r = run_variant([*overrides, f"train.epochs={args.epochs}"], workers, f"{tmp}/{repeat}-{len(results['variants'].get(name, []))}-{workers}-{name[:5]}")
                per_epoch = statistics.median(r["epoch_s"][1:])
                results["variants"].setdefault(name, []).append(r["examples"] / per_epoch)
        epoch_s = r["examples"] / statistics.median(results["variants"]["default strategy, 1 device"])
        cycles = [kill_and_resume(args.epochs, f"{tmp}/kill{i}") for i in range(args.repeats)]
    base = statistics.median(results["variants"]["default strategy, 1 device"])
    print(f"\n{'variant':34} {'examples/s':>12} {'vs default':>11}")
    summary = {}
    for name, values in results["variants"].items():
        med = statistics.median(values)
        summary[name] = {"examples_per_s": med, "ratio_to_default": med / base, "runs": values}
        print(f"{name:34} {med:12.0f} {med / base:11.2f}")
    lost = statistics.median(c["lost_s"] for c in cycles)
    summary["kill_and_resume"] = {"median_lost_s": lost, "one_epoch_s": epoch_s, "runs": cycles}
    print(f"\nkill mid-epoch + rerun vs uninterrupted: {lost:.1f} s lost (one epoch {epoch_s:.1f} s + start-up); "
          f"runs {[round(c['lost_s'], 1) for c in cycles]}")
    out = ROOT / "bench" / "results" / "distribute.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**results, "summary": summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
