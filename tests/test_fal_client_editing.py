"""The official ``fal_client`` runs each editing endpoint end to end against ``acestep-app serve`` (tiny checkpoint,
TLS on 127.0.0.1), with the song as a ``data:`` URI; bad files come back as fal's 422s.
"""

from __future__ import annotations

import io
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import soundfile

from server_process import free_port, running, serve_command, write_self_signed_cert

DRIVER = Path(__file__).resolve().parent / "fal_client_edit_driver.py"
KEY = "edit-key-id:edit-secret"
CLIP_SECONDS = 2.0


def write_clip(path: Path, channels: int = 2) -> Path:
    t = np.arange(int(CLIP_SECONDS * 44100)) / 44100
    samples = np.stack([0.3 * np.sin(2 * np.pi * (220 + 20 * c) * t) for c in range(channels)], axis=1)
    soundfile.write(path, samples.astype(np.float32), 44100, subtype="PCM_16")
    return path


def drive(port: int, cert: Path, clip: Path, six_channels: Path) -> dict:
    env = {**os.environ, "FAL_RUN_HOST": f"127.0.0.1:{port}/run", "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{port}",
           "FAL_KEY": KEY, "SSL_CERT_FILE": str(cert), "NO_PROXY": "127.0.0.1"}
    done = subprocess.run([sys.executable, str(DRIVER), str(clip), str(six_channels)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def test_fal_client_edits_a_data_uri_song_on_every_endpoint(tiny_weights, tmp_path):
    cert, key = write_self_signed_cert(tmp_path)
    verify = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    command = serve_command(tmp_path / "data", port, "--weights", str(tiny_weights), "--device", "cpu",
                            "--api-key", KEY, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    clip, six = write_clip(tmp_path / "clip.wav"), write_clip(tmp_path / "six.wav", channels=6)
    with running(command, f"https://127.0.0.1:{port}", tmp_path / "server.log", verify=verify, timeout=180):
        report = drive(port, cert, clip, six)
        for endpoint, seed, extension in (("audio-to-audio", 5, 0.0), ("audio-inpaint", 6, 0.0),
                                          ("audio-outpaint", 7, 1.0)):
            output = report[endpoint]
            assert set(output) == {"audio", "seed", "tags", "lyrics"} and output["seed"] == seed, endpoint
            audio = httpx.get(output["audio"]["url"], verify=verify)
            assert audio.status_code == 200 and len(audio.content) == output["audio"]["file_size"], endpoint
            info = soundfile.info(io.BytesIO(audio.content))
            assert (info.samplerate, info.channels) == (48000, 2), endpoint
            assert abs(info.duration - (CLIP_SECONDS + extension)) < 0.2, (endpoint, info.duration)
        assert report["audio-to-audio-updates"][-1] == "Completed"
    file_error = {"status": 422, "loc": ["body", "audio_url"]}
    assert report["six_channels_sync"] == {**file_error, "type": "unsupported_audio_format"}
    assert report["six_channels_queue"] == {**file_error, "type": "unsupported_audio_format"}
    assert report["invalid_base64"] == {**file_error, "type": "file_download_error"}
