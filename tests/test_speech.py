"""Speech from raw audio: the log-mel front end, the audio builders, augmentation, and an export that
takes a waveform or a WAV file, also over REST."""

from __future__ import annotations

import base64
import functools
import io
import shutil

import numpy as np
import pytest

from pipeline.config import load
from pipeline.errors import DataError

from .conftest import ROOT, with_store

SPEECH = ROOT / "configs" / "speech.yaml"
EVERY_AUGMENTATION = ("augment.layers=[{type: time_shift, fraction: 0.2}, {type: background_noise, snr_db: 0}, "
                      "{type: time_mask, width: 5, count: 1}, {type: frequency_mask, width: 4, count: 1}]")
RATE = 8000
TONES = {"low": 300.0, "mid": 900.0, "high": 2500.0}


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    """A WAV file of ``samples`` (floats in [-1, 1]; [n] or [n, channels]) written by libsndfile in ``subtype``
    (``PCM_U8``, ``PCM_24``, ``FLOAT``, ``ULAW``...)."""
    import soundfile

    out = io.BytesIO()
    soundfile.write(out, samples, rate, subtype=subtype, format="WAV")
    return out.getvalue()


def tone(hz: float, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.01, len(t))


def write_tones(root, per_class: int = 12, rate: int = RATE):
    """One subfolder per tone; a few clips stored at other rates, stereo, 8-bit or as FLAC, as users' folders are."""
    import soundfile

    for label, hz in TONES.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            samples, at, subtype = tone(hz * (1 + 0.03 * (i % 3)), 0.6, rate, seed=i), rate, "PCM_16"
            if i == 0:
                samples, at = np.stack([tone(hz, 0.6, 44100, i)] * 2, axis=1), 44100  # CD audio, stereo
            elif i == 1:
                subtype = "PCM_U8"
            elif i == 2:
                soundfile.write(root / label / f"{i}.flac", samples, at, subtype="PCM_24")
                continue
            (root / label / f"{i}.wav").write_bytes(wav_bytes(samples, at, subtype))
    return root


def speech_cfg(tmp_path, tfds_dir, folder, *extra: str):
    return load(SPEECH, [f"workdir={with_store(tmp_path / 'work')}", f"data.data_dir={tfds_dir}", "data.dataset=audio_folder",
                         f"data.path={folder}", "data.splits.train=train[:60%]", "data.splits.validation=train[60%:80%]",
                         "data.splits.test=train[80%:]", "data.batch_size=8", "train.verbose=0", *extra])


# ---- the front end -----------------------------------------------------------------


