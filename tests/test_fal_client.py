"""The official ``fal_client`` (unmodified) against the local server over TLS on 127.0.0.1.

fal_client always speaks https to FAL_RUN_HOST / FAL_QUEUE_RUN_HOST, read at import; the driver runs
in a subprocess with those set (FAL_RUN_HOST carries the ``/run`` prefix of the synchronous routes).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server_process import double_command, free_port, running, serve_command, write_self_signed_cert

DRIVER = Path(__file__).resolve().parent / "fal_client_driver.py"
KEY = "local-key-id:local-secret"


def ssl_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def drive(port: int, cert: Path, duration: float) -> dict:
    env = {
        **os.environ,
        "FAL_RUN_HOST": f"127.0.0.1:{port}/run",
        "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{port}",
        "FAL_KEY": KEY,
        "SSL_CERT_FILE": str(cert),
        "NO_PROXY": "127.0.0.1",
    }
    done = subprocess.run([sys.executable, str(DRIVER), str(duration)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def check_report(report: dict, cert: Path, duration: float) -> None:
    subscribed = report["subscribe"]
    assert set(subscribed) == {"audio", "seed", "tags", "lyrics"} and subscribed["seed"] == 11
    assert report["subscribe_enqueued"] and report["subscribe_updates"][-1] == "Completed"
    audio = httpx.get(subscribed["audio"]["url"], verify=ssl_context(cert))  # signed URL: no header needed
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert len(audio.content) == subscribed["audio"]["file_size"]
    assert report["run"]["seed"] == 12 and report["run_text_to_audio"]["tags"] == "jazz"
    assert report["queued_status"] == {"type": "Queued", "position": 0}
    assert report["cancelled_result"] == {"status": 400, "error_type": "request_cancelled"}
    assert report["second_status"] == "Completed"
    assert report["third_result"]["tags"] == "rock"
    assert report["completed_logs"][0] == "Request queued." and report["completed_logs"][-1] == "Request completed."
    assert report["invalid"] == {"status": 422, "loc": ["body", "duration"]}


def test_fal_client_against_served_engine_double(tmp_path):
    cert, key = write_self_signed_cert(tmp_path)
    port = free_port()
    command = double_command(tmp_path / "data", port, "--steps", "5", "--step-delay", "0.1", "--api-key", KEY,
                             "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    with running(command, f"https://127.0.0.1:{port}", tmp_path / "server.log", verify=ssl_context(cert)):
        report = drive(port, cert, duration=5)
        unauthenticated = httpx.post(f"https://127.0.0.1:{port}/fal-ai/ace-step/prompt-to-audio",
                                     json={"prompt": "x"}, verify=ssl_context(cert))
        assert unauthenticated.status_code == 401
        check_report(report, cert, 5)
