"""Source audio for the editing endpoints: data: URIs, downloads, decoding, and fal's file errors."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile

from acestep_app.audio.formats import encode_audio
from acestep_app.audio.source import SourceAudio, decode_audio, decode_data_uri, load_audio_file, load_audio_url
from acestep_app.errors import AudioInputError, InputError
from acestep_app.settings import Settings
from local_http import LocalServer, body_route, declared_huge_route, redirect_route

SETTINGS = Settings()
LOCAL = Settings.from_dict({"security": {"allow_private_urls": True}})


def sine(seconds: float = 2.0, rate: int = 44100, channels: int = 2) -> np.ndarray:
    """``(channels, N)`` float32 sines, one frequency per channel."""
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]).astype(np.float32)


def wav(seconds: float = 2.0, rate: int = 44100, channels: int = 2, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, sine(seconds, rate, channels).T, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def data_uri(data: bytes, media_type: str = "audio/wav") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def error_of(call, *args, **kwargs) -> AudioInputError:
    with pytest.raises(AudioInputError) as caught:
        call(*args, **kwargs)
    assert isinstance(caught.value, InputError) and caught.value.status_code == 422
    return caught.value


@pytest.mark.parametrize(("fmt", "tolerance"), [("wav", 0.0), ("flac", 1e-6), ("ogg", 0.2), ("mp3", 0.2)])
def test_round_trips_through_each_format(fmt, tolerance):
    original = sine(2.0, 48000)
    decoded = decode_audio(encode_audio(original, 48000, fmt), SETTINGS)
    assert isinstance(decoded, SourceAudio) and decoded.sample_rate == 48000
    assert decoded.waveform.dtype == np.float32 and decoded.waveform.shape[0] == 2
    # libsndfile trims mp3's encoder delay and frame padding (measured: exactly 2.0 s); a decoder that
    # does not would add at most the delay (~1,100 samples) plus one 1152-sample frame: under 0.06 s.
    assert decoded.duration == pytest.approx(2.0, abs=0.06)
    if tolerance == 0.0:
        np.testing.assert_array_equal(decoded.waveform, original)
    else:  # lossy: the same tone, not the same samples (codec delay shifts mp3 a little)
        assert abs(float(np.abs(decoded.waveform).max()) - 0.5) < tolerance


def test_pcm16_wav_reads_as_the_reference_does():
    decoded = decode_audio(wav(subtype="PCM_16"), SETTINGS)
    expected = np.round(sine() * 32767).astype(np.int16) / np.float32(32768)
    # One 16-bit step: libsndfile rounds float -> int16 in float32, np.round here in float64, so a sample
    # that falls on a half step may land one step away (measured: exactly one step, on a few samples).
    np.testing.assert_allclose(decoded.waveform, expected, atol=1 / 32768)


def test_mono_becomes_stereo():
    decoded = decode_audio(wav(channels=1), SETTINGS)
    assert decoded.waveform.shape == (2, 88200)
    np.testing.assert_array_equal(decoded.waveform[0], decoded.waveform[1])


def test_data_uris_are_decoded_without_a_request():
    clip = wav(1.5)  # durations below are samples / rate: exact up to float64 rounding (approx's 1e-6)
    assert load_audio_url(data_uri(clip), SETTINGS).duration == pytest.approx(1.5)
    unpadded = data_uri(clip).rstrip("=")
    assert load_audio_url(unpadded, SETTINGS).duration == pytest.approx(1.5)
    assert decode_data_uri("data:,hello%20there", 100) == b"hello there"
    assert decode_data_uri("DATA:application/octet-stream;BASE64,aGk=", 100) == b"hi"


@pytest.mark.parametrize("uri", ["data:audio/wav;base64,not*base64!", "data:audio/wav;base64,AAAAA",
                                 "data:audio/wav;base64", "data:"])
def test_invalid_data_uris_are_download_errors(uri):
    error = error_of(load_audio_url, uri, SETTINGS)
    assert error.error_type == "file_download_error" and error.field == "audio_url"
    assert error.detail()["url"] == "https://docs.fal.ai/errors#file_download_error"


def test_a_data_uri_over_the_cap_is_file_too_large():
    small = Settings.from_dict({"audio_input": {"max_download_bytes": 1000}})
    error = error_of(load_audio_url, data_uri(b"\0" * 5000), small)
    assert error.error_type == "file_too_large" and error.ctx == {"max_size": 1000}


@pytest.mark.parametrize("data", [b"", b"\0" * 1000, b"RIFF\x24\0\0\0WAVEfmt garbage", b"ID3" + bytes(range(256)) * 4,
                                  wav()[:60], b"OggS" + b"\x01" * 500, b"fLaC" + b"\xff" * 500])
def test_corrupt_or_empty_files_are_unsupported_formats(data):
    error = error_of(decode_audio, data, SETTINGS)
    assert error.error_type in ("unsupported_audio_format", "audio_duration_too_short")
    if error.error_type == "unsupported_audio_format":
        assert error.ctx == {"supported_formats": ["wav", "flac", "ogg", "mp3"]}


def test_six_channels_are_refused():
    error = error_of(decode_audio, wav(channels=6), SETTINGS)
    assert error.error_type == "unsupported_audio_format" and "6 channels" in error.message


def test_other_containers_and_odd_rates_are_refused():
    buffer = io.BytesIO()
    soundfile.write(buffer, sine().T, 44100, format="AIFF")
    assert error_of(decode_audio, buffer.getvalue(), SETTINGS).error_type == "unsupported_audio_format"
    assert "sample rate" in error_of(decode_audio, wav(2.0, rate=4000), SETTINGS).message


def test_non_finite_samples_are_refused():
    samples = sine()
    samples[0, 100] = np.nan
    error = error_of(decode_audio, encode_audio(samples, 44100, "wav"), SETTINGS)
    assert "NaN" in error.message


def test_duration_bounds_carry_fal_context():
    limits = Settings.from_dict({"audio_input": {"max_duration_seconds": 3.0, "min_duration_seconds": 1.0}})
    long = error_of(decode_audio, wav(4.0), limits)
    assert long.error_type == "audio_duration_too_long"
    assert long.ctx == {"max_duration": 3.0, "provided_duration": 4.0}
    short = error_of(decode_audio, wav(0.5), limits)
    assert short.error_type == "audio_duration_too_short"
    assert short.ctx == {"min_duration": 1.0, "provided_duration": 0.5}
    assert decode_audio(wav(3.0), limits).duration == 3.0  # the bounds are inclusive


def test_downloads_go_through_the_guard():
    clip = wav(1.2)  # durations below are samples / rate: exact up to float64 rounding (approx's 1e-6)
    with LocalServer({"/clip.wav": body_route(clip, "audio/wav"), "/huge.wav": declared_huge_route(),
                      "/hop": redirect_route("/clip.wav")}) as server:
        assert load_audio_url(server.url("/clip.wav"), LOCAL).duration == pytest.approx(1.2)
        assert load_audio_url(server.url("/hop"), LOCAL).duration == pytest.approx(1.2)
        refused = error_of(load_audio_url, server.url("/clip.wav"), SETTINGS)  # loopback, private URLs not allowed
        assert refused.error_type == "file_download_error" and "loopback" in refused.message
        huge = error_of(load_audio_url, server.url("/huge.wav"), LOCAL)
        assert huge.error_type == "file_too_large"
        assert huge.ctx == {"max_size": LOCAL.audio_input.max_download_bytes}
        missing = error_of(load_audio_url, server.url("/nothing.wav"), LOCAL)
        assert missing.error_type == "file_download_error" and "404" in missing.message
    assert len(server.requests) == 5  # the refused one never connected


def test_a_redirect_to_loopback_is_a_download_error():
    with LocalServer({"/clip.wav": body_route(wav())}) as server:
        with LocalServer({"/a.wav": redirect_route(server.url("/clip.wav"))}) as hop:
            error = error_of(load_audio_url, hop.url("/a.wav"), SETTINGS)
    assert error.error_type == "file_download_error"
    assert server.requests == []


def test_local_files(tmp_path):
    path = tmp_path / "song.flac"
    soundfile.write(path, sine(2.5, 32000).T, 32000)
    loaded = load_audio_file(path, SETTINGS)
    assert (loaded.sample_rate, loaded.waveform.shape) == (32000, (2, 80000))
    assert error_of(load_audio_file, tmp_path / "absent.wav", SETTINGS).field == "audio"
    (tmp_path / "empty.wav").write_bytes(b"")
    assert error_of(load_audio_file, tmp_path / "empty.wav", SETTINGS).error_type == "unsupported_audio_format"
