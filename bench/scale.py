"""Preparation, training, evaluation and export as a table grows: seconds per row and peak memory.

Usage: python bench/scale.py [--large] [--quick] [--out bench/results]   (``make bench-scale``)

For each size (10k, 100k and 1M rows; also 10M with ``--large``; 2k alone with
``--quick``) a synthetic table of 12 numeric and 6 categorical columns and a numeric
label ``y`` is written as CSV, then three fresh processes run on it:

  read_csv  ``pandas.read_csv`` of the file: the yardstick preparation is measured against;
  prepare   the dataset's preparation (what ``pipeline prepare`` runs before it reads the
            prepared copy back): streamed reading, shuffled shards; TensorFlow is imported first;
  train     ``pipeline train`` of configs/examples/csv.yaml for 2 epochs on the prepared copy,
            whose per-stage clock gives data, fit, evaluate, log and export seconds.

``read_csv`` and the preparation run three rounds in turn (``--rounds``), each preparation from
scratch, and medians count: a single ``read_csv`` of a second or less varies too much from one
run to the next to divide by. Each process reports its wall time and its peak RSS. Figures, all
ratios from this one run: preparation time over ``read_csv`` time (the median of the rounds'
ratios); each stage's seconds per row at a size over those at the size ten times smaller
(linear cost: about 1); peak RSS likewise (bounded memory: about 1);
evaluation and export (with verification) over one training epoch. Then image folders of
2,000 and 20,000 PNG files, and audio folders of 2,000 and 20,000 WAV files, are prepared
(``pipeline prepare`` of configs/examples/image_folder.yaml and audio_folder.yaml): files per
second and peak RSS.

Writes <out>/scale.json and <out>/scale.md.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, parser, publish

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "examples" / "csv.yaml"
IMAGES = ROOT / "configs" / "examples" / "image_folder.yaml"
AUDIO = ROOT / "configs" / "examples" / "audio_folder.yaml"
CHUNK = 1_000_000  # rows generated at a time, so a 10M-row table is written in bounded memory
STAGES = ("data", "fit", "evaluate", "log", "export")
BEAM_WORKERS = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def write_table(path: Path, rows: int) -> None:
    """12 numeric columns x0..x11, 6 categorical c0..c5 (5 to 55 values), y a noisy function of some of them."""
    import numpy as np
    import pandas as pd

    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        rng = np.random.default_rng(start)
        frame = pd.DataFrame({f"x{i}": rng.normal(size=n).round(4) for i in range(12)})
        for j in range(6):
            frame[f"c{j}"] = rng.choice([f"v{k}" for k in range(5 + 10 * j)], n)
        frame["y"] = (2 * frame.x0 + frame.x1 - frame.x2 + 1.5 * (frame.c0 == "v1") + rng.normal(0, 0.3, n)).round(4)
        frame.to_csv(path, index=False, header=start == 0, mode="w" if start == 0 else "a")


def write_images(folder: Path, count: int) -> None:
    """``count`` PNG files of 48x48 RGB noise with a class-coloured square, over 10 class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % 10
        pixels = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        pixels[8:24, 8:24] = (25 * label, 255 - 25 * label, 128)
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"class{label}" / f"{i:06d}.png")