def _numpy_log_mel(wave: np.ndarray, rate: int, mel_bins: int, window: int, hop: int, fft: int, low: float,
                   high: float) -> np.ndarray:
    """The reference: Hann-windowed frames -> |rfft|^2 -> HTK mel triangles -> log -> per-clip standardised."""
    starts = range(0, len(wave) - window + 1, hop)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)  # periodic, as tf.signal's
    power = np.abs(np.fft.rfft(np.stack([wave[s:s + window] * hann for s in starts]), n=fft)) ** 2

    def mel(hz):
        return 1127.0 * np.log1p(np.asarray(hz) / 700.0)

    edges = np.linspace(mel(low), mel(high), mel_bins + 2)
    bins = mel(np.linspace(0, rate / 2, fft // 2 + 1))[1:, None]  # the DC bin takes no part
    rising = (bins - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    falling = (edges[None, 2:] - bins) / (edges[2:] - edges[1:-1])
    weights = np.vstack([np.zeros((1, mel_bins)), np.maximum(0, np.minimum(rising, falling))])
    logs = np.log(power @ weights + 1e-6)
    return (logs - logs.mean()) / np.sqrt(logs.var() + 1e-6)


def test_the_log_mel_front_end_matches_a_numpy_reference_on_a_tone():
    from pipeline.models.audio import frames, log_mel

    audio = load(None, [f"data.sample_rate={RATE}"]).model.audio
    wave = np.sin(2 * np.pi * 1000.0 * np.arange(RATE) / RATE).astype(np.float32)
    ours = np.asarray(log_mel(RATE, audio, "front_end")(wave[None]))[0, ..., 0]
    window, hop, fft = frames(RATE, audio)
    reference = _numpy_log_mel(wave.astype(np.float64), RATE, audio.mel_bins, window, hop, fft, audio.min_hz, RATE / 2)
    assert ours.shape == reference.shape == (1 + (RATE - window) // hop, audio.mel_bins)
    np.testing.assert_allclose(ours, reference, atol=2e-3)
    edges = np.linspace(1127 * np.log1p(audio.min_hz / 700), 1127 * np.log1p(RATE / 2 / 700), audio.mel_bins + 2)
    nearest = np.argmin(np.abs(edges[1:-1] - 1127 * np.log1p(1000 / 700)))
    assert np.all(ours.argmax(axis=1) == nearest)  # the tone's energy sits in its own mel band, every frame


def test_audio_augmentation_acts_in_training_only_and_masks_whole_bands():
    import keras

    from pipeline.data.augment import audio_layers

    cfg = load(SPEECH, [EVERY_AUGMENTATION])
    (shift, noise), (time_mask, frequency_mask) = audio_layers(cfg.augment, seed=1)
    waves = keras.ops.convert_to_tensor(np.stack([tone(440, 1, RATE, s) for s in range(4)]).astype(np.float32))
    spectrogram = keras.ops.ones((4, 98, 40, 1))
    for layer, x in ((shift, waves), (noise, waves), (time_mask, spectrogram), (frequency_mask, spectrogram)):
        assert np.array_equal(np.asarray(layer(x, training=False)), np.asarray(x))
        assert not np.array_equal(np.asarray(layer(x, training=True)), np.asarray(x))
    noisy = np.asarray(noise(waves, training=True)) - np.asarray(waves)
    snr = 10 * np.log10(np.mean(np.asarray(waves) ** 2, axis=1) / np.mean(noisy**2, axis=1))
    assert np.all((snr > -1) & (snr < 21))  # drawn from snr_db to snr_db + 20
    masked = np.asarray(time_mask(spectrogram, training=True))[..., 0]
    assert np.all(masked.min(axis=2) == masked.max(axis=2))  # a frame is hidden whole, across every mel bin
    assert np.all((masked == 0).any(axis=2).sum(axis=1) <= 5)


# ---- the builders --------------------------------------------------------------------


def test_audio_folder_resamples_mixes_to_mono_pads_and_crops_with_a_count(tmp_path, tfds_dir, capsys):
    from pipeline.data import dataset

    folder = write_tones(tmp_path / "tones", per_class=3)
    (folder / "low" / "long.wav").write_bytes(wav_bytes(tone(300, 2.5, RATE), RATE))
    data = dataset.load(speech_cfg(tmp_path, tfds_dir, folder, "data.splits.train=train",
                                   "data.splits.validation=train", "data.splits.test=train"))
    assert [(f.name, f.kind, f.dtype, f.shape) for f in data.spec.features] == [("audio", "audio", "float32", (RATE,))]
    assert "1 clips longer than 1.0 s (`data.clip_seconds`) were cropped" in capsys.readouterr().err
    clips = np.concatenate([x["audio"].numpy() for x, _ in data.test])
    assert clips.shape == (10, RATE) and np.abs(clips).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(clips[:, :4800], axis=1)).argmax(axis=1) * RATE / 4800  # each clip's main tone
    played = np.array([hz * (1 + 0.03 * k) for hz in TONES.values() for k in range(3)])
    assert np.all(np.abs(spectrum[:, None] - played[None]).min(axis=1) < 5)  # the 44.1 kHz stereo ones too
    assert (np.abs(clips[:, 4800 + 10:]).max(axis=1) == 0).sum() == 9  # 0.6 s clips padded with silence; the long not


@pytest.mark.parametrize("rate, channels, suffix", [(44100, 2, "wav"), (48000, 1, "flac"), (RATE, 1, "wav")])
def test_a_long_recordings_clip_decodes_only_its_start_and_equals_the_start_of_the_whole(tmp_path, monkeypatch,
                                                                                         rate, channels, suffix):
    """A folder of hour-long recordings (calls, meetings) is prepared in the memory of its one-second clips:
    a 20-minute stereo WAV was once decoded whole, to keep its first second."""
    import soundfile

    from pipeline.data.builders.speech import AudioConfig, clip, fit, read_audio

    path = tmp_path / f"long.{suffix}"
    soundfile.write(path, np.random.default_rng(0).normal(0, 0.2, (rate * 30, channels)), rate)
    decoded = []
    read = soundfile.SoundFile.read
    monkeypatch.setattr(soundfile.SoundFile, "read", lambda self, *a, **k: decoded.append(read(self, *a, **k)) or
                        decoded[-1])
    samples, cropped = clip(path, AudioConfig(name="x", sample_rate=RATE, clip_seconds=1.0))
    assert cropped and len(decoded[0]) <= rate * 1.01  # the first second's frames, and the filter's reach past them
    assert np.array_equal(samples, fit(read_audio(path.read_bytes(), RATE)[0], RATE)[0])  # as from the whole file
    assert read_audio(path, RATE, most=10)[1] == RATE * 30  # the whole file's length, known from its header


@functools.cache
def _wav_decoder():
    """The export's WAV decoder for one-second clips at RATE, traced once as the export traces it (no autograph)."""
    import tensorflow as tf

    from pipeline.models.wav import decode_wav

    return tf.function(lambda c: decode_wav(c, RATE, RATE), autograph=False,
                       input_signature=[tf.TensorSpec([None], tf.string)])


def _served(contents: list[bytes]):
    return _wav_decoder()(contents).numpy()


def test_the_served_wav_decoder_gives_the_samples_preparation_reads_for_every_depth_rate_and_length():
    """What a client posts to the ``wav`` signature becomes the very waveform the dataset holds for that file:
    8- to 32-bit PCM and float, mono to three channels, at the model's rate, above and below it, shorter than
    a clip, cut off mid-file (its size field says more than it holds), and longer than a clip (cropped)."""
    from pipeline.data.builders.speech import fit, read_audio

    noise = np.random.default_rng(0).normal(0, 0.3, (48000 * 3, 3)).clip(-1, 1)
    files = [wav_bytes(noise[:int(rate * seconds), :channels], rate, subtype)
             for rate, subtype, channels, seconds in [(RATE, "PCM_16", 1, 0.5), (RATE, "PCM_U8", 2, 1.5),
                                                      (44100, "PCM_24", 2, 1.2), (11025, "PCM_32", 1, 0.3),
                                                      (48000, "FLOAT", 3, 3.0), (16000, "DOUBLE", 1, 0.8)]]
    files.append(files[2][:30_000])  # cut short
    expected = np.stack([fit(read_audio(f, RATE)[0], RATE)[0] for f in files])
    np.testing.assert_array_equal(_served(files), expected)


@pytest.mark.parametrize("contents, reason", [
    (b"fLaC\x00\x00\x00\x22", r"wav takes WAV files \(RIFF, PCM of 8 to 32 bits or float\)\]"),
    (b"", r"wav takes WAV files"),
    (wav_bytes(np.zeros(100), 7350), r"wav takes sample rates of 8000, 11025, .*, 96000 Hz, not\] \[7350\]"),
    (wav_bytes(np.zeros(100), RATE, "ALAW"), r"not this format \(WAVE code, bits\):\] \[6\] \[8\]"),
    (wav_bytes(np.zeros(100), RATE)[:44], r"this WAV holds no samples"),
])
def test_the_served_wav_decoder_refuses_other_files_and_rates_naming_why(contents, reason):
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError, match=reason):
        _served([contents])


@pytest.mark.parametrize("contents, why", [(b"RIFF not a wave", "Format not recognised."),
                                           (None, "it holds no samples")])
def test_an_unreadable_or_empty_clip_is_named_or_skipped_and_counted(tmp_path, tfds_dir, contents, why):
    from pipeline.data import dataset

    folder = write_tones(tmp_path / "tones", per_class=3)
    bad = folder / "mid" / "bad.wav"
    bad.write_bytes(contents if contents is not None else wav_bytes(np.zeros(0), RATE))
    with pytest.raises(DataError, match=rf"^Unreadable audio {bad}: {why} \(`data.on_bad_input: skip` skips it\)\.$"):
        dataset.load(speech_cfg(tmp_path, tfds_dir, folder))
    skipped = dataset.load(speech_cfg(tmp_path, tfds_dir, folder, "data.on_bad_input=skip"))
    assert skipped.spec.skipped == 1 and sum(skipped.spec.sizes.values()) == 9


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (.ci/run installs it)")
def test_spoken_digits_are_split_by_voice_so_no_test_voice_is_heard_in_training(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from pipeline.data.builders import speech

    monkeypatch.setattr(speech, "ACCENTS", ("en-us", "en-gb"))  # 16 voices instead of 192: seconds, not a minute
    monkeypatch.setattr(speech, "VARIANTS", ("m1", "m3", "f2", "f4", "klatt", "croak", "whisper", "Annie"))
    monkeypatch.setattr(speech, "SPEEDS", (160,))
    cfg = load(SPEECH, [f"workdir={tmp_path}"])
    voices = [f"{a}+{v}" for a in speech.ACCENTS for v in speech.VARIANTS]
    chosen = speech.split_by_voice(voices)
    assert sorted(sum(chosen.values(), [])) == sorted(voices) and all(chosen.values())
    builder = tfds.builder("spoken_digits", config=speech.spoken_digits_config(cfg), data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare()
    heard = {split: {(ex["voice"].decode(), int(ex["label"])) for ex in tfds.as_numpy(builder.as_dataset(split=split))}
             for split in ("train", "validation", "test")}
    by_split = {split: {voice for voice, _ in pairs} for split, pairs in heard.items()}
    assert by_split == {split: set(chosen[split]) for split in by_split}  # every voice in exactly one split
    assert all({label for _, label in pairs} == set(range(10)) for pairs in heard.values())


def test_spoken_digits_without_espeak_say_how_to_install_it(tmp_path, monkeypatch):
    from pipeline.data import dataset

    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="^spoken_digits is spoken by espeak-ng, which is not installed: `apt-get "
                                        "install espeak-ng`"):
        dataset.load(load(SPEECH, [f"workdir={tmp_path}"]))


# ---- train, export, serve --------------------------------------------------------------


def test_the_augmentation_preview_shows_clips_as_the_models_spectrogram_each_layer_alone_then_all(
        tmp_path, tfds_dir):
    from PIL import Image

    from pipeline.data.augment import _audio_columns, preview
    from pipeline.data.dataset import sample_signals

    layers = ("[{type: time_shift, fraction: 0.3}, {type: background_noise, snr_db: 0}, "
              "{type: time_mask, width: 10, count: 2}]")
    cfg = speech_cfg(tmp_path, tfds_dir, write_tones(tmp_path / "tones"), f"augment.layers={layers}")
    kind, waves = sample_signals(cfg, 3)
    assert kind == "audio" and waves.shape == (3, RATE)
    columns = dict(_audio_columns(cfg, waves))
    assert list(columns) == ["original", "time_shift", "background_noise", "time_mask", "all"]
    original = columns["original"]
    assert all(batch.shape == original.shape for batch in columns.values())
    assert not np.allclose(columns["time_shift"], original) and not np.allclose(columns["background_noise"], original)
    masked = columns["time_mask"][..., 0]  # whole frames set to the normalised spectrogram's mean, 0
    assert all((frame == 0).all(axis=-1).any() for frame in masked)
    with Image.open(preview(cfg, tmp_path / "grid.png", n_images=3)) as grid:
        assert grid.size[0] / grid.size[1] == pytest.approx(5 / 3, rel=0.1)


@pytest.mark.slow
def test_the_export_takes_a_waveform_or_any_wav_preparation_reads_and_serves_base64_wav_over_rest(tmp_path, tfds_dir):
    import tensorflow as tf

    from pipeline.jobs.train import train
    from pipeline.models.wav import decode_wav

    from .test_serving import call, start_server

    folder = write_tones(tmp_path / "tones")
    result = train(speech_cfg(tmp_path, tfds_dir, folder, "model.width=8", "model.depth=2", "model.head_units=16",
                              "train.epochs=3", EVERY_AUGMENTATION))
    assert result.checks["verify.max_abs_diff"] < 1e-5  # parity, and determinism: augmentation is off in the export
    loaded = tf.saved_model.load(str(result.export_path))
    from pipeline.data.builders.speech import fit, read_audio

    # 16-bit at the model's rate, CD audio in stereo, 8-bit; then 24-bit at 16 kHz and float at 48 kHz, made here
    files = [*(folder / label / "5.wav" for label in TONES), folder / "low" / "0.wav", folder / "mid" / "1.wav"]
    contents = [f.read_bytes() for f in files] + [wav_bytes(tone(900, 0.4, 16000), 16000, "PCM_24"),
                                                  wav_bytes(tone(2500, 1.5, 48000), 48000, "FLOAT")]
    waves = np.stack([fit(read_audio(c, RATE)[0], RATE)[0] for c in contents])
    by_wave = loaded.signatures["serving_default"](audio=tf.constant(waves))["probabilities"].numpy()
    decoded = decode_wav(tf.constant(contents), RATE, RATE).numpy()
    np.testing.assert_array_equal(decoded, waves)  # the samples preparation made, bit for bit
    by_file = loaded.signatures["wav"](wav=tf.constant(contents))["probabilities"].numpy()
    np.testing.assert_allclose(by_file, by_wave, atol=1e-5)

    root = tmp_path / "exports"
    shutil.copytree(result.export_path, root / "tones" / "1")
    proc, port = start_server(root, "server.log", model="tones")
    try:
        body = {"signature_name": "wav", "instances": [{"wav": {"b64": base64.b64encode(c).decode()}}
                                                       for c in contents]}
        status, answer = call(port, "/v1/models/tones:predict", body)
        assert status == 200
        np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]], by_wave, atol=1e-5)
        for content, reason in [((folder / "low" / "2.flac").read_bytes(), "wav takes WAV files (RIFF, PCM of 8 to 32 "
                                 "bits or float)"),
                                (wav_bytes(tone(300, 0.5, 7350), 7350), "wav takes sample rates of 8000, 11025, 12000, "
                                 "16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000 Hz, not 7350"),
                                (wav_bytes(tone(300, 0.5, RATE), RATE, "ULAW"), "not this format (WAVE code, bits): 7, 8")]:
            status, answer = call(port, "/v1/models/tones:predict",
                                  {"signature_name": "wav", "instances": [{"b64": base64.b64encode(content).decode()}]})
            assert status == 400 and answer["error"].endswith(reason), answer
    finally:
        proc.terminate()
        proc.wait(timeout=30)
