"""Image files served as preparation saw them: the ``image_bytes`` signature's decoding and resizing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest


def encoded(rng, height: int, width: int, mode: str, form: str) -> bytes:
    """A smooth picture with noise (edges and flat parts both), saved as ``form`` in PIL ``mode``."""
    from PIL import Image

    coarse = rng.integers(0, 256, (max(2, height // 4), max(2, width // 4), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int64)
    pixels = np.clip(smooth + rng.integers(-20, 20, smooth.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, form)
    return out.getvalue()


# Downscaled 25x, halved, kept, enlarged, made taller than wide; colour, grey, alpha, palette; lossless and JPEG.
CASES = [(400, 300, "RGB", "JPEG"), (32, 32, "L", "JPEG"), (37, 61, "RGBA", "PNG"), (16, 16, "P", "PNG"),
         (5, 9, "LA", "PNG"), (240, 180, "RGB", "PNG"), (17, 3, "L", "PNG"), (90, 40, "RGB", "PNG")]


@pytest.mark.parametrize("height, width, mode, form", CASES)
@pytest.mark.parametrize("shape", [(16, 16, 3), (12, 20, 1)])
def test_a_file_decodes_to_the_very_pixels_preparation_made_of_it(tmp_path, height, width, mode, form, shape):
    """tf.image.resize would be off by up to 9 levels on half the pixels: PIL's arithmetic, redone."""
    from pipeline.data.builders.folders import _decode
    from pipeline.models.images import decode_files

    path = tmp_path / f"picture.{form.lower()}"
    path.write_bytes(encoded(np.random.default_rng(height * width), height, width, mode, form))
    prepared = _decode(path, shape[:2], shape[2])
    served = decode_files([path.read_bytes()], shape).numpy()[0]
    assert served.dtype == np.uint8 and served.shape == shape
    np.testing.assert_array_equal(served, prepared)


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims another size: a decompression bomb's first bytes."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (1, 1)).save(out, "PNG")
    data = bytearray(out.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize("contents, message", [
    (b"not an image", "takes PNG or JPEG files"),
    (b"GIF89a" + bytes(20), "takes PNG or JPEG files"),  # decodable, but not as preparation decoded it
    (_png_claiming(50_000, 50_000), "at most 40,000,000 pixels a request"),  # refused before it is unpacked
])
def test_what_is_no_png_or_jpeg_or_too_large_to_decode_is_refused_by_its_header(contents, message):
    import tensorflow as tf

    from pipeline.models.images import decode_files

    decode = tf.function(lambda c: decode_files(c, (16, 16, 3)), input_signature=[tf.TensorSpec((None,), tf.string)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        decode(tf.constant([contents]))


def test_a_folder_prepared_under_another_order_of_resizing_passes_is_prepared_again(tmp_path, monkeypatch):
    """Pillow 13 resizes some shapes vertical pass first: its pixels are not Pillow 12's, so the copy's name differs."""
    from pipeline import load_config
    from pipeline.data.builders import folders

    (tmp_path / "pictures" / "cat").mkdir(parents=True)
    (tmp_path / "pictures" / "cat" / "1.png").write_bytes(encoded(np.random.default_rng(0), 8, 8, "RGB", "PNG"))
    cfg = load_config(Path(__file__).parents[1] / "configs/examples/image_folder.yaml",
                      [f"data.path={tmp_path / 'pictures'}"])
    names = {}
    for major in (12, 13, 14):
        monkeypatch.setattr(folders, "pillow_major", lambda major=major: major)
        names[major] = folders.image_folder_config(cfg).name
    assert names[13] == names[14] != names[12]
