"""The bench scripts run on a tiny setting and write well-formed results (no timing is asserted)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def _bench(script: str, out, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, f"bench/{script}", "--quick", "--out", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_perf_writes_each_figure_as_a_ratio_with_its_sides_machine_and_command(tmp_path):
    proc = _bench("perf.py", tmp_path, "--only", "input", "families")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "perf.json").read_text())
    assert results["machine"] and results["command"].startswith("python bench/perf.py --quick")
    sides = results["input"]["examples_per_s"]
    assert set(sides) == {"real pipeline", "tensors in memory"} and all(s["median"] > 0 for s in sides.values())
    real, memory = sides["real pipeline"]["runs"], sides["tensors in memory"]["runs"]
    assert len(real) == len(memory) >= 3  # rounds, each A then B or B then A
    paired = sorted(a / b for a, b in zip(real, memory))
    assert results["input"]["input_efficiency"] == pytest.approx(statistics.median(paired), abs=1e-3)
    (family,) = results["families"].values()  # --quick: digits only
    assert family["train_examples_per_s"] > 0 and family["inference_examples_per_s"] > 0
    assert family["evaluate_over_epoch"] > 0 and family["export_over_epoch"] > 0
    table = (tmp_path / "perf.md").read_text()
    assert table.startswith("Machine: ") and "| input efficiency: real pipeline / tensors in memory | >= 0.95 | **" in table
    assert "image classification (digits): export / one epoch" in table


def test_the_gpu_script_says_plainly_when_there_is_no_gpu_and_its_code_path_runs_on_the_cpu(tmp_path):
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 3 and "No GPU here" in proc.stderr and not (tmp_path / "gpu.json").exists()
    proc = _bench("gpu.py", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    variants = json.loads((tmp_path / "gpu.json").read_text())["variants"]
    assert set(variants) == {"baseline", "nondeterministic"} and variants["baseline"]["ratio_to_baseline"] == 1.0
    assert "| nondeterministic |" in (tmp_path / "gpu.md").read_text()


def test_scale_reports_each_stage_and_peak_memory_and_how_they_grow_with_rows(tmp_path):
    proc = _bench("scale.py", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "scale.json").read_text())
    (size,) = results["sizes"]  # --quick: 2,000 rows
    assert size["rows"] == 2_000 and size["read_csv_s"] > 0 and size["prepare_over_read_csv"] > 0
    assert {"data", "fit", "evaluate", "export"} <= set(size["stages_s"]) and size["epoch_s"] > 0
    assert all(mb > 100 for mb in size["peak_rss_mb"].values())  # a Python process with pandas at least
    assert "| 2,000 | " in (tmp_path / "scale.md").read_text()

    sys.path.insert(0, str(ROOT / "bench"))
    from scale import growth

    larger = {**size, "rows": 20_000, "prepare_s": 5 * size["prepare_s"],
              "stages_s": {k: 10 * v for k, v in size["stages_s"].items()},
              "peak_rss_mb": {k: 1.5 * v for k, v in size["peak_rss_mb"].items()}}
    grown = growth(size, larger)  # ten times the rows: half the preparation per row, the same for each stage
    assert grown["seconds_per_row"]["prepare"] == pytest.approx(0.5)
    assert grown["seconds_per_row"]["fit"] == pytest.approx(1.0) and grown["peak_rss"]["train"] == pytest.approx(1.5)
