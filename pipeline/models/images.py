"""Images as files: the ``image_bytes`` signature, which decodes and resizes exactly as preparation did.

Preparation (data/builders/folders.py) converts each file with PIL to grayscale or RGB and resizes it
with PIL's bilinear filter. ``tf.image.resize`` is another filter (no rounding between its two passes,
other weights): its pixels differ from PIL's by several levels on many of them (bench/README.md), a
skew between the pixels a model was trained on and those it would be served. So the signature redoes
PIL's own arithmetic (Pillow's Resample.c, Convert.c) in TensorFlow: the same weights in 22-bit fixed
point, two passes each rounded to 8 bits, in Pillow's order; and the same integer luma for grayscale.
JPEG is decoded with the accurate integer DCT, as PIL's libjpeg does. PNG and JPEG files give the
prepared pixels exactly (tests/test_images.py); other formats are refused, and so is a request
whose files' headers claim more than MAX_PIXELS together (a few KB of PNG can unpack to gigabytes: a
request must not take the server's memory). Exports of ``image_folder`` data hold it.
"""

from __future__ import annotations

PRECISION_BITS = 22  # Pillow's fixed-point weights (32 - 8 - 2)
MAX_PIXELS = 40_000_000  # the most pixels one image_bytes request decodes: a 7,700 x 5,200 photo, or 64 of 800 x 600
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def pil_weights(in_size, out_size: int):
    """PIL's bilinear weights from ``in_size`` (a scalar tensor) to ``out_size`` pixels: int32 ``[out, in]``.

    Pillow's ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` in float64, operation for operation;
    the sum that normalises a row is a running one, in PIL's order.
    """
    import tensorflow as tf

    size = tf.cast(in_size, tf.float64)
    scale = size / out_size
    filterscale = tf.maximum(scale, 1.0)
    support = 1.0 * filterscale  # the bilinear filter's support is 1
    center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    first = tf.maximum(tf.cast(center - support + 0.5, tf.int32), 0)  # C's (int): toward zero
    last = tf.minimum(tf.cast(center + support + 0.5, tf.int32), tf.cast(in_size, tf.int32))
    pixel = tf.range(tf.cast(in_size, tf.int32))
    inside = (pixel[None, :] >= first[:, None]) & (pixel[None, :] < last[:, None])
    distance = tf.abs((tf.cast(pixel, tf.float64)[None, :] - center[:, None] + 0.5) * (1.0 / filterscale))
    weight = tf.where(inside & (distance < 1.0), 1.0 - distance, 0.0)
    total = tf.math.cumsum(weight, axis=1)[:, -1:]
    weight = tf.where(total != 0.0, weight / total, weight)
    return tf.cast(0.5 + weight * (1 << PRECISION_BITS), tf.int32)


def pil_resize(image, size: tuple[int, int]):
    """A uint8 ``[height, width, channels]`` image resized to ``size`` as PIL's ``resize(..., BILINEAR)``.

    Two passes, each rounded to 8 bits: horizontal then vertical, except that Pillow 13 runs the vertical
    one first when the height shrinks by more than twice as many pixels as the width (Resample.c's
    ``horizontal_first``). The installed Pillow decides; it names the prepared copy too (image_folder_config).
    """
    import tensorflow as tf

    from pipeline.data.builders.folders import pillow_reorders_passes

    def rounded(total):  # Pillow's clip8: the fixed-point sum, rounded to a pixel
        return tf.clip_by_value(tf.bitwise.right_shift(total + (1 << (PRECISION_BITS - 1)), PRECISION_BITS), 0, 255)

    def horizontal(planes):
        return rounded(tf.linalg.matmul(planes, pil_weights(tf.shape(planes)[2], size[1]), transpose_b=True))

    def vertical(planes):
        return rounded(tf.linalg.matmul(pil_weights(tf.shape(planes)[1], size[0]), planes))

    planes = tf.transpose(tf.cast(image, tf.int32), [2, 0, 1])  # [channels, height, width]: two plain products
    if pillow_reorders_passes():
        shrink = tf.shape(planes)[1:] - size  # (height, width)
        resized = tf.cond((shrink[0] > 0) & (shrink[0] > 2 * shrink[1]),
                          lambda: horizontal(vertical(planes)), lambda: vertical(horizontal(planes)))
    else:
        resized = vertical(horizontal(planes))
    return tf.cast(tf.transpose(resized, [1, 2, 0]), tf.uint8)


