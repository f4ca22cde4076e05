"""The run report: a self-contained HTML page with every section, checked in a real headless browser."""

from __future__ import annotations

import shutil
import subprocess

import pytest

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
SECTIONS = ("summary", "diagnosis", "curves", "gap", "errors", "weights", "augmentation", "tuning")


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
    assert "src=\"http" not in text and "<link" not in text  # nothing fetched: images are inline
    artifacts = {a.path for a in MlflowClient(cfg.tracking.uri).list_artifacts(result.run_id)}
    assert "report.html" in artifacts


@pytest.mark.skipif(BROWSER is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_the_report_renders_in_a_headless_browser_with_every_image_decoded(page):
    path, _, _ = page
    dom = subprocess.run([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    for section in SECTIONS:
        assert f'id="{section}"' in dom
    images = int(dom.split('data-images="')[1].split('"')[0])
    decoded = int(dom.split('data-images-decoded="')[1].split('"')[0])
    assert images >= 5 and decoded == images
