"""Reports: a self-contained HTML page about one run (``report``) or a whole experiment (``experiment_report``)."""

from pipeline.report.experiment import experiment_report
from pipeline.report.run import report

__all__ = ["experiment_report", "report"]
