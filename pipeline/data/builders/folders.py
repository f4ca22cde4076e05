"""Folders of files, one subfolder per class, as TFDS datasets: ``image_folder`` here, ``audio_folder`` in speech.py.

The folder is named by its file list with sizes and times (``folder_fingerprint``): a folder
of 100k files is not read to tell whether it changed. Files are decoded by a pool of threads
a window ahead of the writer (``Decoded``); one that cannot be read stops preparation naming
it, or with ``data.on_bad_input: skip`` is skipped and counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import stat
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from pipeline.data.builders.files import FileConfig, beam_requested, file_config
from pipeline.data.builders.local import Local
from pipeline.data.checks import require_folder
from pipeline.errors import DataError
from pipeline.text import listed, progress


def image_folder_config(cfg) -> FileConfig:
    """Named by the folder and by Pillow's order of resizing passes, which the prepared pixels depend on."""
    reordered = "|Pillow 13's order of passes" if pillow_reorders_passes() else ""  # older copies keep their name
    return file_config(cfg, folder_fingerprint(require_folder(cfg)) + reordered)


def pillow_reorders_passes() -> bool:
    """Whether the installed Pillow (13 on) resizes some shapes vertical pass first (models/images.py redoes it)."""
    return pillow_major() >= 13


def pillow_major() -> int:
    import PIL

    return int(PIL.__version__.split(".")[0])


def folder_fingerprint(path: Path) -> str:
    """A folder's digest from its files' names, sizes and times: a folder of 100k files is not read to name it."""
    listing = []
    for p in path.rglob("*"):
        info = p.stat()  # one call per file: is_file() and each field would stat it again
        if stat.S_ISREG(info.st_mode):
            listing.append(f"{p.relative_to(path)}:{info.st_size}:{info.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(listing)).encode()).hexdigest()


SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "dev", "test", "testing", "eval"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
DEEP_GREY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # PIL's modes of 16-bit grey pixels (scans, X-rays, microscopy)
# What operating systems leave in folders besides hidden files (macOS' ``._`` twins of every file on a shared
# drive, ``.DS_Store``): a zip's ``__MACOSX`` copy of the tree, Windows' thumbnail caches and folder settings, and
# a Synology NAS's ``@eaDir`` in every folder, whose thumbnails are JPEG files that would train as the class.
SYSTEM_LEFTOVERS = {"__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini", "@eadir"}


def ignored(name: str) -> bool:
    """Whether a file or folder of a class folder tree is no data: hidden, or left by the operating system."""
    return name.startswith(".") or name.lower() in SYSTEM_LEFTOVERS


def class_folders(root: str | Path, what: str = "an image folder") -> list[str]:
    """The class names of a folder with one subfolder per class (at least 2)."""
    classes = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not ignored(p.name))
    if len(classes) < 2:
        raise DataError(f"{root}: {what} needs one subfolder per class (at least 2); found {classes}.")
    if {c.lower() for c in classes} <= SPLIT_NAMES:  # train/cat, test/cat: the classes are one level down
        inner = {tuple(_only_folders(Path(root) / c)) for c in classes}
        if len(inner) == 1 and len(shared := next(iter(inner))) >= 2:
            raise DataError(f"{root}: its subfolders ({', '.join(classes)}) are splits, each with the same class "
                            f"folders ({', '.join(shared)}): point `data.path` at one of them, the pipeline splits it "
                            f"(`data.splits`), e.g. {Path(root) / classes[-1]}")
    return classes


def _only_folders(folder: Path) -> list[str]:
    """The names of the subfolders of ``folder`` if it holds nothing else (``ignored`` files aside), else none."""
    names = []
    for p in folder.iterdir():  # lazily: a class folder of 100k images stops at its first
        if not ignored(p.name):
            if not p.is_dir():
                return []
            names.append(p.name)
    return sorted(names)


def labelled_files(root: str | Path, suffixes: set[str], what: str = "an image folder") -> list[tuple[str, Path]]:
    """(class, file) for every file with one of ``suffixes`` under each class subfolder, in a fixed order.

    Other files are left out with a note that names them (``ignored`` ones aside, silently: a macOS ``._``
    twin has its image's suffix but holds none): photos in a format the pipeline does not read
    (``.heic``) would otherwise be lost from their class without a word.

    Raises:
        DataError: a class subfolder holds no such file (a class the model could never learn).
    """
    files, others = [], []
    for label in class_folders(root, what):
        found = []
        for p in sorted((Path(root) / label).rglob("*")):
            if not p.is_file():  # one stat a path: a class folder may hold 100k files
                continue
            inside = p.relative_to(root)
            if any(ignored(part) for part in inside.parts):
                continue
            if p.suffix.lower() in suffixes:
                found.append((label, p))
            else:
                others.append(str(inside))
        if not found:
            raise DataError(f"{Path(root) / label}: a class folder without a {' '.join(sorted(suffixes))} file "
                            f"(add its files, or move it out of {root})")
        files += found
    if others:
        noun = "file" if len(others) == 1 else "files"
        print(f"note: {root}: left out {len(others)} {noun} of other types than {' '.join(sorted(suffixes))}: "
              f"{listed(others, 5)}", file=sys.stderr)
    return files


