"""The real fal clients against ``acestep-app serve --model acestep-1.5`` on the tiny 1.5 checkpoint:
the Python ``fal_client`` and the JavaScript ``@fal-ai/client`` (npm), unmodified, run text to music,
repaint and cover end to end over TLS on 127.0.0.1.

fal_client reads FAL_RUN_HOST / FAL_QUEUE_RUN_HOST at import (tests/fal_client15_driver.py runs in a
subprocess with them set). ``@fal-ai/client`` always targets ``https://queue.fal.run``; its documented
``requestMiddleware`` hook points each request at the local server (tests/fal_js15_driver.mjs). The npm
package is installed once into a cache folder (``$ACESTEP_NPM_CACHE``, default ~/.cache/acestep-app/npm).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from server_process import free_port, running, serve_command, write_self_signed_cert
from test_fal_client import ssl_context

TESTS = Path(__file__).resolve().parent
KEY = "local-key-id:local-secret"
FAL_JS_CLIENT = "@fal-ai/client@1.10.1"  # the version the spec's fal-js reading (S3/J1) is of


@pytest.fixture(scope="module")
def server(tiny15_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("clients15")
    cert, key = write_self_signed_cert(root)
    port = free_port()
    command = serve_command(root / "data", port, "--model", "acestep-1.5", "--weights", str(tiny15_checkpoint),
                            "--api-key", KEY, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    env = {"ACESTEP_WEIGHTS_DIR": str(root / "weights")}  # nothing pulled: the song writer falls back
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with running(command, f"https://127.0.0.1:{port}", root / "server.log", verify=ssl_context(cert), timeout=120):
            yield port, cert, root


@pytest.fixture(scope="module")
def song(server) -> Path:
    path = server[2] / "song.wav"
    time = np.arange(24000) / 24000
    tone = (0.3 * np.sin(2 * np.pi * 220 * time)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([tone, tone], axis=1), 24000, format="WAV")
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def fal_js_client() -> Path:
    """A folder holding ``node_modules/@fal-ai/client`` (npm-installed once, then reused)."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node and npm are needed (.ci/run installs them)"
    folder = Path(os.environ.get("ACESTEP_NPM_CACHE", Path.home() / ".cache" / "acestep-app" / "npm"))
    folder = folder / FAL_JS_CLIENT.replace("/", "+")
    if not (folder / "node_modules" / "@fal-ai" / "client" / "package.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "package.json").write_text('{"private": true}\n')
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(folder), FAL_JS_CLIENT],
                       check=True, capture_output=True, timeout=300)
    return folder


def report_of(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def check(report: dict, cert: Path) -> None:
    music = report["text_to_music"]
    assert {"audio", "seed", "prompt", "lyrics", "vocal_language"} <= set(music) and music["seed"] == 7
    assert music["lyrics"] == "[verse]\nneon nights"
    audio = httpx.get(music["audio"]["url"], verify=ssl_context(cert))  # a signed URL: no key needed
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert soundfile.info(io.BytesIO(audio.content)).duration == pytest.approx(1.0)
    assert report["repaint"]["seed"] == 8 and report["repaint"]["prompt"] == "brass section"
    assert report["cover"]["seed"] == 9 and report["cover"]["audio"]["file_size"] > 0
    assert report["invalid"] == {"status": 422, "loc": ["body", "start_time"]}


def test_python_fal_client_runs_the_three_endpoints(server, song):
    port, cert, _ = server
    env = {**os.environ, "FAL_RUN_HOST": f"127.0.0.1:{port}/run", "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{port}",
           "FAL_KEY": KEY, "SSL_CERT_FILE": str(cert), "NO_PROXY": "127.0.0.1"}
    report = report_of(subprocess.run([sys.executable, str(TESTS / "fal_client15_driver.py"), str(song)], env=env,
                                      capture_output=True, text=True, timeout=300))
    check(report, cert)
    assert report["text_to_music_updates"][-1] == "Completed"


def test_javascript_fal_client_runs_the_three_endpoints(server, song, fal_js_client):
    port, cert, _ = server
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(cert), "NO_PROXY": "127.0.0.1"}
    command = [shutil.which("node"), str(TESTS / "fal_js15_driver.mjs"), str(fal_js_client),
               f"https://127.0.0.1:{port}", KEY, str(song)]
    report = report_of(subprocess.run(command, env=env, capture_output=True, text=True, timeout=300))
    check(report, cert)
    assert report["statuses"][-1] == "COMPLETED" and report["request_id"]
