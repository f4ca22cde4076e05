"""``pipeline report RUN_ID``: one self-contained HTML page about a run, also logged to the run.

Sections (each a ``<section id=...>``, so a browser test can find them):
summary, diagnosis, curves (with the early-stopping point), gap (validation minus
training loss per epoch), errors (confusion matrix, or residuals for regression,
on the test split through the export), weights (histograms and per-layer sparsity:
the share of kernel weights below 1e-3 in magnitude), augmentation (preview grid),
tuning (the search the run came from, when it was tuned). Images are inline PNGs,
so the page can be mailed or archived as one file.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from pathlib import Path

from pipeline.diagnose import SPARSE
from pipeline.files import pyplot
from pipeline.report.page import img, img_bytes, page, table
from pipeline.text import ratio

# where a run that is not found was tracked: said after "no run" and "no store"
WHERE = "(a run's store is its config's tracking.uri: --workdir or --tracking-uri; in Python, tracking_uri=cfg.tracking.uri)"


def report(run_id: str, tracking_uri: str, out: Path | None = None) -> Path:
    """Write the report of ``run_id`` (``out``, default <run folder>/report.html) and log it to the run."""
    from mlflow.tracking import MlflowClient

    from pipeline.config import load
    from pipeline.errors import ConfigError
    from pipeline.files import write_text

    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises several kinds for a bad id
        raise ConfigError(f"No run {run_id!r} in {tracking_uri} {WHERE}") from None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load(client.download_artifacts(run_id, "config.yaml", tmp))
        diagnosis = _artifact_json(client, run_id, "diagnosis.json", tmp)
        history = {k: [m.value for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)]
                   for k in ("loss", "val_loss", "accuracy", "val_accuracy", "rmse", "val_rmse")}
        history = {k: v for k, v in history.items() if v}
        sections = [
            ("summary", "Summary", _summary(run)),
            ("diagnosis", "Fit diagnosis", _diagnosis(diagnosis)),
            ("curves", "Learning curves", _curves(history, run.data.metrics.get("best_epoch"))),
            ("gap", "Generalisation gap", _gap(history)),
            ("baselines", "Against the baselines", _baselines(run)),
            ("errors", "Errors on the test split", _errors(cfg, run)),
            ("weights", "Weights and sparsity", _weights(run)),
            ("augmentation", "Augmentation", _augmentation(cfg, tmp)),
            ("tuning", "Tuning", _tuning(client, run, tmp)),
        ]
    html_text = page(f"Run {run.info.run_name or run_id}", sections)
    out = write_text(Path(out or Path(cfg.workdir) / "runs" / run_id / "report.html"), html_text)
    client.log_artifact(run_id, str(out))
    return out


# ---- sections -----------------------------------------------------------------------------


def _summary(run) -> str:
    m, t = run.data.metrics, run.data.tags
    rows = [("run", run.info.run_id), ("status", run.info.status), ("experiment", run.info.experiment_id),
            ("data", f"{t.get('data.name', '?')} ({t.get('data.digest', '?')[:12]})"),
            ("export", t.get("export.path", "none"))]
    rows += [(k, f"{v:.4f}") for k, v in sorted(m.items()) if k.startswith("test_")]
    rows += [("best epoch", m.get("best_epoch", "-")), ("epochs run", m.get("epochs_run", "-"))]
    return table(["", ""], rows)


def _baselines(run) -> str:
    """The model's test figures beside each baseline's on the same test examples (``baseline.<name>.<figure>``)."""
    m = run.data.metrics
    keys = [k.split(".", 2) for k in m if k.startswith("baseline.")]
    if not keys:
        return "<p>No baselines were scored with this run.</p>"
    names = list(dict.fromkeys(name for _, name, _ in keys))
    figures = list(dict.fromkeys(figure for _, _, figure in keys))
    rows = [("model", *(_figure(m.get(f"test_{f}")) for f in figures))]
    rows += [(name, *(_figure(m.get(f"baseline.{name}.{f}")) for f in figures)) for name in names]
    out = table(["", *figures], rows)
    if "skill.ratio" in m:
        out += (f"<p>Skill ratio (the model's error over the best baseline's): {ratio(m['skill.ratio'])}, 95% interval "
                f"{m['skill.ratio_low']:.3f} to {m['skill.ratio_high']:.3f}.</p>")
    return out


def _figure(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _diagnosis(diagnosis: dict | None) -> str:
    if not diagnosis:
        return "<p>No diagnosis was logged with this run.</p>"
    items = "".join(f"<li>{html.escape(r)}</li>" for r in diagnosis["reasons"])
    advice = "".join(f"<li>{html.escape(a)}</li>" for a in diagnosis["advice"])
    return (f"<p class=verdict>{html.escape(diagnosis['verdict'])}</p><ul>{items}</ul>"
            + table(["evidence", "value"], diagnosis["evidence"].items()) + f"<h3>Advice</h3><ul>{advice}</ul>")


def _curves(history: dict, best_epoch: float | None) -> str:
    if "loss" not in history:
        return "<p>No per-epoch metrics were logged.</p>"
    plt = pyplot()
    names = [n for n in ("accuracy", "rmse") if n in history]
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(5 * (1 + len(names)), 3.5), squeeze=False)
    for ax, name in zip(axes[0], ["loss", *names]):
        for key in (name, f"val_{name}"):
            if key in history:
                ax.plot(range(1, len(history[key]) + 1), history[key], label=key)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept (epoch {int(best_epoch)})")
        ax.set(xlabel="epoch", title=name)
        ax.legend()
    return img(fig, "learning curves")


def _gap(history: dict) -> str:
    if not {"loss", "val_loss"} <= set(history):
        return "<p>No validation loss was logged.</p>"
    plt = pyplot()
    gap = [v - t for v, t in zip(history["val_loss"], history["loss"])]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(1, len(gap) + 1), gap)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set(xlabel="epoch", ylabel="val_loss - loss", title="generalisation gap")
    return img(fig, "generalisation gap")


def _errors(cfg, run) -> str:
    """Confusion matrix (classification) or residuals (regression) of the export on the test split."""
    import numpy as np

    from pipeline.data import dataset
    from pipeline.export import predict_split
    from pipeline.tasks import task_for

    path = run.data.tags.get("export.path")
    if not path or not Path(path).is_dir():
        return "<p>The run has no export on this machine.</p>"
    data = dataset.load(cfg)
    task = task_for(cfg, data.spec)
    pred, true = predict_split(path, data.spec, data.test, task.label_output)
    plt = pyplot()
    if task.name == "classification":
        from sklearn.metrics import confusion_matrix

        k = data.spec.num_classes
        matrix = confusion_matrix(true.astype(int), pred.astype(int), labels=range(k))
        fig, ax = plt.subplots(figsize=(5, 4.5))
        ax.imshow(matrix, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({len(true)} test examples)")
        return img(fig, "confusion matrix")
    if task.name == "forecasting":  # the error at each step ahead, in what the model predicts
        steps = np.arange(1, pred.shape[1] + 1)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(steps, np.abs(true - pred).mean(axis=0), marker=".")
        ax.set(xlabel="steps ahead", ylabel="mean absolute error", title=f"error by horizon step ({len(true)} test windows)")
        return img(fig, "error by horizon step")
    true = task.original(true)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(pred, true - pred, s=6)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set(xlabel="prediction", ylabel="actual - prediction", title=f"residuals ({len(true)} test examples)")
    return img(fig, "residuals")


def _weights(run) -> str:
    import numpy as np
    import tensorflow as tf

    path = run.data.tags.get("export.path")
    if not path or not Path(path).is_dir():
        return "<p>The run has no export on this machine.</p>"
    kernels = [(v.name.removesuffix(":0"), v.numpy().ravel()) for v in tf.saved_model.load(path).variables
               if v.name.split("/")[-1].split(":")[0] in ("kernel", "embeddings")]
    rows = [(name, w.size, f"{np.mean(np.abs(w) < SPARSE):.1%}", f"{np.std(w):.4f}") for name, w in kernels]
    plt = pyplot()
    cols = min(3, len(kernels)) or 1
    fig, axes = plt.subplots(-(-len(kernels) // cols) or 1, cols, figsize=(4 * cols, 2.6 * (-(-len(kernels) // cols) or 1)),
                             squeeze=False)
    for ax, (name, w) in zip(axes.flat, kernels):
        ax.hist(w, bins=60)
        ax.set_title(name, fontsize=8)
    for ax in list(axes.flat)[len(kernels):]:
        ax.axis("off")
    return (table(["layer", "weights", f"share |w| < {SPARSE:g}", "std"], rows) + img(fig, "weight histograms"))


def _augmentation(cfg, tmp: str) -> str:
    if not cfg.augment.layers:
        return "<p>No augmentation configured.</p>"
    from pipeline.data.augment import preview

    try:
        png = preview(cfg, Path(tmp) / "augment.png", n_images=4)
    except Exception as exc:  # noqa: BLE001 - e.g. a table dataset: say so in the page
        return f"<p>No preview: {html.escape(str(exc))}</p>"
    return img_bytes(Path(png).read_bytes(), "augmentation preview")


def _tuning(client, run, tmp: str) -> str:
    """The search this run belongs to: its trial's parent, or the search it retrained (tag tune.parent_run)."""
    parent_id = run.data.tags.get("tune.parent_run") or (
        run.data.tags.get("mlflow.parentRunId") if run.data.tags.get("tune.role") == "trial" else None)
    if not parent_id:
        return "<p>This run was not tuned.</p>"
    parts = [f"<p>Search run {html.escape(parent_id)}.</p>"]
    for name in ("plots/objective_by_trial.png", "plots/objective_by_parameter.png"):
        try:
            parts.append(img_bytes(Path(client.download_artifacts(parent_id, name, tmp)).read_bytes(), name))
        except Exception:  # noqa: BLE001 - a search interrupted before its plots
            continue
    try:
        import csv

        rows = list(csv.reader(open(client.download_artifacts(parent_id, "trials.csv", tmp))))
        parts.append(table(rows[0], rows[1:]))
    except Exception:  # noqa: BLE001
        parts.append("<p>No trials table yet.</p>")
    return "".join(parts)


def _artifact_json(client, run_id: str, name: str, tmp: str):
    try:
        return json.loads(Path(client.download_artifacts(run_id, name, tmp)).read_text())
    except Exception:  # noqa: BLE001 - older runs lack it
        return None
