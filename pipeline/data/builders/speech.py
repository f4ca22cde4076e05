"""Speech: ``spoken_digits`` (made on this machine by espeak-ng) and ``audio_folder`` (users' WAV and FLAC files).

Both store each clip as float32 samples in [-1, 1] at ``data.sample_rate``, mono, padded
with silence or cropped to ``data.clip_seconds`` (a cropped clip is counted and said).
The model's front end (models/audio.py) turns them into spectrograms.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import math
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from pipeline.data.builders.folders import (
    Decoded,
    class_folders,
    folder_fingerprint,
    labelled_files,
)
from pipeline.data.builders.local import Local
from pipeline.data.checks import require_folder
from pipeline.errors import DataError
from pipeline.text import progress

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "croak", "whisper", "grandpa", "grandma", "Andy", "Annie", "Michael", "steph")
SPEEDS, PITCHES = (130, 175), (50,)  # words per minute; espeak's 0-99 pitch scale
SPLIT_VOICES = {"validation": 0.15, "test": 0.15}  # the rest trains


@dataclasses.dataclass(eq=False)
class AudioConfig(tfds.core.BuilderConfig):
    path: str = ""
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    on_bad_input: str = "error"

    @property
    def samples(self) -> int:
        return round(self.sample_rate * self.clip_seconds)


def _config(cfg, fingerprint: str) -> AudioConfig:
    d = cfg.data
    options = f"{fingerprint}|{d.sample_rate}|{d.clip_seconds}|{d.on_bad_input}"
    stem = Path(d.path).name.lower() if d.path else "espeak"
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    return AudioConfig(name=f"{name}-{hashlib.sha256(options.encode()).hexdigest()[:12]}",
                       path=str(Path(d.path).resolve()) if d.path else "", sample_rate=d.sample_rate,
                       clip_seconds=d.clip_seconds, on_bad_input=d.on_bad_input)


def spoken_digits_config(cfg) -> AudioConfig:
    return _config(cfg, f"{WORDS}{ACCENTS}{VARIANTS}{SPEEDS}{PITCHES}")


def audio_folder_config(cfg) -> AudioConfig:
    return _config(cfg, folder_fingerprint(require_folder(cfg)))


class Clip(tfds.features.Audio):
    """float32 samples stored as their raw bytes: TFDS's Audio hands an array to the writer as a list of
    floats, which serialises at a fraction of the speed (bench/README.md, "Tables as they grow")."""

    def __init__(self, c: AudioConfig):
        super().__init__(shape=(c.samples,), dtype=np.float32, sample_rate=c.sample_rate, encoding="bytes")

    def encode_example(self, samples):
        return tfds.features.Tensor.encode_example(self, samples)


def _features(c: AudioConfig, labels, **extra) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "audio": Clip(c),
        "label": tfds.features.ClassLabel(names=list(labels)), **extra})


def clip(source: bytes | Path, c: AudioConfig) -> tuple[np.ndarray, bool]:
    """A WAV or FLAC file's (or its bytes') samples as float32 mono at ``c.sample_rate``, padded or cropped;
    and whether it was cropped. Only the start that the clip keeps is decoded: an hour's recording costs
    what its first second costs."""
    samples, length = read_audio(source, c.sample_rate, most=c.samples)
    return fit(samples, c.samples)[0], length > c.samples


RESAMPLE_REACH = 20  # upsampled steps per max(up, down) read past a clip: twice the 10 that resample_poly's filter reaches


def fit(samples: np.ndarray, length: int) -> tuple[np.ndarray, bool]:
    """``samples`` padded with silence or cropped to ``length``; and whether they were cropped."""
    return np.pad(samples[:length], (0, max(0, length - len(samples)))).astype(np.float32), len(samples) > length


def read_audio(source: bytes | Path, sample_rate: int, most: int | None = None) -> tuple[np.ndarray, int]:
    """A WAV or FLAC file's samples as float32 mono in [-1, 1] at ``sample_rate`` (libsndfile reads it), and
    how many the whole file holds at that rate.

    ``most``: only the first ``most`` samples are needed, so only the frames they are made of are decoded,
    with the resampling filter's reach past them (``RESAMPLE_REACH``): those samples are the whole file's.

    Raises:
        ValueError: the file is no audio libsndfile reads, or holds no samples.
    """
    import soundfile
    from scipy.signal import resample_poly

    try:
        with soundfile.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as f:
            common = math.gcd(f.samplerate, sample_rate)
            up, down = sample_rate // common, f.samplerate // common
            frames = -1 if most is None else math.ceil(most * down / up) + RESAMPLE_REACH * max(up, down) // up + 1
            samples, length = f.read(frames, dtype="float64", always_2d=True), -(-f.frames * up // down)
    except (RuntimeError, TypeError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        raise ValueError(getattr(exc, "error_string", None) or str(exc)) from None  # without the stream's repr
    if samples.size == 0:
        raise ValueError("it holds no samples")
    samples = samples.mean(axis=1)
    if up != down:
        samples = resample_poly(samples, up, down)
    return samples.astype(np.float32), length


def _warn_cropped(count: int, c: AudioConfig) -> None:
    if count:
        print(f"warning: {count} clips longer than {c.clip_seconds} s (`data.clip_seconds`) were cropped",
              file=sys.stderr)


class SpokenDigits(Local, tfds.core.GeneratorBasedBuilder):
    """The words zero to nine in many synthetic voices, spoken on this machine by espeak-ng; nothing downloads.

    A voice is an accent with a variant (24 variants of 8 English accents); each says every word at
    two speeds, placed at a random point of the clip over faint noise. Splits are by
    voice: validation and test voices are never heard in training.
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "Clips stored as raw float32 bytes."}
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Spoken digits synthesised by espeak-ng, split by voice.",
            features=_features(self.builder_config, WORDS, voice=tfds.features.Text()),
            supervised_keys=("audio", "label"), metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        if shutil.which("espeak-ng") is None:
            raise DataError("spoken_digits is spoken by espeak-ng, which is not installed: `apt-get install "
                            "espeak-ng` (Debian, Ubuntu), `brew install espeak-ng` (macOS), then run again.")
        voices = [f"{accent}+{variant}" for accent in ACCENTS for variant in VARIANTS]
        return {split: self._generate_examples(chosen) for split, chosen in split_by_voice(voices).items()}

    def _generate_examples(self, voices: list[str]):
        c = self.builder_config
        jobs = [(voice, word, speed, pitch) for voice in voices for word in WORDS for speed in SPEEDS
                for pitch in PITCHES]
        cropped = 0
        with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(max_workers=8) as pool:
            spoken = pool.map(functools.partial(_speak, folder=folder), jobs)  # short processes: threads overlap them
            for (voice, word, speed, pitch), wav in progress(zip(jobs, spoken), len(jobs), "speaking", "clips"):
                key = f"{voice}/{word}/{speed}/{pitch}"
                samples, was_cropped = _placed(read_audio(wav, c.sample_rate)[0], c.samples, key)
                cropped += was_cropped
                yield key, {"audio": samples, "label": word, "voice": voice}
        _warn_cropped(cropped, c)