class ImageFolder(Local, tfds.core.GeneratorBasedBuilder):
    """One subfolder per class, images of any size and channel count, resized and converted on preparation."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return self.dataset_info_from_configs(
            description=f"Images under {c.path}",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(*c.image_size, c.channels)),
                "label": tfds.features.ClassLabel(names=class_folders(c.path)),
                "file": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(),
        )

    _beam = False  # prepared by Beam's workers (``pipeline prepare --beam``)

    @functools.cached_property
    def _files(self) -> list[tuple[str, Path]]:
        return labelled_files(self.builder_config.path, IMAGE_SUFFIXES)

    def _download_and_prepare(self, dl_manager, download_config) -> None:
        """TFDS's own preparation, here or as a Beam pipeline; the files it did not write were skipped."""
        self._beam = beam_requested(download_config)
        with _beam_running() if self._beam else contextlib.nullcontext():
            super()._download_and_prepare(dl_manager, download_config)
        self.info.metadata["skipped"] = len(self._files) - self.info.splits["train"].num_examples

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        c = self.builder_config
        decode = functools.partial(_decode, size=tuple(c.image_size), channels=c.channels)
        if self._beam:
            from pipeline.data import beam

            return beam.images(self._files, functools.partial(_one_image, root=c.path, decode=decode,
                                                              on_bad_input=c.on_bad_input))
        return self._examples(Decoded(self._files, decode, "image", c.on_bad_input))

    def _examples(self, images):
        for label, path, image in images:
            name = str(path.relative_to(self.builder_config.path))
            yield name, {"image": image, "label": label, "file": name}


def _beam_running():
    from pipeline.data import beam

    return beam.running()


def _one_image(label: str, path: Path, root: str, decode, on_bad_input: str) -> list:
    """The (key, example) of one image, for a Beam worker: [] when it is unreadable and skipped."""
    image, name = decode(path), str(path.relative_to(root))
    return [(name, {"image": image, "label": label, "file": name})] if readable(image, "image", path, on_bad_input) else []


DECODE_WINDOW = 256  # files decoded ahead of the writer


@dataclasses.dataclass
class Decoded:
    """(label, path, ``decode(path)``) for each readable one of ``files``, in order, with progress.

    A pool of threads decodes (PIL, libsndfile and scipy release the GIL), one window
    ahead of the writer: memory holds two windows of decoded files, not the folder.
    ``decode`` returns a string saying why a file cannot be read: with ``on_bad_input``
    ``error`` that stops preparation naming the file, with ``skip`` it counts in ``skipped``.
    """

    files: list[tuple[str, Path]]
    decode: Callable
    what: str  # image | audio
    on_bad_input: str
    skipped: int = 0

    def __iter__(self):
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            windows = _decoded_ahead(pool, self.decode, self.files)
            for window, results in progress(windows, len(self.files), "preparing", "files", size=lambda w: len(w[0])):
                for (label, path), result in zip(window, results):
                    if readable(result, self.what, path, self.on_bad_input):
                        yield label, path, result
                    else:
                        self.skipped += 1


def readable(result, what: str, path: Path, on_bad_input: str) -> bool:
    """Whether a decoded file is kept; one that could not be read (a string saying why) stops preparation or is skipped."""
    if not isinstance(result, str):
        return True
    if on_bad_input == "error":
        raise DataError(f"Unreadable {what} {path}: {result} (`data.on_bad_input: skip` skips it).")
    return False


def _decoded_ahead(pool, decode, files: list):
    """(window of files, their decoded images) pairs; the next window decodes while this one is written."""
    pending = None
    for start in range(0, len(files), DECODE_WINDOW):
        window = files[start:start + DECODE_WINDOW]
        submitted = (window, pool.map(decode, [path for _, path in window]))  # map submits the whole window now
        if pending:
            yield pending
        pending = submitted
    if pending:
        yield pending


def _decode(path: Path, size: tuple, channels: int):
    """The image at ``path`` converted and resized to ``size`` (uint8 pixels), or why it cannot be read.

    PIL refuses a file of more than twice its MAX_IMAGE_PIXELS (a decompression bomb: a small PNG that
    unpacks to gigabytes): that too is a reason, named or skipped like an unreadable file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode in DEEP_GREY:  # their top 8 bits, as TensorFlow's decode_png reads them when serving; PIL's
                # convert clips 16-bit values to 255, which made such a picture white
                img = Image.fromarray((np.clip(np.asarray(img, np.int64), 0, 65535) >> 8).astype(np.uint8), "L")
            img = img.convert("L" if channels == 1 else "RGB").resize(size[::-1], Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8).reshape(*size, channels)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        return str(exc)
