"""Compressed output: WAV/FLAC/MP3/Ogg through libsndfile, on the CLI and the local server."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from acestep_app.audio.formats import AUDIO_FORMATS, audio_format, encode_audio, format_for_path
from acestep_app.cli import main
from acestep_app.acestep_v1.pipeline import latent_frames
from acestep_app.acestep_v1.schema import PromptToAudioOutput
from acestep_app.hosts.local import create_app
from acestep_app.settings import Settings, SettingsError
from acestep_app.serving.storage import AudioStore
from engine_double import EngineDouble

RATE = 48000
MAGIC = {"wav": b"RIFF", "flac": b"fLaC", "ogg": b"OggS"}


def tone(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)
    return np.stack([left, right]).astype(np.float32)


@pytest.mark.parametrize("name", list(AUDIO_FORMATS))
def test_every_format_decodes_back_to_the_same_length_rate_and_channels(name):
    waveform = tone(2.5)
    data = encode_audio(waveform, RATE, name)
    decoded, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    assert rate == RATE and decoded.shape == waveform.T.shape
    if name in MAGIC:
        assert data[:4] == MAGIC[name]
    if name == "flac":
        # lossless at 24 bits: quantising moves a sample by at most half a step of 2**-23 (measured 6e-8)
        np.testing.assert_allclose(decoded, waveform.T, atol=2**-23, rtol=0)
    elif name != "wav":
        assert len(data) < len(encode_audio(waveform, RATE, "wav")) / 4  # lossy: far smaller
        assert np.corrcoef(decoded[:, 0], waveform[0])[0, 1] > 0.95  # and still the tone


def test_formats_are_named_by_extension_and_others_are_refused():
    assert format_for_path("out/song.MP3").content_type == "audio/mpeg"
    assert (audio_format(".flac").name, audio_format("ogg").content_type) == ("flac", "audio/ogg")
    for bad in ("song.aac", "song", "song.wav.partial"):
        with pytest.raises(ValueError, match=r"\.wav, \.flac, \.mp3, \.ogg"):
            format_for_path(bad)


def test_output_format_setting_is_checked():
    assert Settings().output.format == "wav"
    assert Settings.from_dict({"output": {"format": "flac"}}).output.format == "flac"
    with pytest.raises(SettingsError, match=r"\[output\] format"):
        Settings.from_dict({"output": {"format": "aac"}})


def test_store_names_files_by_format_and_resolves_only_its_own_names(tmp_path):
    store = AudioStore(tmp_path)
    request_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    stored = store.save(request_id, b"OggS....", "ogg")
    assert (stored.file_name, stored.content_type, stored.size) == (f"{request_id}.ogg", "audio/ogg", 8)
    assert store.open(f"{request_id}.ogg") == stored
    assert AudioStore.request_id_of(f"{request_id}.ogg") == request_id
    for name in (f"{request_id}.ogg.partial", f"{request_id}.aac", f"{request_id}.ogg\n", f"{request_id}.wav"):
        assert store.open(name) is None


@pytest.fixture(scope="module")
def checkpoint(tiny_weights):
    return tiny_weights


@pytest.mark.parametrize("name", ["flac", "mp3", "ogg"])
def test_cli_writes_the_format_the_extension_names(checkpoint, tmp_path, capsys, name):
    out = tmp_path / f"song.{name}"
    assert main(["generate", "--tags", "lofi", "--lyrics", "[inst]", "--weights", str(checkpoint), "--duration", "5",
                 "--steps", "3", "--seed", "3", "-o", str(out), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["audio"]["content_type"] == AUDIO_FORMATS[name].content_type
    info = soundfile.info(str(out))
    assert info.format == AUDIO_FORMATS[name].sndfile_format
    assert (info.samplerate, info.channels) == (RATE, 2)
    assert info.frames == -(-latent_frames(5) * 4096 * RATE // 44100)


def test_cli_refuses_a_bad_extension_before_loading_anything(tmp_path, capsys, monkeypatch):
    from acestep_app.acestep_v1.engine import Engine

    def no_load(*args, **kwargs):
        raise AssertionError("the engine must not load for a bad output name")

    monkeypatch.setattr(Engine, "load", no_load)
    assert main(["generate", "lofi", "-o", str(tmp_path / "song.aac")]) == 2
    error = capsys.readouterr().err
    assert "'.aac'" in error and ".mp3" in error
    assert not (tmp_path / "song.aac").exists()


@pytest.mark.parametrize("name", ["mp3", "flac"])
def test_server_content_type_and_file_name_match_the_bytes(tmp_path, name):
    settings = Settings.from_dict({"output": {"format": name}})
    with TestClient(create_app(EngineDouble(), settings, tmp_path / "data")) as client:
        response = client.post("/prompt-to-audio", json={"prompt": "lofi", "duration": 5, "seed": 1})
        assert response.status_code == 200, response.text
        audio = PromptToAudioOutput.model_validate(response.json()).audio
        assert audio.content_type == AUDIO_FORMATS[name].content_type
        assert audio.file_name.endswith(f".{name}") and audio.url.endswith(audio.file_name)
        file = client.get(audio.url)
        assert file.status_code == 200 and file.headers["content-type"] == audio.content_type
        assert len(file.content) == audio.file_size
        info = soundfile.info(io.BytesIO(file.content))
        assert info.format == AUDIO_FORMATS[name].sndfile_format and info.frames == 5 * 8000


def test_server_default_stays_wav(tmp_path):
    with TestClient(create_app(EngineDouble(), Settings(), tmp_path / "data")) as client:
        audio = client.post("/prompt-to-audio", json={"prompt": "lofi", "duration": 5}).json()["audio"]
        assert audio["content_type"] == "audio/wav" and audio["file_name"].endswith(".wav")