def split_by_voice(voices: list[str]) -> dict[str, list[str]]:
    """train / validation / test voices, fixed by a hash of each voice's name (adding a voice moves no other)."""
    def point(voice: str) -> float:
        return int(hashlib.sha256(voice.encode()).hexdigest()[:8], 16) / 16**8

    bounds = {"validation": (0.0, SPLIT_VOICES["validation"]),
              "test": (SPLIT_VOICES["validation"], SPLIT_VOICES["validation"] + SPLIT_VOICES["test"])}
    chosen = {name: [v for v in voices if low <= point(v) < high] for name, (low, high) in bounds.items()}
    chosen["train"] = [v for v in voices if not any(v in held for held in chosen.values())]
    return chosen


def _speak(job, folder: str) -> bytes:
    voice, word, speed, pitch = job
    path = Path(folder) / f"{voice}-{word}-{speed}-{pitch}.wav"  # a file: on stdout the WAV header has no length
    subprocess.run(["espeak-ng", "-w", str(path), "-v", voice, "-s", str(speed), "-p", str(pitch), word],
                   check=True, capture_output=True)
    contents = path.read_bytes()
    path.unlink()
    return contents


def _placed(samples: np.ndarray, length: int, key: str) -> tuple[np.ndarray, bool]:
    """The word, its silence trimmed, at a random point of a ``length`` clip over noise 30-50 dB below it;
    and whether the word was longer than the clip (cropped)."""
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    voiced = np.flatnonzero(np.abs(samples) > 0.01)
    word = samples[voiced[0]:voiced[-1] + 1] if voiced.size else samples[:0]
    cropped, word = len(word) > length, word[:length]
    clip = np.zeros(length, np.float32)
    offset = rng.integers(0, length - len(word) + 1)
    clip[offset:offset + len(word)] = word
    power = float(np.mean(clip**2)) or 1e-6
    noise = rng.normal(0.0, math.sqrt(power / 10 ** (rng.uniform(30, 50) / 10)), length)
    return (clip + noise).astype(np.float32), cropped


AUDIO_SUFFIXES, AUDIO_FOLDER = {".wav", ".flac"}, "an audio folder"


class AudioFolder(Local, tfds.core.GeneratorBasedBuilder):
    """One subfolder per class of WAV or FLAC files (any rate, depth and channel count): resampled, mixed to mono."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "Clips stored as raw float32 bytes."}
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=f"WAV and FLAC files under {self.builder_config.path}",
            features=_features(self.builder_config, class_folders(self.builder_config.path, AUDIO_FOLDER),
                               file=tfds.features.Text()),
            supervised_keys=("audio", "label"), metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        c, root = self.builder_config, Path(self.builder_config.path)
        clips = Decoded(labelled_files(root, AUDIO_SUFFIXES, AUDIO_FOLDER), functools.partial(_read, c=c), "audio",
                        c.on_bad_input)
        cropped = 0
        for label, path, (samples, was_cropped) in clips:
            cropped += was_cropped
            name = str(path.relative_to(root))
            yield name, {"audio": samples, "label": label, "file": name}
        _warn_cropped(cropped, c)
        self.info.metadata["skipped"] = clips.skipped


def _read(path: Path, c: AudioConfig) -> tuple[np.ndarray, bool] | str:
    """The file's clip and whether it was cropped, or why it cannot be read."""
    try:
        return clip(path, c)
    except (ValueError, OSError) as exc:
        return str(exc)
