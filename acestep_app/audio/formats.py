"""Waveform -> audio file bytes, through libsndfile (``soundfile``): WAV, FLAC, MP3 and Ogg Vorbis.

The reference writes 48 kHz stereo float32 WAV, and so does fal; WAV stays the default everywhere.
FLAC is lossless (24-bit), MP3 and Ogg Vorbis are lossy and about a tenth of the WAV's size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

WAV_CONTENT_TYPE = "audio/wav"


@dataclass(frozen=True)
class AudioFormat:
    name: str  # also the file extension
    content_type: str
    sndfile_format: str
    subtype: str
    options: dict = field(default_factory=dict)  # extra soundfile.write arguments

    @property
    def extension(self) -> str:
        return f".{self.name}"


AUDIO_FORMATS = {
    "wav": AudioFormat("wav", WAV_CONTENT_TYPE, "WAV", "FLOAT"),
    "flac": AudioFormat("flac", "audio/flac", "FLAC", "PCM_24"),
    # libsndfile's MP3 level 0.3 is LAME VBR around 170-230 kbps for full-band stereo music.
    "mp3": AudioFormat("mp3", "audio/mpeg", "MP3", "MPEG_LAYER_III", {"compression_level": 0.3}),
    "ogg": AudioFormat("ogg", "audio/ogg", "OGG", "VORBIS"),
}
FORMAT_NAMES = tuple(AUDIO_FORMATS)


def audio_format(name: str) -> AudioFormat:
    """The format called ``name`` (``wav``, ``flac``, ``mp3`` or ``ogg``, any case, with or without a dot)."""
    key = name.lower().removeprefix(".")
    if key not in AUDIO_FORMATS:
        raise ValueError(f"unsupported audio format {name!r}: use one of {', '.join(FORMAT_NAMES)}")
    return AUDIO_FORMATS[key]


def format_for_path(path: str | Path) -> AudioFormat:
    """The format a file name's extension names; ``ValueError`` naming the choices for any other."""
    suffix = Path(path).suffix
    if not suffix:
        raise ValueError(f"{path}: no file extension; end the name with one of "
                         f"{', '.join(f'.{name}' for name in FORMAT_NAMES)}")
    try:
        return audio_format(suffix)
    except ValueError:
        raise ValueError(f"{path}: unsupported extension {suffix!r}; use one of "
                         f"{', '.join(f'.{name}' for name in FORMAT_NAMES)}") from None


def encode_audio(waveform: np.ndarray, sample_rate: int, fmt: str | AudioFormat = "wav") -> bytes:
    """``(channels, N)`` float32 samples -> the bytes of a file in ``fmt``.

    Lossy and integer formats clip samples to [-1, 1] as they encode; WAV keeps the float samples as is.
    """
    fmt = fmt if isinstance(fmt, AudioFormat) else audio_format(fmt)
    samples = np.ascontiguousarray(np.asarray(waveform, dtype=np.float32).T)
    if fmt.subtype != "FLOAT":
        samples = np.clip(samples, -1.0, 1.0)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sample_rate, format=fmt.sndfile_format, subtype=fmt.subtype, **fmt.options)
    return buffer.getvalue()


def wav_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    """``(channels, N)`` float32 samples -> a WAV file (IEEE float, as the reference saves it)."""
    return encode_audio(waveform, sample_rate, AUDIO_FORMATS["wav"])
