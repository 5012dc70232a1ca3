"""Webhooks end to end: the unmodified ``fal_client`` submits with ``webhook_url`` to a served process over
TLS; a receiver on 127.0.0.1 gets fal's signed POSTs (so the server runs with ``--allow-private-urls``).

* ``acestep-app serve`` on the tiny checkpoint: one signed POST per request, verified against ``/.well-known/jwks.json``,
  its payload equal to the queue result; a receiver answering 500 twice gets retries, then one success.
* the engine double's server (same app code, an engine that starts in a second): killed with SIGKILL
  after a request finished but before its webhook got through; after a restart it is delivered.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

from acestep_app.settings import INFRA_ENV
from acestep_app.serving.webhooks.verify import verify
from conftest import wait_until, write_infra
from server_process import ServerProcess, double_command, free_port, running, serve_command, write_self_signed_cert
from test_fal_client import KEY, ssl_context
from webhook_receiver import Receiver

DRIVER = Path(__file__).resolve().parent / "fal_webhook_driver.py"


def fast_retry_infra(tmp_path: Path, monkeypatch, max_attempts: int, retry_window_seconds: float, **sections) -> None:
    """An infra.toml for the served process whose [webhooks] retries within seconds."""
    webhooks = {"max_attempts": max_attempts, "retry_window_seconds": retry_window_seconds, "timeout_seconds": 5.0}
    monkeypatch.setenv(INFRA_ENV, str(write_infra(tmp_path / "infra.toml", webhooks=webhooks, **sections)))


def submit_with_webhook(port: int, cert: Path, webhook_url: str, prompts: list[str]) -> list[dict]:
    env = {**os.environ, "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{port}", "FAL_KEY": KEY, "SSL_CERT_FILE": str(cert),
           "NO_PROXY": "127.0.0.1"}
    done = subprocess.run([sys.executable, str(DRIVER), webhook_url, *prompts], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def deliveries(data_dir: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(data_dir / "webhooks.sqlite3") as db:
        return {request_id: (state, attempts) for request_id, state, attempts in
                db.execute("SELECT request_id, state, attempts FROM deliveries")}


def test_fal_client_webhooks_are_signed_once_and_retried(tmp_path, monkeypatch, tiny_weights):
    engine = {"weights_dir": str(tiny_weights), "device": "cpu", "prompt_backend": "fallback"}
    fast_retry_infra(tmp_path, monkeypatch, max_attempts=5, retry_window_seconds=1.5, engine=engine)
    cert, key = write_self_signed_cert(tmp_path)
    port = free_port()
    command = serve_command(tmp_path / "data", port, "--api-key", KEY, "--allow-private-urls",
                            "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    base_url = f"https://127.0.0.1:{port}"
    with running(command, base_url, tmp_path / "server.log", verify=ssl_context(cert), timeout=120), \
            Receiver() as steady, Receiver(fail_first=2) as flaky:
        jwks = httpx.get(f"{base_url}/.well-known/jwks.json", verify=ssl_context(cert)).json()  # no key needed
        submitted = submit_with_webhook(port, cert, steady.url, ["first song", "second song"])
        retried = submit_with_webhook(port, cert, flaky.url, ["third song"])
        steady.wait_for(2)
        flaky.wait_for(3)
        wait_until(lambda: all(state == "DELIVERED" for state, _ in deliveries(tmp_path / "data").values()))

        results = {item["request_id"]: item["result"] for item in submitted + retried}
        for item in steady.received + flaky.received:
            assert verify(item.headers, item.body, jwks)
            body = json.loads(item.body)
            assert item.headers["x-fal-webhook-request-id"] == body["request_id"] == body["gateway_request_id"]
            assert body["status"] == "OK" and body["payload"] == results[body["request_id"]]
        assert sorted(json.loads(item.body)["request_id"] for item in steady.received) == sorted(
            item["request_id"] for item in submitted)
        assert [item.answered for item in flaky.received] == [500, 500, 200]
        assert len({item.body for item in flaky.received}) == 1
        audio = httpx.get(json.loads(flaky.received[-1].body)["payload"]["audio"]["url"], verify=ssl_context(cert))
        assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert deliveries(tmp_path / "data") == {
        **{item["request_id"]: ("DELIVERED", 1) for item in submitted}, retried[0]["request_id"]: ("DELIVERED", 3)}


def test_kill_9_between_completion_and_delivery_still_delivers(tmp_path, monkeypatch):
    fast_retry_infra(tmp_path, monkeypatch, max_attempts=10, retry_window_seconds=60)
    cert, key = write_self_signed_cert(tmp_path)
    port, receiver_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    command = double_command(data_dir, port, "--api-key", KEY, "--allow-private-urls",
                             "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    base_url = f"https://127.0.0.1:{port}"
    receiver_url = f"http://127.0.0.1:{receiver_port}/hook"  # nobody listens yet: the first attempt fails
    server = ServerProcess(command, base_url, tmp_path / "server.log", verify=ssl_context(cert))
    server.start()
    try:
        [submitted] = submit_with_webhook(port, cert, receiver_url, ["finished while the receiver was down"])
        request_id = submitted["request_id"]
        wait_until(lambda: deliveries(data_dir).get(request_id, ("", 0))[1] >= 1)  # a failed first attempt
    finally:
        server.kill()
    assert deliveries(data_dir)[request_id][0] == "PENDING"

    with Receiver(port=receiver_port) as receiver, \
            running(command, base_url, tmp_path / "server2.log", verify=ssl_context(cert)):
        [item] = receiver.wait_for(1)
        jwks = httpx.get(f"{base_url}/.well-known/jwks.json", verify=ssl_context(cert)).json()
        assert verify(item.headers, item.body, jwks)
        assert json.loads(item.body)["payload"] == submitted["result"]
        wait_until(lambda: deliveries(data_dir)[request_id][0] == "DELIVERED")
    assert len(receiver.received) == 1
