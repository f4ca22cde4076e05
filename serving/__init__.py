"""TF Serving's REST API for the pipeline's export root (``pipeline serve``); see serving/README.md."""