def write_audio(folder: Path, count: int) -> None:
    """``count`` WAV files over 10 class folders: 16-bit tones, half of them stereo at 44.1 kHz (resampled to
    16 kHz), half mono at 16 kHz, lengths 0.5 to 1.5 s (some padded, some cropped)."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    for i in range(count):
        label, rate = i % 10, (44_100, 16_000)[i % 2]
        t = np.arange(int(rate * rng.uniform(0.5, 1.5))) / rate
        tone = 0.3 * np.sin(2 * np.pi * (200 + 80 * label) * t) + rng.normal(0, 0.02, len(t))
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        soundfile.write(folder / f"class{label}" / f"{i:06d}.wav", np.stack([tone, tone], 1) if i % 2 == 0 else tone,
                        rate, subtype="PCM_16")


# ---- one stage in its own process ------------------------------------------------------------


def child(stage: str, path: str, workdir: str, epochs: int) -> dict:
    """Run one stage in this process and return its figures (``run_child`` starts the process)."""
    overrides = [f"workdir={workdir}", f"data.path={path}", "data.label_key=y", f"train.epochs={epochs}",
                 "train.verbose=0", "tracking.enabled=true"]
    if stage == "read_csv":
        import pandas as pd

        start = time.perf_counter()
        pd.read_csv(path)
        return {"seconds": time.perf_counter() - start}
    # Imported before the clock: TensorFlow's start-up is not preparation (TFDS alone imports it lazily, inside it).
    import tensorflow  # noqa: F401
    import tensorflow_datasets  # noqa: F401

    from pipeline import load_config, train
    from pipeline.data import dataset

    if stage.startswith("prepare"):
        folders = {"prepare_images": IMAGES, "prepare_audio": AUDIO}
        cfg = load_config(folders[stage], [f"workdir={workdir}", f"data.path={path}"]) if stage in folders \
            else load_config(CONFIG, overrides)
        options = None
        if stage == "prepare_beam":
            from pipeline.data import beam

            options = beam.options(BEAM_WORKERS)
        start = time.perf_counter()
        dataset.prepare(cfg, beam_options=options)
        return {"seconds": time.perf_counter() - start}
    cfg = load_config(CONFIG, overrides)
    start = time.perf_counter()
    result = train(cfg)
    return {"seconds": time.perf_counter() - start, "stages": result.seconds, "epochs": result.epochs_run,
            "test_rmse": result.test_metrics.get("test_rmse")}


def run_child(stage: str, path: Path, workdir: Path, epochs: int) -> dict:
    """The stage in a fresh process, with that process's peak RSS."""
    code = ("import json, resource, sys; sys.path.insert(0, sys.argv[1]); from scale import child; "
            "out = child(*sys.argv[2:5], int(sys.argv[5])); "
            "out['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; print('RESULT', json.dumps(out))")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), stage, str(path), str(workdir),
                           str(epochs)], capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{stage} on {path.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


# ---- figures ----------------------------------------------------------------------------------


def measure(rows: int, folder: Path, epochs: int, rounds: int) -> dict:
    """``rounds`` of ``read_csv`` and preparation in turn (A B, B A, ...: a slow spell of the shared machine hits
    both sides), each preparation from scratch; then training on the last one's copy."""
    path = folder / f"table_{rows}.csv"
    write_table(path, rows)
    reads, preps, workdir = [], [], folder / f"work_{rows}"
    for round_ in range(rounds):
        shutil.rmtree(workdir, ignore_errors=True)  # a preparation from scratch each round
        for stage in ("read_csv", "prepare") if round_ % 2 == 0 else ("prepare", "read_csv"):
            (reads if stage == "read_csv" else preps).append(run_child(stage, path, workdir, epochs))
    fit = run_child("train", path, workdir, epochs)
    stages = fit["stages"]
    epoch = stages["fit"] / fit["epochs"]
    read_s, prep_s = ([r["seconds"] for r in runs] for runs in (reads, preps))
    return {
        "rows": rows, "csv_mb": round(path.stat().st_size / 2**20, 1),
        "read_csv_s": statistics.median(read_s), "prepare_s": statistics.median(prep_s),
        "prepare_rows_per_s": rows / statistics.median(prep_s),
        "prepare_over_read_csv": statistics.median(p / r for p, r in zip(prep_s, read_s)),  # paired by round
        "rounds": {"read_csv_s": read_s, "prepare_s": prep_s},
        "stages_s": stages, "epoch_s": epoch,
        "evaluate_over_epoch": stages["evaluate"] / epoch, "export_over_epoch": stages.get("export", 0.0) / epoch,
        "peak_rss_mb": {"read_csv": max(r["peak_rss_mb"] for r in reads), "prepare": max(r["peak_rss_mb"] for r in preps),
                        "train": fit["peak_rss_mb"]},
        "test_rmse": fit["test_rmse"],
    }


def measure_beam(rows: int, folder: Path, shards: int = 4) -> dict:
    """The table in ``shards`` CSV files, prepared here and by Beam's DirectRunner with 2 worker processes."""
    path = folder / f"table_{rows}.csv"
    if not path.exists():
        write_table(path, rows)
    parts = folder / f"shards_{rows}"
    parts.mkdir()
    with open(path) as table:
        header, lines = table.readline(), table.readlines()
    for i in range(shards):
        (parts / f"part-{i}.csv").write_text(header + "".join(lines[i * len(lines) // shards:(i + 1) * len(lines) // shards]))
    del lines
    here = run_child("prepare", parts, folder / f"work_here_{rows}", 1)
    there = run_child("prepare_beam", parts, folder / f"work_beam_{rows}", 1)
    return {"rows": rows, "shards": shards, "prepare_s": here["seconds"], "beam_s": there["seconds"],
            "beam_over_local": there["seconds"] / here["seconds"],
            "peak_rss_mb": {"prepare": here["peak_rss_mb"], "beam_driver": there["peak_rss_mb"]}}


def measure_images(count: int, folder: Path) -> dict:
    images = folder / f"images_{count}"
    write_images(images, count)
    prep = run_child("prepare_images", images, folder / f"work_images_{count}", 1)
    return {"files": count, "prepare_s": prep["seconds"], "files_per_s": count / prep["seconds"],
            "peak_rss_mb": prep["peak_rss_mb"]}


def measure_audio(count: int, folder: Path) -> dict:
    clips = folder / f"audio_{count}"
    write_audio(clips, count)
    mb = sum(f.stat().st_size for f in clips.rglob("*.wav")) / 2**20
    prep = run_child("prepare_audio", clips, folder / f"work_audio_{count}", 1)
    return {"files": count, "mb": round(mb), "prepare_s": prep["seconds"], "files_per_s": count / prep["seconds"],
            "peak_rss_mb": prep["peak_rss_mb"]}


def growth(small: dict, large: dict) -> dict:
    """Seconds per row and peak RSS at ``large`` over those at ``small``."""
    per_row = {"prepare": (large["prepare_s"] / large["rows"]) / (small["prepare_s"] / small["rows"])}
    for stage in STAGES:
        if stage in small["stages_s"] and small["stages_s"][stage] > 0:
            per_row[stage] = (large["stages_s"][stage] / large["rows"]) / (small["stages_s"][stage] / small["rows"])
    rss = {k: large["peak_rss_mb"][k] / small["peak_rss_mb"][k] for k in ("prepare", "train")}
    return {"from": small["rows"], "to": large["rows"], "seconds_per_row": per_row, "peak_rss": rss}


def markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']}", f"Command: `{results['command']}`", "",
             "| rows | CSV MB | read_csv s | prepare s | rows/s | prepare / read_csv | data s | epoch s | evaluate s "
             "| export s | evaluate / epoch | export / epoch | peak RSS prepare MB | peak RSS train MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["sizes"]:
        s = r["stages_s"]
        lines.append(f"| {r['rows']:,} | {r['csv_mb']} | {r['read_csv_s']:.2f} | {r['prepare_s']:.1f} | "
                     f"{r['prepare_rows_per_s']:,.0f} | {r['prepare_over_read_csv']:.1f} | {s['data']:.1f} | "
                     f"{r['epoch_s']:.1f} | {s['evaluate']:.1f} | {s.get('export', 0):.1f} | "
                     f"{r['evaluate_over_epoch']:.2f} | {r['export_over_epoch']:.2f} | "
                     f"{r['peak_rss_mb']['prepare']:.0f} | {r['peak_rss_mb']['train']:.0f} |")
    lines += ["", *(f"- {r['rows']:,} rows, each round: read_csv " + " / ".join(f"{x:.2f}" for x in r["rounds"]["read_csv_s"])
                    + " s, prepare " + " / ".join(f"{x:.2f}" for x in r["rounds"]["prepare_s"]) + " s"
                    for r in results["sizes"])]
    lines += ["", "| growth | " + " | ".join(f"s/row {k}" for k in ("prepare", *STAGES)) + " | peak RSS prepare | "
              "peak RSS train |", "| --- |" + " --- |" * (len(STAGES) + 3)]
    for g in results["growth"]:
        per_row = [f"{g['seconds_per_row'][k]:.2f}" if k in g["seconds_per_row"] else "-" for k in ("prepare", *STAGES)]
        lines.append(f"| {g['from']:,} -> {g['to']:,} | " + " | ".join(per_row) +
                     f" | {g['peak_rss']['prepare']:.2f} | {g['peak_rss']['train']:.2f} |")
    if results.get("images"):
        lines += ["", "| image folder | prepare s | files/s | peak RSS MB |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['files']:,} PNG files (48x48, 10 classes) | {r['prepare_s']:.1f} | {r['files_per_s']:,.0f} | "
                  f"{r['peak_rss_mb']:.0f} |" for r in results["images"]]
    if results.get("audio"):
        lines += ["", "| audio folder | MB | prepare s | files/s | peak RSS MB |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['files']:,} WAV files (0.5-1.5 s, half 44.1 kHz stereo) | {r['mb']} | {r['prepare_s']:.1f} | "
                  f"{r['files_per_s']:,.0f} | {r['peak_rss_mb']:.0f} |" for r in results["audio"]]
    if results.get("beam"):
        lines += ["", "| table in 4 shards | prepare here s | Beam, 2 worker processes s | Beam / here | "
                  "peak RSS here MB | peak RSS Beam driver MB |", "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['rows']:,} rows | {r['prepare_s']:.1f} | {r['beam_s']:.1f} | {r['beam_over_local']:.2f} | "
                  f"{r['peak_rss_mb']['prepare']:.0f} | {r['peak_rss_mb']['beam_driver']:.0f} |" for r in results["beam"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = parser(__doc__, "scale")
    p.add_argument("--large", action="store_true", help="also 10M rows (about 1.2 GB of CSV)")
    p.add_argument("--rows", type=int, nargs="*", help="these table sizes instead (none: folders only)")
    p.add_argument("--rounds", type=int, default=3,
                   help="read_csv and preparation rounds per size, alternated; medians reported (default 3; 1 with --quick)")
    p.add_argument("--images", type=int, nargs="*", default=None, metavar="FILES",
                   help="also prepare image folders of these many files (default 2,000 and 20,000; none with --quick)")
    p.add_argument("--audio", type=int, nargs="*", default=None, metavar="FILES",
                   help="also prepare audio folders of these many files (default 2,000 and 20,000; none with --quick)")
    p.add_argument("--beam", type=int, nargs="*", default=[], metavar="ROWS",
                   help="also prepare tables of these many rows in 4 shards, here and with Beam (2 worker processes)")
    args = p.parse_args()
    sizes = args.rows if args.rows is not None else ([2_000] if args.quick else [10_000, 100_000, 1_000_000, *([10_000_000] if args.large else [])])
    epochs = 1 if args.quick else 2
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as folder:
        measured = []
        for rows in sizes:
            print(f"{rows:,} rows ...", file=sys.stderr, flush=True)
            measured.append(measure(rows, Path(folder), epochs, 1 if args.quick else args.rounds))
        counts = args.images if args.images is not None else ([] if args.quick else [2_000, 20_000])
        images = [measure_images(count, Path(folder)) for count in counts]
        counts = args.audio if args.audio is not None else ([] if args.quick else [2_000, 20_000])
        audio = [measure_audio(count, Path(folder)) for count in counts]
        beam = [measure_beam(rows, Path(folder)) for rows in args.beam]
    command = "python bench/scale.py" + "".join(f" {a}" for a in sys.argv[1:])
    results = {"machine": machine(), "command": command, "epochs": epochs, "sizes": measured,
               "growth": [growth(a, b) for a, b in zip(measured, measured[1:])], "images": images, "audio": audio, "beam": beam}
    publish(args.out, "scale", results, markdown(results))


if __name__ == "__main__":
    main()
