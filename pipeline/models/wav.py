"""WAV files decoded inside the export as preparation reads them: the ``wav`` signature's front door.

Preparation (data/builders/speech.py) reads a file with libsndfile as float64, averages its channels and
resamples it to ``data.sample_rate`` with scipy's ``resample_poly``. ``tf.audio.decode_wav`` takes 16-bit
PCM only, so a model trained on a folder of 24-bit, 8-bit or float recordings at 44.1 kHz would refuse those
very files when served. Here the RIFF chunks are read in TensorFlow: PCM of 8 to 32 bits and 32- or 64-bit
float (libsndfile's scaling: 8-bit as unsigned around 128, the others over 2^(bits - 1)), any channel count,
and a file at one of ``RATES`` resampled by ``resample_poly``'s own filter (its Kaiser-windowed taps computed
by scipy when the model is exported, applied phase by phase), in float64 as scipy does. Only the frames that
the clip's samples are made of are decoded. Other files (FLAC, MP3, A-law, another rate) are refused by name.
"""

from __future__ import annotations

import math

import numpy as np

# Sample rates a WAV may have (resampled to the model's): telephone, speech, CD and studio rates.
RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
PCM, FLOAT, EXTENSIBLE = 1, 3, 0xFFFE  # WAVE format codes (an extensible file names PCM or float in its GUID)
REFUSED = "wav takes WAV files (RIFF, PCM of 8 to 32 bits or float)"


