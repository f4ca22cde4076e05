"""The REST server under load, beside the direct in-process call of the same SavedModel.

Usage: python bench/serving.py [--seconds 5] [--repeats 3] [--quick]

1. Trains and exports a digits model (a few epochs) into a temporary export root
   and starts ``pipeline serve`` on a free loopback port.
2. Direct: ``signatures["serving_default"]`` called in this process, one call at
   a time, for 1 and 32 examples: p50 and p99 latency.
3. HTTP: an aiohttp load generator at concurrency 1, 8 and 32 sends row-format
   requests of 1 and 32 examples for ``--seconds`` each: p50, p99, requests/s.
   The overhead of the HTTP path is HTTP p50 minus direct p50 (1 example, c=1).
   Load generator and server share the machine's cores.
4. Hot swap: at concurrency 8, three new versions are published (hidden folder,
   then rename, as the exporter does) while requests run: failed requests are
   counted, and the server must end on the newest version.

Each figure is the median over ``--repeats`` rounds. Writes bench/results/serving.json and serving.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, parser, publish

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)
BATCHES = (1, 32)


def export_model(workdir: Path, epochs: int) -> Path:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-m", "pipeline", "train", "configs/digits.yaml", f"workdir={workdir}",
                    f"train.epochs={epochs}", "train.verbose=0", "tracking.enabled=false"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return workdir / "exports"


def start_server(root: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--root", str(root), "--port", str(port),
                             "--poll", "0.5", "--log-level", "warning"], cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    import urllib.request

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/digits", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8)


def direct(path: Path, batch: int, calls: int) -> dict:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    x = tf.constant(images(batch))
    for _ in range(20):
        serve(image=x)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        serve(image=x)["probabilities"].numpy()
        times.append(time.perf_counter() - t0)
    return summary(times, sum(times))


def summary(latencies: list[float], seconds: float, failures: int = 0) -> dict:
    ms = np.asarray(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "rps": round(len(ms) / seconds, 1), "requests": len(ms), "failures": failures}


async def load(port: int, batch: int, concurrency: int, seconds: float, during=None) -> dict:
    import aiohttp

    body = json.dumps({"instances": images(batch).tolist()}).encode()
    url = f"http://127.0.0.1:{port}/v1/models/digits:predict"
    latencies, failures = [], [0]
    stop = time.perf_counter() + seconds

    async def client(session):
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        failures[0] += 1
                        continue
            except aiohttp.ClientError:
                failures[0] += 1
                continue
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        tasks = [asyncio.create_task(client(session)) for _ in range(concurrency)]
        if during is not None:
            await asyncio.to_thread(during)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return summary(latencies, elapsed, failures[0])


def publish_versions(root: Path, source: Path, count: int, pause: float) -> None:
    for _ in range(count):
        time.sleep(pause)
        version = 1 + max(int(p.name) for p in root.iterdir() if p.name.isdigit())
        tmp = root / f".tmp-bench-{version}"
        shutil.copytree(source, tmp)
        os.rename(tmp, root / str(version))


def newest_version(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/digits", timeout=5) as r:
        return json.loads(r.read())["model_version_status"][0]["version"]


def median_of(rounds: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0]}


def main() -> None:
    options = parser(__doc__, "serving")
    options.add_argument("--seconds", type=float, default=5.0, help="load per configuration and round (default 5)")
    options.add_argument("--repeats", type=int, default=3, help="rounds; figures are medians (default 3)")
    args = options.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipeline.train.cluster import free_ports

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        root = export_model(work, 1 if args.quick else 5)
        port = free_ports(1)[0]
        server = start_server(root, port)
        try:
            results = run(root, port, args)
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    publish(args.out, "serving", results, markdown(results))


def run(root: Path, port: int, args) -> dict:
    model = root / "digits"
    results = {"machine": machine(),
               "command": "python bench/serving.py " + " ".join(sys.argv[1:]), "direct": {}, "http": {}}
    calls = 200 if args.quick else 2000
    for batch in BATCHES:
        results["direct"][f"batch {batch}"] = median_of([direct(model / "1", batch, calls) for _ in range(args.repeats)])
    for batch in BATCHES:
        for c in CONCURRENCY:
            rounds = [asyncio.run(load(port, batch, c, args.seconds)) for _ in range(args.repeats)]
            results["http"][f"batch {batch}, concurrency {c}"] = median_of(rounds)
            print(batch, c, results["http"][f"batch {batch}, concurrency {c}"], flush=True)
    http1 = results["http"]["batch 1, concurrency 1"]["p50_ms"]
    results["http_p50_overhead_ms"] = round(http1 - results["direct"]["batch 1"]["p50_ms"], 3)
    before = newest_version(port)
    swap = asyncio.run(load(port, 1, 8, max(args.seconds, 3 * 2.5 + 3),
                            during=lambda: publish_versions(model, model / "1", 3, 2.5)))
    time.sleep(2)
    results["hot_swap"] = {**swap, "version_before": before, "version_after": newest_version(port)}
    return results


def markdown(r: dict) -> str:
    lines = [f"Machine: {r['machine']}. Command: `{r['command']}`.", "",
             "| path | batch | concurrency | p50 ms | p99 ms | requests/s |", "| --- | --- | --- | --- | --- | --- |"]
    for key, v in r["direct"].items():
        lines.append(f"| direct call | {key.split()[1]} | 1 | {v['p50_ms']} | {v['p99_ms']} | {v['rps']} |")
    for key, v in r["http"].items():
        batch, conc = key.replace("batch ", "").split(", concurrency ")
        lines.append(f"| HTTP | {batch} | {conc} | {v['p50_ms']} | {v['p99_ms']} | {v['rps']} |")
    s = r["hot_swap"]
    lines += ["", f"HTTP p50 overhead (1 example, concurrency 1): {r['http_p50_overhead_ms']} ms.",
              f"Hot swap: {s['requests']} requests at concurrency 8 while 3 versions were published: "
              f"{s['failures']} failed; served version {s['version_before']} -> {s['version_after']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
