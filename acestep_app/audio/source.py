"""Source audio for the editing endpoints: an http(s) URL, a ``data:`` URI or a local file -> samples.

fal's file inputs take a URL or a base64 ``data:`` URI (fal-ace-step-family.md §4); so do ours.
URLs are downloaded through :mod:`acestep_app.audio.netguard` with the ``[audio_input]`` limits and the
``[security].allow_private_urls`` rule. Files are decoded by libsndfile (``soundfile``): WAV, FLAC,
Ogg Vorbis/Opus and MP3. Mono becomes stereo; other channel counts are refused.

Every refusal is an :class:`~acestep_app.errors.AudioInputError` carrying fal's error type
(§5): ``file_download_error``, ``file_too_large``, ``unsupported_audio_format``,
``audio_duration_too_long`` and ``audio_duration_too_short``, all 422.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from acestep_app.audio import netguard
from acestep_app.errors import AudioInputError

SUPPORTED_FORMATS = ("wav", "flac", "ogg", "mp3")
SNDFILE_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG", "MP3"})
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 192_000
DATA_URI = re.compile(r"^data:(?P<media_type>[^,]*?)(?P<base64>;base64)?,(?P<payload>.*)$", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class SourceAudio:
    """Decoded input audio at its own sample rate.

    Attributes:
        waveform: ``(2, N)`` float32 samples, nominally in [-1, 1] (float files are kept as stored).
        sample_rate: samples per second of ``waveform`` (the file's own rate; the encoder resamples).
    """

    waveform: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds (samples / rate)."""
        return self.waveform.shape[-1] / self.sample_rate


def download_error(field: str, reason: str) -> AudioInputError:
    return AudioInputError(field, f"Failed to download the file: {reason}", error_type="file_download_error")


def too_large(field: str, max_bytes: int) -> AudioInputError:
    return AudioInputError(field, f"The file is larger than the {max_bytes} bytes allowed.",
                           error_type="file_too_large", ctx={"max_size": max_bytes})


def unsupported(field: str, reason: str) -> AudioInputError:
    return AudioInputError(field, f"Unsupported audio file: {reason}", error_type="unsupported_audio_format",
                           ctx={"supported_formats": list(SUPPORTED_FORMATS)})


def load_audio_url(url: str, settings, *, field: str = "audio_url") -> SourceAudio:
    """Fetch and decode the audio at ``url`` (http, https or ``data:``), within ``settings.audio_input``."""
    limits = settings.audio_input
    if url[:5].lower() == "data:":
        data = decode_data_uri(url, limits.max_download_bytes, field)
    else:
        try:
            data = netguard.fetch(url, allow_private=settings.security.allow_private_urls,
                                  timeout=limits.download_timeout_seconds, max_bytes=limits.max_download_bytes,
                                  max_redirects=limits.max_redirects)
        except netguard.ResponseTooLarge as error:
            raise too_large(field, error.max_bytes) from None
        except (netguard.UnsafeURLError, netguard.FetchError) as error:
            raise download_error(field, str(error)) from None
    return decode_audio(data, settings, field=field)


def decode_data_uri(uri: str, max_bytes: int, field: str = "audio_url") -> bytes:
    """The bytes a ``data:[<type>][;base64],<data>`` URI carries, refusing more than ``max_bytes``."""
    match = DATA_URI.match(uri)
    if match is None:
        raise download_error(field, "malformed data: URI (expected data:<type>;base64,<data>)")
    payload = match["payload"]
    if not match["base64"]:
        data = urllib.parse.unquote_to_bytes(payload)
    else:
        if len(payload) // 4 * 3 > max_bytes + 3:
            raise too_large(field, max_bytes)
        compact = re.sub(r"\s+", "", payload).translate(str.maketrans("-_", "+/"))
        try:
            data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise download_error(field, "the data: URI is not valid base64") from None
    if len(data) > max_bytes:
        raise too_large(field, max_bytes)
    return data


def decode_audio(data: bytes, settings, *, field: str = "audio_url") -> SourceAudio:
    """Decode the bytes of an audio file (wav, flac, ogg, mp3) within ``settings.audio_input``."""
    if not data:
        raise unsupported(field, "the file is empty")
    return read_audio(io.BytesIO(data), settings, field)


def load_audio_file(path: str | Path, settings, *, field: str = "audio") -> SourceAudio:
    """Decode a local audio file within ``settings.audio_input`` (the CLI's input)."""
    path = Path(path)
    if not path.is_file():
        raise AudioInputError(field, f"{path}: no such file")
    if path.stat().st_size == 0:
        raise unsupported(field, f"{path} is empty")
    return read_audio(path, settings, field)


def read_audio(source, settings, field: str) -> SourceAudio:
    limits = settings.audio_input
    try:
        with soundfile.SoundFile(source) as sound:
            check_stream(sound, field)
            max_frames = int(limits.max_duration_seconds * sound.samplerate)
            if sound.frames > max_frames:
                raise duration_error(field, sound.frames / sound.samplerate, limits)
            # MP3 frame counts are estimates: read one frame past the cap rather than trust them.
            samples = sound.read(frames=max_frames + 1, dtype="float32", always_2d=True)
            sample_rate = sound.samplerate
    except AudioInputError:
        raise
    except (soundfile.SoundFileError, RuntimeError, ValueError, TypeError, EOFError) as error:
        reason = getattr(error, "error_string", None) or str(error)  # libsndfile's words, not the object's repr
        raise unsupported(field, f"cannot decode it as {', '.join(SUPPORTED_FORMATS)} ({reason})") from None
    duration = samples.shape[0] / sample_rate
    if not limits.min_duration_seconds <= duration <= limits.max_duration_seconds or samples.shape[0] == 0:
        raise duration_error(field, duration, limits)
    if not np.isfinite(samples).all():
        raise unsupported(field, "it holds NaN or infinite samples")
    waveform = samples.T
    if waveform.shape[0] == 1:
        waveform = np.repeat(waveform, 2, axis=0)
    return SourceAudio(np.ascontiguousarray(waveform, dtype=np.float32), int(sample_rate))


def check_stream(sound: soundfile.SoundFile, field: str) -> None:
    if sound.format not in SNDFILE_FORMATS:
        raise unsupported(field, f"{sound.format_info or sound.format} files are not accepted")
    if sound.channels not in (1, 2):
        raise unsupported(field, f"{sound.channels} channels; only mono and stereo audio is accepted")
    if not MIN_SAMPLE_RATE <= sound.samplerate <= MAX_SAMPLE_RATE:
        raise unsupported(field, f"sample rate {sound.samplerate} Hz is outside "
                                 f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")


def duration_error(field: str, duration: float, limits) -> AudioInputError:
    provided = round(duration, 3)
    if duration > limits.max_duration_seconds:
        return AudioInputError(field, f"The audio is {provided} s long; at most {limits.max_duration_seconds} s "
                                      "is accepted.", error_type="audio_duration_too_long",
                               ctx={"max_duration": limits.max_duration_seconds, "provided_duration": provided})
    return AudioInputError(field, f"The audio is {provided} s long; at least {limits.min_duration_seconds} s "
                                  "is needed.", error_type="audio_duration_too_short",
                           ctx={"min_duration": limits.min_duration_seconds, "provided_duration": provided})
