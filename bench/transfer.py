"""Transfer learning: a backbone pretrained on other classes against the same backbone from scratch.

Usage: python bench/transfer.py [--per-class N] [--seeds 42 1] [--defaults] [-- key=value ...]

No network here, so no ImageNet weights: the "pretrained" weights are made locally and said to be.
scikit-learn's digits (shipped with the package, nothing downloaded) become two image folders:
digits 0-4 (all ~900 images) pretrain MobileNetV3Small from random weights; digits 5-9, never seen
in pretraining, form the small target folder (``--per-class`` images each). On the target the
backbone is fine-tuned from the pretrained weights in two phases (frozen, then top layers at a
lower rate) and, side by side, trained whole from scratch (``model.weights=none``) with the same
config, seed and epochs. Both are scored on the same held-out test images of the target folder.
Fine-tuning uses FINE_TUNE (the head alone for 10 epochs, then every layer but BatchNormalization
at 0.3x the rate), or with ``--defaults`` the shipped ``model.fine_tune`` defaults.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, parser, publish, scratch  # noqa: E402

COMMON = ["data.dataset=image_folder", "data.image_size=[32,32]", "data.channels=1", "model.name=backbone",
          "model.backbone=mobilenet_v3_small", "model.head_units=64", "model.dropout=0.2", "train.verbose=0",
          "export.enabled=false", "tracking.enabled=false", "augment.layers=[]", "regularization.kernel=none",
          "data.batch_size=16", "train.early_stopping.patience=15"]
FINE_TUNE = ["model.fine_tune.frozen_epochs=10", "model.fine_tune.layers=1000",
             "model.fine_tune.learning_rate_factor=0.3"]
TARGET_SPLITS = ['data.splits.train=train[:40%]', 'data.splits.validation=train[40%:55%]',
                 'data.splits.test=train[55%:]']


def write_folder(root: Path, digits: range, per_class: int | None) -> Path:
    """Digits as 8x8 grey PNGs, one subfolder per class (at most ``per_class`` each)."""
    import numpy as np
    import sklearn.datasets
    from PIL import Image

    images, labels = sklearn.datasets.load_digits(return_X_y=True)
    for digit in digits:
        folder = root / f"digit_{digit}"
        folder.mkdir(parents=True, exist_ok=True)
        chosen = np.flatnonzero(labels == digit)[:per_class]
        for i in chosen:
            pixels = (images[i].reshape(8, 8) * 16).clip(0, 255).astype("uint8")
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    return root


def train(name: str, folder: Path, workdir: Path, overrides: list[str]):
    from pipeline import api

    cfg = api.load_config(None, [f"name={name}", f"workdir={workdir}", f"data.path={folder}", *COMMON, *overrides])
    started = time.perf_counter()
    result = api.train(cfg)
    return result, time.perf_counter() - started


def main(argv: list[str]) -> None:
    argv, overrides = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = parser(__doc__, "transfer")
    p.add_argument("--per-class", type=int, default=15, help="target images per class (digits 5-9)")
    p.add_argument("--defaults", action="store_true", help="fine-tune with the shipped model.fine_tune defaults")
    p.add_argument("--pretrain-epochs", type=int, default=30)
    p.add_argument("--epochs", type=int, default=40, help="epochs on the target folder, both sides")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1])
    args = p.parse_args(argv)
    if args.quick:
        args.per_class, args.pretrain_epochs, args.epochs, args.seeds = 10, 1, 2, [42]

    work = Path(scratch("bench-transfer-"))
    source = write_folder(work / "digits_0_4", range(0, 5), None)
    target = write_folder(work / "digits_5_9", range(5, 10), args.per_class)
    pre, pre_seconds = train("pretrain", source, work / "pretrain",
                             [f"train.epochs={args.pretrain_epochs}", "model.weights=none", *overrides])
    weights = work / "digits_0_4.weights.h5"
    pre.model.get_layer("backbone").save_weights(weights)
    rows = []
    for seed in args.seeds:
        side = {}
        for label, setting in (("fine-tuned", [f"model.weights={weights}", *([] if args.defaults else FINE_TUNE)]),
                               ("scratch", ["model.weights=none"])):
            result, seconds = train(f"target-{label}", target, work / f"{label}-{seed}",
                                    [*TARGET_SPLITS, f"seed={seed}", f"train.epochs={args.epochs}", *setting,
                                     *overrides])
            side[label] = {"accuracy": result.test_metrics["test_accuracy"], "epochs": result.epochs_run,
                           "seconds": round(seconds, 1)}
        rows.append({"seed": seed, **side, "gain": side["fine-tuned"]["accuracy"] - side["scratch"]["accuracy"]})

    results = {"machine": machine(), "command": "python bench/transfer.py " + " ".join(sys.argv[1:]),
               "per_class": args.per_class, "fine_tune": "defaults" if args.defaults else FINE_TUNE, "pretrain": {"accuracy": pre.test_metrics["test_accuracy"],
                                                         "seconds": round(pre_seconds, 1)},
               "rows": rows}
    lines = [f"# Transfer learning: pretrained on digits 0-4, fine-tuned on {args.per_class} images per class of "
             f"digits 5-9\n", f"{results['machine']}; `{results['command']}`\n",
             f"Pretraining (MobileNetV3Small from random weights, digits 0-4): test accuracy "
             f"{results['pretrain']['accuracy']:.4f} in {results['pretrain']['seconds']} s; fine-tuning: "
             f"{'the shipped defaults' if args.defaults else ' '.join(FINE_TUNE)}\n",
             "| seed | fine-tuned accuracy | scratch accuracy | gain (points) | epochs (fine-tuned / scratch) |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['seed']} | {r['fine-tuned']['accuracy']:.4f} | {r['scratch']['accuracy']:.4f} | "
              f"{r['gain'] * 100:+.1f} | {r['fine-tuned']['epochs']} / {r['scratch']['epochs']} |" for r in rows]
    publish(args.out, "transfer", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
