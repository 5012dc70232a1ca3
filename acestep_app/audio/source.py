"""Source audio for the editing endpoints: an http(s) URL, a ``data:`` URI or a local file -> samples.

fal's file inputs take a URL or a base64 ``data:`` URI (fal-ace-step-family.md §4); so do ours.
URLs are downloaded through :mod:`acestep_app.audio.netguard` with the ``[audio_input]`` limits and the
``[security].allow_private_urls`` rule. Files are decoded by libsndfile (``soundfile``): WAV, FLAC,
Ogg Vorbis/Opus and MP3. Mono becomes stereo; other channel counts are refused.

Every refusal is an :class:`~acestep_app.errors.AudioInputError` carrying fal's error type
(§5): ``file_download_error``, ``file_too_large``, ``unsupported_audio_format``,
``audio_duration_too_long`` and ``audio_duration_too_short``, all 422, with fal's ``input`` (the URL;
a ``data:`` URI only by its header).

Decoding is bounded by what it produces, not by the file's size: a file may decode to at most
``[audio_input].max_decoded_samples`` samples (rate x seconds x channels), checked from its header
before anything is decoded, and it is read in blocks straight into the ``(2, N)`` result.
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
BLOCK_FRAMES = 65_536  # frames decoded at a time
MAX_ECHOED_INPUT = 2048  # characters of a refused URL echoed in fal's ``input``
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


def echoed(url: str) -> str:
    """How a refused URL is echoed in fal's ``input``: a ``data:`` URI by its header, a URL cut to 2048 characters."""
    if url[:5].lower() == "data:":
        return url.split(",", 1)[0][:200] + ",..."
    return url if len(url) <= MAX_ECHOED_INPUT else url[:MAX_ECHOED_INPUT] + "..."


def load_audio_url(url: str, settings, *, field: str = "audio_url") -> SourceAudio:
    """Fetch and decode the audio at ``url`` (http, https or ``data:``), within ``settings.audio_input``."""
    try:
        return _load_audio_url(url, settings, field)
    except AudioInputError as error:
        error.input = echoed(url)
        raise


def _load_audio_url(url: str, settings, field: str) -> SourceAudio:
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
            max_frames = min(int(limits.max_duration_seconds * sound.samplerate),
                             limits.max_decoded_samples // sound.channels)
            if sound.frames > max_frames:
                raise duration_error(field, sound.frames / sound.samplerate, limits, sound)
            waveform = read_blocks(sound, max_frames, field)
            if waveform.shape[1] > max_frames:  # an MP3 longer than its header said
                raise duration_error(field, waveform.shape[1] / sound.samplerate, limits, sound)
            sample_rate = sound.samplerate
    except AudioInputError:
        raise
    except (soundfile.SoundFileError, RuntimeError, ValueError, TypeError, EOFError) as error:
        reason = getattr(error, "error_string", None) or str(error)  # libsndfile's words, not the object's repr
        raise unsupported(field, f"cannot decode it as {', '.join(SUPPORTED_FORMATS)} ({reason})") from None
    duration = waveform.shape[1] / sample_rate
    if not limits.min_duration_seconds <= duration <= limits.max_duration_seconds or waveform.shape[1] == 0:
        raise duration_error(field, duration, limits)
    return SourceAudio(waveform, int(sample_rate))


def read_blocks(sound: soundfile.SoundFile, max_frames: int, field: str) -> np.ndarray:
    """The stream as ``(2, N)`` float32, decoded ``BLOCK_FRAMES`` at a time into the result (mono on both rows).

    At most ``max_frames + 1`` frames are read (MP3 frame counts are estimates: one past the cap shows
    it was exceeded). Peak memory is the result plus one block. NaN or infinite samples are refused.
    """
    capacity = min(max(sound.frames, 0), max_frames) + 1
    waveform = np.empty((2, capacity), dtype=np.float32)
    filled = 0
    while filled <= max_frames:
        block = sound.read(frames=min(BLOCK_FRAMES, max_frames + 1 - filled), dtype="float32", always_2d=True)
        if len(block) == 0:
            break
        if not np.isfinite(block).all():
            raise unsupported(field, "it holds NaN or infinite samples")
        if filled + len(block) > waveform.shape[1]:
            grown = np.empty((2, min(max_frames + 1, 2 * (filled + len(block)))), dtype=np.float32)
            grown[:, :filled] = waveform[:, :filled]
            waveform = grown
        waveform[:, filled:filled + len(block)] = block.T  # mono broadcasts onto both rows
        filled += len(block)
    return waveform[:, :filled]


def check_stream(sound: soundfile.SoundFile, field: str) -> None:
    if sound.format not in SNDFILE_FORMATS:
        raise unsupported(field, f"{sound.format_info or sound.format} files are not accepted")
    if sound.channels not in (1, 2):
        raise unsupported(field, f"{sound.channels} channels; only mono and stereo audio is accepted")
    if not MIN_SAMPLE_RATE <= sound.samplerate <= MAX_SAMPLE_RATE:
        raise unsupported(field, f"sample rate {sound.samplerate} Hz is outside "
                                 f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")


def duration_error(field: str, duration: float, limits, sound: soundfile.SoundFile | None = None) -> AudioInputError:
    provided = round(duration, 3)
    if sound is not None and duration <= limits.max_duration_seconds:  # within the duration, over the samples
        longest = round(limits.max_decoded_samples / (sound.channels * sound.samplerate), 3)
        return AudioInputError(
            field, f"The audio decodes to {sound.frames * sound.channels} samples ({sound.samplerate} Hz x "
                   f"{provided} s x {sound.channels} channels); at most {limits.max_decoded_samples} are accepted, "
                   f"{longest} s at this rate.", error_type="audio_duration_too_long",
            ctx={"max_duration": longest, "provided_duration": provided})
    if duration > limits.max_duration_seconds:
        return AudioInputError(field, f"The audio is {provided} s long; at most {limits.max_duration_seconds} s "
                                      "is accepted.", error_type="audio_duration_too_long",
                               ctx={"max_duration": limits.max_duration_seconds, "provided_duration": provided})
    return AudioInputError(field, f"The audio is {provided} s long; at least {limits.min_duration_seconds} s "
                                  "is needed.", error_type="audio_duration_too_short",
                           ctx={"min_duration": limits.min_duration_seconds, "provided_duration": provided})