def polyphase(rate: int, target: int) -> tuple[int, int, int, np.ndarray]:
    """``resample_poly(x, up, down)``'s filter from ``rate`` to ``target`` Hz as (up, down, outputs it drops
    first, taps by phase ``[up, taps]``): output ``n`` is ``sum_j banks[t % up, j] * x[t // up - j]`` with
    ``t = (n + dropped) * down`` (scipy's ``upfirdn`` of its pre-padded filter, then its trim)."""
    from scipy.signal import firwin

    common = math.gcd(rate, target)
    up, down = target // common, rate // common
    half = 10 * max(up, down)
    taps = firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
    pre = down - half % down
    taps = np.concatenate([np.zeros(pre), taps])
    per_phase = -(-len(taps) // up)
    banks = np.zeros(up * per_phase)
    banks[:len(taps)] = taps
    return up, down, (half + pre) // down, banks.reshape(per_phase, up).T


def decode_wav(contents, samples: int, sample_rate: int):
    """Encoded WAV files ``[batch]`` -> float32 waveforms ``[batch, samples]`` at ``sample_rate``: mixed to mono,
    resampled, padded with silence or cropped, as the dataset holds them.

    Raises (when run):
        InvalidArgumentError: a file that is no WAV of the kinds above, or at a rate outside ``RATES``.
    """
    import tensorflow as tf

    rates, table, taps = _filters(sample_rate)

    def one(contents):
        fmt, channels, rate, width, start, size = _header(contents)
        known = tf.equal(rates, rate)
        frames = size // (channels * width)
        checks = [tf.debugging.Assert(tf.reduce_any(known), [f"wav takes sample rates of {', '.join(map(str, rates))} "
                                                             "Hz, not", rate]),
                  tf.debugging.Assert(frames > 0, ["this WAV holds no samples"])]
        with tf.control_dependencies(checks):
            up, down, dropped, count, offset = tf.unstack(tf.gather(table, tf.argmax(tf.cast(known, tf.int32))))
            read = tf.minimum(frames, ((samples - 1 + dropped) * down) // up + 1)  # the last output's newest input
            pcm = _values(tf.io.decode_raw(tf.strings.substr(contents, start, read * channels * width), tf.uint8),
                          fmt, width)
            mono = tf.reduce_mean(tf.reshape(pcm, [read, channels]), axis=1)
            # output n = sum_j taps[phase, j] * mono[newest - j], at = (n + dropped) * down, phase = at % up
            at = (tf.range(samples, dtype=tf.int64) + dropped) * down
            j = tf.range(count)[None, :]
            inputs = (at // up)[:, None] - j
            used = (inputs >= 0) & (inputs < read)
            window = tf.where(used, tf.gather(mono, tf.clip_by_value(inputs, 0, read - 1)), 0.0)
            out = tf.reduce_sum(window * tf.gather(taps, offset + (at % up)[:, None] * count + j), axis=1)
            produced = -(-frames * up // down)  # resample_poly's length for the whole file: silence after it
            return tf.cast(tf.where(tf.range(samples, dtype=tf.int64) < produced, out, 0.0), tf.float32)

    contents = tf.convert_to_tensor(contents, tf.string)
    return tf.map_fn(one, contents, fn_output_signature=tf.TensorSpec((samples,), tf.float32))


def _filters(sample_rate: int):
    """(the rates taken, a row per rate ``[up, down, outputs dropped, taps a phase, first tap's offset]``, every
    rate's taps in one flat float64 array): one graph resamples from any of them; a file at ``sample_rate``
    takes one tap of 1 (its samples as they are, as preparation leaves them)."""
    rates = sorted({*RATES, sample_rate})
    rows, flat, offset = [], [], 0
    for rate in rates:
        up, down, dropped, banks = (1, 1, 0, np.ones((1, 1))) if rate == sample_rate else polyphase(rate, sample_rate)
        rows.append([up, down, dropped, banks.shape[1], offset])
        flat.append(banks.ravel())
        offset += banks.size
    return np.array(rates, dtype=np.int64), np.array(rows, dtype=np.int64), np.concatenate(flat)


def _header(contents):
    """(format code, channels, rate, bytes a sample, where the samples start, their bytes) of one WAV file
    (a string): its chunks are read in place, the samples are not copied."""
    import tensorflow as tf

    length = tf.cast(tf.strings.length(contents), tf.int64)

    def read(at, count: int):  # ``count`` bytes from ``at``: zeros past the end (then a check fails)
        at = tf.minimum(tf.cast(at, tf.int64), length)
        got = tf.io.decode_raw(tf.strings.substr(contents, at, tf.constant(count, tf.int64)), tf.uint8)
        return tf.pad(got, [[0, count - tf.size(got)]])

    def number(at, width: int):  # little-endian, unsigned
        return tf.reduce_sum(tf.cast(read(at, width), tf.int64) * (256 ** np.arange(width)))

    def named(at, tag: bytes):
        return tf.reduce_all(tf.equal(read(at, 4), np.frombuffer(tag, np.uint8)))

    def walk(at, fmt_at, data_at, size):  # chunk by chunk: an id, its size, its bytes (padded to even)
        chunk = number(at + 4, 4)
        fmt_at = tf.where(named(at, b"fmt "), at + 8, fmt_at)
        data_at, size = tf.where(named(at, b"data"), at + 8, data_at), tf.where(named(at, b"data"), chunk, size)
        return at + 8 + chunk + chunk % 2, fmt_at, data_at, size

    riff = tf.debugging.Assert(named(0, b"RIFF") & named(8, b"WAVE"), [REFUSED])
    with tf.control_dependencies([riff]):
        missing = tf.constant(-1, tf.int64)
        _, fmt_at, data_at, size = tf.while_loop(lambda at, fmt_at, data_at, size: (at + 8 <= length) & (data_at < 0),
                                                 walk, (tf.constant(12, tf.int64), missing, missing, missing))
    fmt = number(fmt_at, 2)
    fmt = tf.where(fmt == EXTENSIBLE, number(fmt_at + 24, 2), fmt)
    channels, rate, bits = number(fmt_at + 2, 2), number(fmt_at + 4, 4), number(fmt_at + 14, 2)
    pcm = (fmt == PCM) & (bits >= 8) & (bits <= 32)
    floating = (fmt == FLOAT) & ((bits == 32) | (bits == 64))
    checks = [tf.debugging.Assert((fmt_at >= 0) & (fmt_at + 16 <= length) & (data_at >= 0),
                                  [REFUSED + ": no fmt or data chunk"]),
              tf.debugging.Assert((pcm | floating) & (bits % 8 == 0) & (channels > 0),
                                  [REFUSED + ", not this format (WAVE code, bits):", fmt, bits])]
    with tf.control_dependencies(checks):
        size = tf.minimum(size, length - data_at)  # a streamed file's size field may say more than it holds
        return fmt, channels, rate, bits // 8, data_at, size


def _values(data, fmt, width):
    """Sample bytes -> float64 values as libsndfile reads them."""
    import tensorflow as tf

    def integer():
        parts = tf.reshape(tf.cast(data, tf.int64), [-1, width])
        value = tf.reduce_sum(parts * tf.bitwise.left_shift(tf.constant(1, tf.int64), 8 * tf.range(width)), axis=1)
        half = tf.bitwise.left_shift(tf.constant(1, tf.int64), 8 * width - 1)
        signed = tf.where(width == 1, value - 128, tf.where(value >= half, value - 2 * half, value))  # 8-bit: unsigned
        return tf.cast(signed, tf.float64) / tf.cast(tf.where(width == 1, tf.constant(128, tf.int64), half), tf.float64)

    def real():
        return tf.cond(width == 4, lambda: tf.cast(tf.bitcast(tf.reshape(data, [-1, 4]), tf.float32), tf.float64),
                       lambda: tf.bitcast(tf.reshape(data, [-1, 8]), tf.float64))

    return tf.cond(fmt == FLOAT, real, integer)
