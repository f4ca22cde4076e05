"""Reports of a run and of an experiment: self-contained HTML pages with every section, checked in a real headless browser."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import ROOT, run_cli

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
SECTIONS = ("summary", "diagnosis", "curves", "gap", "baselines", "errors", "weights", "augmentation", "tuning")
EXPERIMENT_SECTIONS = ("summary", "leaderboard", "progress", "fit", "curves", "models", "searches")
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium here (.ci/run installs Debian's chromium)")


def rendered(path) -> tuple[str, int, int]:
    """The DOM a headless Chromium builds from ``path``, with its image count and decoded-image count."""
    dom = subprocess.run([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    images = int(dom.split('data-images="')[1].split('"')[0])
    decoded = int(dom.split('data-images-decoded="')[1].split('"')[0])
    return dom, images, decoded


@pytest.fixture(scope="module")
def page(trained, tmp_path_factory):
    from pipeline.report import report

    cfg, result = trained
    return report(result.run_id, cfg.tracking.uri, tmp_path_factory.mktemp("report") / "report.html"), cfg, result


def test_the_report_is_one_file_with_every_section_and_is_logged_to_the_run(page):
    from mlflow.tracking import MlflowClient

    path, cfg, result = page
    text = path.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    assert "confusion matrix" in text and "share |w| &lt; 0.001" in text and result.diagnosis.verdict in text
    baselines = text.split('<section id="baselines">')[1].split("</section>")[0]
    assert "majority" in baselines and f"{result.test_metrics['baseline.linear.accuracy']:.4f}" in baselines
    assert "src=\"http" not in text and "<link" not in text  # nothing fetched: images are inline
    artifacts = {a.path for a in MlflowClient(cfg.tracking.uri).list_artifacts(result.run_id)}
    assert "report.html" in artifacts


@needs_browser
def test_the_report_renders_in_a_headless_browser_with_every_image_decoded(page):
    path, _, _ = page
    dom, images, decoded = rendered(path)
    for section in SECTIONS:
        assert f'id="{section}"' in dom
    assert images >= 5 and decoded == images


# ---- the experiment report ------------------------------------------------------------------


@pytest.fixture(scope="module")
def experiment_page(trained, tmp_path_factory):
    """`pipeline report --experiment digits` on the store of the shared trained run, as a user runs it."""
    cfg, result = trained
    out = tmp_path_factory.mktemp("experiment") / "digits.html"
    proc = run_cli("report", "--experiment", "digits", "--tracking-uri", cfg.tracking.uri, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, cfg, result


def test_the_experiment_report_ranks_the_runs_and_shows_the_serving_model(experiment_page):
    from mlflow.tracking import MlflowClient

    path, cfg, result = experiment_page
    text = path.read_text()
    sections = {s.split('"')[0]: s for s in text.split('<section id="')[1:]}
    assert tuple(sections) == EXPERIMENT_SECTIONS
    assert result.run_id[:8] in sections["leaderboard"] and f"{result.test_metrics['test_accuracy']:.4f}" in sections["leaderboard"]
    assert result.diagnosis.verdict in sections["fit"]
    assert f"{result.test_metrics['skill.ratio']:.3f} (" in sections["leaderboard"]  # beside its best baseline
    assert "champion" in sections["models"]  # the run's export is registered and serves

    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name("digits")
    report_run = client.get_run(experiment.tags["report.run_id"])
    assert report_run.info.status == "FINISHED" and report_run.data.tags["pipeline.job"] == "report"
    assert [a.path for a in client.list_artifacts(report_run.info.run_id)] == ["digits.html"]


def test_a_second_experiment_report_leaves_earlier_report_runs_out(experiment_page, tmp_path):
    from pipeline.report import experiment_report

    _, cfg, _ = experiment_page
    text = experiment_report("digits", cfg.tracking.uri, tmp_path / "again.html").read_text()
    assert "experiment-report" not in text and "runs</td><td>1: 1 train" in text


def test_an_unknown_experiment_or_run_is_one_line_naming_the_known_ones_or_where_to_look(experiment_page, capsys,
                                                                                      tmp_path):
    from pipeline.cli import main

    _, cfg, _ = experiment_page
    assert main(["report", "--experiment", "digitz", "--tracking-uri", cfg.tracking.uri]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: No experiment 'digitz' in {cfg.tracking.uri} (experiments: Default, digits)")
    hint = "(a run's store is its config's tracking.uri: --workdir or --tracking-uri; in Python, tracking_uri=cfg.tracking.uri)"
    assert main(["report", "0" * 32, "--tracking-uri", cfg.tracking.uri]) == 2  # a run tracked in another store
    assert capsys.readouterr().err.strip() == f"error: No run '{'0' * 32}' in {cfg.tracking.uri} {hint}"
    assert main(["report", "0" * 32, "--workdir", str(tmp_path / "typo")]) == 2
    assert capsys.readouterr().err.strip() == f"error: No tracking store at {tmp_path / 'typo' / 'mlflow.db'} {hint}"
    assert not (tmp_path / "typo").exists()  # not made empty by looking


@needs_browser
def test_the_experiment_report_renders_in_a_headless_browser(experiment_page):
    dom, images, decoded = rendered(experiment_page[0])
    for section in EXPERIMENT_SECTIONS:
        assert f'id="{section}"' in dom
    assert images >= 3 and decoded == images


@pytest.mark.parametrize("baselines, skill_row", [(["majority"], False), (["majority", "linear"], True)])
def test_the_printed_summary_gives_each_baseline_its_error_ratio_and_the_best_one_only_among_several(
        capsys, baselines, skill_row):
    from types import SimpleNamespace

    from pipeline.config import load
    from pipeline.report.summary import print_summary

    metrics = {"test_accuracy": 0.9, "skill.ratio": 0.5, "skill.ratio_low": 0.4, "skill.ratio_high": 0.6}
    for i, name in enumerate(baselines):
        metrics |= {f"baseline.{name}.accuracy": 0.8 - i / 10, f"skill.vs_{name}": 0.5 + i / 10,
                    f"skill.vs_{name}_low": 0.4, f"skill.vs_{name}_high": 0.6}
    result = SimpleNamespace(test_metrics=metrics, best_epoch=2, epochs_run=3, run_id="r", run_dir="d",
                             export_path=None, diagnosis=None)
    print_summary(load(None, ["tracking.enabled=false"]), result)
    out = capsys.readouterr().out
    assert all(f"vs {name}" in out for name in baselines) and out.count("error ratio") == len(baselines)
    assert ("skill ratio" in out) == skill_row


def test_the_printed_summary_says_in_words_when_the_baseline_makes_no_test_error(capsys):
    import math
    from types import SimpleNamespace

    from pipeline.config import load
    from pipeline.report.summary import print_summary

    metrics = {"test_accuracy": 0.94, "baseline.majority.accuracy": 0.33, "baseline.linear.accuracy": 1.0,
               "skill.ratio": math.inf, "skill.ratio_low": 1.0, "skill.ratio_high": math.inf,
               **{f"skill.vs_{name}{end}": value for name, values in {"majority": (0.08, 0.0, 0.3),
                                                                      "linear": (math.inf, 1.0, math.inf)}.items()
                  for end, value in zip(("", "_low", "_high"), values)}}
    result = SimpleNamespace(test_metrics=metrics, best_epoch=2, epochs_run=2, run_id="r", run_dir="d",
                             export_path=None, diagnosis=None)
    print_summary(load(None, ["tracking.enabled=false"]), result)
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "error ratio infinite (the baseline makes no test error) (95% interval 1.000 to inf)" in out
    assert "skill ratio infinite (the baseline makes no test error)" in out and "error ratio 0.080" in out
    from pipeline.report.experiment import _versus

    assert _versus(metrics | {"skill.best_baseline.linear": 1.0}).startswith(
        "infinite (the baseline makes no test error) (1.000-inf) linear")  # the experiment report's column


@pytest.mark.parametrize("examples, said", [(6, True), (30, False)])
def test_the_printed_summary_says_when_a_test_split_holds_a_few_examples(capsys, examples, said):
    from types import SimpleNamespace

    from pipeline.config import load
    from pipeline.report.summary import print_summary

    metrics = {"test_accuracy": 1.0, "baseline.majority.accuracy": 0.5, "skill.ratio": 0.0, "skill.ratio_low": 0.0,
               "skill.ratio_high": 0.0, "skill.examples": float(examples)}
    result = SimpleNamespace(test_metrics=metrics, best_epoch=2, epochs_run=3, run_id="r", run_dir="d",
                             export_path=None, diagnosis=None)
    print_summary(load(None, ["tracking.enabled=false"]), result)
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert ("test examples 6: each is 17% of every test figure (an accuracy moves 17 points with one example)" in out
            ) == said


@pytest.mark.parametrize("windows, said", [(13, True), (48, False)])
def test_the_printed_summary_says_when_a_series_test_stretch_is_too_short_for_a_firm_interval(capsys, windows, said):
    from types import SimpleNamespace

    from pipeline.config import load
    from pipeline.report.summary import print_summary

    cfg = load(ROOT / "configs/examples/series.yaml", ["tracking.enabled=false"])  # a 12-step horizon: 4 blocks of 12
    metrics = {"test_mae": 1.25, "baseline.naive.mae": 9.0, "baseline.ridge.mae": 1.36, "skill.ratio": 0.92,
               "skill.ratio_low": 0.85, "skill.ratio_high": 0.98, "skill.examples": float(windows)}
    result = SimpleNamespace(test_metrics=metrics, best_epoch=2, epochs_run=3, run_id="r", run_dir="d",
                             export_path=None, diagnosis=None)
    print_summary(cfg, result)
    out = capsys.readouterr().out
    assert ("test windows" in out) == said and ("13, of a 12-step horizon" in out) == said