def decode_files(contents, shape: tuple[int, int, int]):
    """Encoded image files ``[batch]`` -> uint8 ``[batch, *shape]`` (1 or 3 channels), as preparation makes them.

    Every file's header is read first: unless all are PNG or JPEG and hold at most MAX_PIXELS together,
    the batch is refused before any file is decoded (then ten at once).
    """
    import tensorflow as tf

    contents = tf.convert_to_tensor(contents, tf.string)
    pixels = tf.map_fn(_pixel_count, contents, fn_output_signature=tf.int64)
    budget = tf.debugging.assert_less_equal(tf.reduce_sum(pixels), tf.constant(MAX_PIXELS, tf.int64),
                                            message=f"image_bytes takes at most {MAX_PIXELS:,} pixels a request")
    with tf.control_dependencies([budget]):
        return tf.map_fn(lambda one: _decoded(one, shape), contents, fn_output_signature=tf.TensorSpec(shape, tf.uint8))


def _pixel_count(contents):
    """The pixels an encoded PNG or JPEG file holds, read from its header (nothing is decoded): int64."""
    import tensorflow as tf

    jpeg = tf.io.is_jpeg(contents)
    known = tf.debugging.Assert(jpeg | tf.equal(tf.strings.substr(contents, 0, 8), PNG_SIGNATURE),
                                ["image_bytes takes PNG or JPEG files (the formats served exactly as prepared)"])
    with tf.control_dependencies([known]):
        size = tf.cond(jpeg, lambda: tf.io.extract_jpeg_shape(contents)[:2],  # a PNG's IHDR: width, height
                       lambda: tf.io.decode_raw(tf.strings.substr(contents, 16, 8), tf.int32, little_endian=False))
    return tf.reduce_prod(tf.cast(size, tf.int64))


def _decoded(contents, shape: tuple[int, int, int]):
    """One PNG or JPEG file (its header checked) -> uint8 ``shape``: PIL's conversion, then its resize."""
    import tensorflow as tf

    rgb = tf.cond(tf.io.is_jpeg(contents), lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
                  lambda: tf.io.decode_png(contents, channels=3))
    if shape[-1] == 1:  # PIL's luma: (R 19595 + G 38470 + B 7471 + 2^15) >> 16
        mixed = tf.reduce_sum(tf.cast(rgb, tf.int32) * [19595, 38470, 7471], axis=-1, keepdims=True) + (1 << 15)
        rgb = tf.cast(tf.bitwise.right_shift(mixed, 16), tf.uint8)
    return pil_resize(rgb, shape[:2])


# ---- the family's extras (registry.family) ---------------------------------------------------

def serving_signatures(model, cfg, spec, columns, task) -> dict:
    """``image_bytes``: encoded image files ``[batch]`` (string) -> the default signature's outputs.

    For data prepared from files (``image_folder``): only there is "as preparation did" PIL's
    conversion and resizing; TFDS' own image datasets (digits) come as arrays, and an export pays
    for each signature it holds (bench/README.md).
    """
    import tensorflow as tf

    images = [f for f in spec.features if f.kind == "image"]
    if (cfg.data.dataset != "image_folder" or len(images) != 1 or len(spec.features) != 1
            or images[0].shape[-1] not in (1, 3)):
        return {}
    feature = images[0]

    def image_bytes(contents):
        inputs = {feature.name: tf.cast(decode_files(contents, feature.shape), tf.float32)}
        return task.serve(model(inputs, training=False), inputs)

    return {"image_bytes": (image_bytes, [tf.TensorSpec((None,), tf.string, name="image_bytes")])}
