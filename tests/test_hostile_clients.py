"""Hostile and careless clients (issue 20): items 1-15, each reproduced against the server, its stores
and its outbound guard. Every test here failed on the code before the fix (the issue's closing note
lists how); none measures time: a server that "hangs" is one that gives no answer within a generous
timeout while the thing that used to block it is still blocked.

The servers are the local server's app (``acestep_app.hosts.local.create_app``) over the engine
double, served by uvicorn in a thread (a real socket, a real event loop and thread pool) or by
FastAPI's TestClient; outbound targets are tests/local_http.py servers on loopback addresses.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from acestep_app.audio import netguard
from acestep_app.audio.netguard import FetchError, fetch, post
from acestep_app.audio.source import decode_audio, load_audio_url
from acestep_app.errors import AudioInputError
from acestep_app.hosts.local import create_app
from acestep_app.serving.jobs import CancelResult, JobStatus, Outcome
from acestep_app.serving.stores.sqlite import SqliteJobStore
from acestep_app.serving.webhooks.verify import verify
from acestep_app.settings import Settings
from conftest import PLAYS_PUBLIC, public_loopback, wait_until  # noqa: F401  (fixture)
from engine_double import EngineDouble
from local_http import LocalServer, send
from server_process import free_port
from webhook_receiver import Receiver

APP = "fal-ai/ace-step"
KEY = "hostile-test-key"
AUTH = {"Authorization": f"Key {KEY}"}
SONG = {"prompt": "x", "duration": 5}
NO_ANSWER = 20.0  # seconds: a server that does not answer /health in this long is frozen, not slow
# infra.toml's defaults, spelled out so the tests read the same against code that predates the keys
DEFAULT_SYNC_WAITERS, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_KEY = 32, 256, 64


def settings(**sections) -> Settings:
    return Settings.model_validate({"security": {"allow_private_urls": True}, **sections})


@contextmanager
def served(app):
    """``app`` on 127.0.0.1 with uvicorn in a thread: (base URL, app). Real sockets, loop and thread pool."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def jobs_rows(data_dir: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(data_dir / "jobs.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
    finally:
        db.close()


def wav_data_uri(seconds: float, sample_rate: int = 8000, channels: int = 2, fmt: str = "WAV") -> str:
    buffer = io.BytesIO()
    samples = np.zeros((int(seconds * sample_rate), channels), dtype=np.float32)
    soundfile.write(buffer, samples, sample_rate, format=fmt, subtype="PCM_16")
    return f"data:audio/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


# -- 1. a few synchronous calls froze the whole API --------------------------------------------------


def test_defaults_spelled_out_here_are_infra_tomls():
    loaded = Settings.load()
    assert (loaded.server.max_sync_waiters, loaded.queue.max_pending, loaded.queue.max_pending_per_key) == (
        DEFAULT_SYNC_WAITERS, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_KEY)


def test_1_synchronous_calls_wait_on_the_event_loop_so_health_answers(tmp_path):
    """More waiting synchronous calls than asyncio's default pool has threads (cpu + 4) freeze nothing."""
    engine = EngineDouble(steps=1)
    engine.hold = threading.Event()
    callers = min(32, (os.cpu_count() or 1) + 4) + 2  # 8 on CI's 2 cores, within the default cap
    roomy = Settings() if callers <= DEFAULT_SYNC_WAITERS else settings(server={"max_sync_waiters": 64})
    app = create_app(engine, roomy, tmp_path)
    with served(app) as base, ThreadPoolExecutor(callers) as pool:
        try:
            calls = [pool.submit(httpx.post, f"{base}/prompt-to-audio", json=SONG, timeout=60) for _ in range(callers)]
            wait_until(lambda: app.state.store.count(JobStatus.IN_QUEUE) == callers - 1)  # every call is waiting
            health = httpx.get(f"{base}/health", timeout=NO_ANSWER)
            status = httpx.get(f"{base}/{APP}/requests/{jobs_rows(tmp_path)[-1]['request_id']}/status", timeout=NO_ANSWER)
            assert health.status_code == 200 and status.status_code == 202
        finally:
            engine.hold.set()
        assert [call.result().status_code for call in calls] == [200] * callers


def test_1_synchronous_waiters_are_capped_with_a_429_and_retry_after(tmp_path):
    engine = EngineDouble(steps=1)
    engine.hold = threading.Event()
    app = create_app(engine, settings(server={"max_sync_waiters": 2}), tmp_path)
    with served(app) as base, ThreadPoolExecutor(2) as pool:
        try:
            calls = [pool.submit(httpx.post, f"{base}/prompt-to-audio", json=SONG, timeout=60) for _ in range(2)]
            wait_until(lambda: len(jobs_rows(tmp_path)) == 2)
            refused = httpx.post(f"{base}/prompt-to-audio", json=SONG, timeout=NO_ANSWER)
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
            assert refused.headers["x-fal-billable-units"] == "0" and len(jobs_rows(tmp_path)) == 2  # nothing made
        finally:
            engine.hold.set()
        assert [call.result().status_code for call in calls] == [200, 200]


# -- 2. cross-site submits and exposed binds -----------------------------------------------------------


def test_2_a_cross_site_form_post_is_refused_before_anything_is_queued(tmp_path):
    with TestClient(create_app(EngineDouble(steps=1), Settings(), tmp_path)) as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            answer = client.post(f"/{APP}/prompt-to-audio", content=json.dumps(SONG),
                                 headers={"content-type": content_type, "origin": "http://attacker.example"})
            assert answer.status_code == 415 and answer.json()["error_type"] == "unsupported_media_type"
            assert "access-control-allow-origin" not in answer.headers  # no CORS unless configured
        assert jobs_rows(tmp_path) == []


def test_2_the_host_header_must_be_one_the_server_answers_to(tmp_path):
    """A page on attacker.example whose name was rebound to 127.0.0.1 (DNS rebinding) reaches nothing.

    ``serve``'s default names; the soak (tests/test_soak.py) sends such requests to ``acestep-app serve`` itself.
    """
    from acestep_app.cli.serve import allowed_hosts

    hosts = allowed_hosts(Settings(), "127.0.0.1")
    assert {"127.0.0.1", "localhost"} <= set(hosts) and "attacker.example" not in hosts
    with served(create_app(EngineDouble(steps=1), Settings(), tmp_path, allowed_hosts=hosts)) as base:
        rebound = httpx.post(f"{base}/{APP}/prompt-to-audio", json=SONG,
                             headers={"host": "attacker.example", "origin": "http://attacker.example"})
        assert rebound.status_code == 400 and rebound.json()["error_type"] == "invalid_host"
        assert "access-control-allow-origin" not in rebound.headers
        assert jobs_rows(tmp_path) == []
        assert httpx.post(f"{base}/{APP}/prompt-to-audio", json=SONG).status_code == 200
        local = httpx.get(f"{base}/health", headers={"host": f"localhost:{base.rsplit(':', 1)[1]}"})
        assert local.status_code == 200


def test_2_cors_is_off_by_default_and_on_for_configured_origins(tmp_path):
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"}
    with TestClient(create_app(EngineDouble(steps=1), Settings(), tmp_path / "off")) as client:
        assert "access-control-allow-origin" not in client.options(f"/{APP}/prompt-to-audio", headers=preflight).headers
    configured = Settings.model_validate({"server": {"cors_origins": ["https://app.example"]}})
    with TestClient(create_app(EngineDouble(steps=1), configured, tmp_path / "on", api_key=KEY)) as client:
        answer = client.options(f"/{APP}/prompt-to-audio", headers=preflight)
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://app.example"
        refused = client.post(f"/{APP}/prompt-to-audio", json=SONG, headers={"origin": "https://app.example"})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://app.example"


def test_2_serve_refuses_a_public_bind_without_keys_and_says_why(tmp_path):
    command = [sys.executable, "-m", "acestep_app.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port()),
               "--data-dir", str(tmp_path / "data"), "--weights", str(tmp_path / "no-weights")]
    env = {k: v for k, v in os.environ.items() if k != "ACESTEP_API_KEY"}
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "without an API key" in refused.stderr and "--insecure-no-auth" in refused.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was opened or loaded


# -- 3. the webhook URL check blocked the event loop -------------------------------------------------


@pytest.fixture
def stuck_resolver(monkeypatch):
    """Names resolve only once ``release`` is set; ``entered`` is set when a lookup is waiting."""
    entered, release = threading.Event(), threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "slow-dns.example":
            entered.set()
            release.wait(60)
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(netguard.socket, "getaddrinfo", getaddrinfo)
    yield entered, release
    release.set()


def test_3_a_slow_resolver_does_not_block_the_server(tmp_path, stuck_resolver):
    entered, release = stuck_resolver
    url = f"/{APP}/prompt-to-audio?fal_webhook=http%3A%2F%2Fslow-dns.example%2Fhook"
    with served(create_app(EngineDouble(steps=1), settings(), tmp_path)) as base, ThreadPoolExecutor(1) as pool:
        submit = pool.submit(httpx.post, base + url, json=SONG, timeout=60)
        assert entered.wait(30)
        assert httpx.get(f"{base}/health", timeout=NO_ANSWER).status_code == 200  # while the lookup hangs
        release.set()
        assert submit.result().status_code == 200


def test_3_a_webhook_name_that_never_resolves_is_refused_in_bounded_time(tmp_path, stuck_resolver):
    bounded = settings(security={"allow_private_urls": True, "dns_timeout_seconds": 0.5})
    with TestClient(create_app(EngineDouble(steps=1), bounded, tmp_path)) as client:
        answer = client.post(f"/{APP}/prompt-to-audio", params={"fal_webhook": "http://slow-dns.example/hook"}, json=SONG)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "fal_webhook"]
    assert "did not resolve within 0.5 s" in answer.json()["detail"][0]["msg"]


# -- 4 and 15. one deadline for a whole outbound request -------------------------------------------


def slow_redirect(delay: float, location: str):
    def route(handler):
        time.sleep(delay)
        send(handler, 302, b"", {"Location": location})

    return route


def test_4_the_download_timeout_covers_every_redirect_hop(public_loopback):
    """Five hops of 0.4 s in a 1 s budget: the download gives up during the third, and never asks for the song."""
    with LocalServer({"/a": slow_redirect(0.4, "/b"), "/b": slow_redirect(0.4, "/c"), "/c": slow_redirect(0.4, "/d"),
                      "/d": slow_redirect(0.4, "/e"), "/e": slow_redirect(0.4, "/song"),
                      "/song": lambda h: send(h, 200, b"")}, host=PLAYS_PUBLIC) as server:
        with pytest.raises(FetchError, match="timed out"):
            fetch(server.url("/a"), allow_private=False, timeout=1.0, max_bytes=1 << 20, max_redirects=5)
        assert "/song" not in [path for _, path, _, _ in server.requests]  # it used to follow all five


def test_4_dns_time_counts_against_the_download_deadline(monkeypatch):
    real = socket.getaddrinfo

    def slow(host, port, *args, **kwargs):
        if host == "slow-dns.example":
            time.sleep(3.0)
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(netguard.socket, "getaddrinfo", slow)
    with LocalServer({"/song": lambda h: send(h, 200, b"RIFF")}) as server:
        with pytest.raises(FetchError, match="did not resolve"):
            fetch(f"http://slow-dns.example:{server.port}/song", allow_private=True, timeout=1.0, max_bytes=1 << 20,
                  max_redirects=0)


def trickled_headers(interval: float):
    """Answers 200, its status line and headers one byte every ``interval`` seconds."""

    def route(handler):
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        for byte in head:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(interval)

    return route


def test_15_a_webhook_attempt_is_bounded_as_a_whole():
    """Each read is quick (a byte every 0.05 s), the answer is not (2 s): a 1 s attempt gives up."""
    with LocalServer({"/hook": trickled_headers(0.05)}) as server:
        with pytest.raises((httpx.TimeoutException, FetchError)):
            post(server.url("/hook"), content=b"{}", headers={}, allow_private=True, timeout=1.0)


# -- 5. a late cancel ended COMPLETED and billed ----------------------------------------------------


def test_5_a_cancel_acknowledged_while_running_wins_in_the_sqlite_store(tmp_path):
    store = SqliteJobStore(tmp_path)
    job = store.create("prompt-to-audio", "owner", SONG)
    running = store.claim_next()
    assert store.request_cancel(job.request_id) is CancelResult.REQUESTED  # the client got 202
    assert store.finish(running, Outcome.completed({"seed": 1}, 30.0, 0.006))  # the run ends after that
    done = store.get(job.request_id)
    assert (done.status, done.billable_seconds) == (JobStatus.CANCELLED, 0)
    assert [(r.status, r.seconds, r.price_usd) for r in store.usage_records()] == [("CANCELLED", 0, 0)]


def test_5_a_cancel_during_the_final_encode_wins_over_http(tmp_path, monkeypatch):
    from acestep_app.serving import service

    encoding, release = threading.Event(), threading.Event()
    real_encode = service.encode_audio

    def slow_encode(*args, **kwargs):  # the last stage, after the final cancellation check
        encoding.set()
        release.wait(30)
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(service, "encode_audio", slow_encode)
    with TestClient(create_app(EngineDouble(steps=1), Settings(), tmp_path)) as client:
        handle = client.post(f"/{APP}/prompt-to-audio", json=SONG).json()
        assert encoding.wait(30)
        assert client.put(handle["cancel_url"]).status_code == 202
        release.set()
        final = wait_until(lambda: (body := client.get(handle["status_url"]).json())["status"] == "COMPLETED" and body)
        assert final["error_type"] == "request_cancelled"
        assert client.get(handle["response_url"]).headers["x-fal-billable-units"] == "0"
        assert [(r.status, r.seconds) for r in client.app.state.store.usage_records()] == [("CANCELLED", 0)]


def test_5_a_cancel_wins_in_the_modal_store_too(tmp_path):
    from acestep_app.serving.stores.modal import ModalJobStore
    from modal_harness import InMemoryDict

    store = ModalJobStore(InMemoryDict(), tmp_path)
    job = store.create("prompt-to-audio", "owner", SONG)
    running = store.start(job.request_id)
    assert store.request_cancel(job.request_id) is CancelResult.CANCELLED
    assert not store.finish(running, Outcome.completed({"seed": 1}, 30.0, 0.006))
    assert [(r.status, r.seconds) for r in store.usage_records()] == [("CANCELLED", 0)]


# -- 6. whole bodies were read before the key was checked ------------------------------------------


def test_6_a_request_without_a_key_is_refused_before_its_body_is_read(tmp_path):
    app = create_app(EngineDouble(steps=1), Settings(), tmp_path, api_key=KEY)
    with served(app) as base:
        port = int(base.rsplit(":", 1)[1])
        declared = 19 * 1024 * 1024  # under the editing endpoints' 20 MiB limit
        with socket.create_connection(("127.0.0.1", port), timeout=NO_ANSWER) as sock:
            sock.sendall(f"POST /{APP}/audio-to-audio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                         f"\r\nContent-Length: {declared}\r\n\r\n".encode() + b"{" + b" " * 1024)
            answer = sock.recv(4096)  # the other 19 MiB are never sent: an answer now means none was awaited
        assert answer.startswith(b"HTTP/1.1 401")


# -- 7. disk grew without bound ---------------------------------------------------------------------


def test_7_inline_input_audio_is_kept_out_of_the_job_record_and_dropped_when_done(tmp_path):
    engine = EngineDouble(steps=10)  # ten log lines
    song = wav_data_uri(seconds=60.0, sample_rate=22050)  # ~7 MB as base64
    with TestClient(create_app(engine, Settings(), tmp_path)) as client:
        handle = client.post(f"/{APP}/audio-to-audio", json={"audio_url": song, "tags": "x", "original_tags": "y"}).json()
        wait_until(lambda: client.get(handle["status_url"]).json()["status"] == "COMPLETED")
        logs = client.get(handle["status_url"], params={"logs": "true"}).json()["logs"]
        assert len([entry for entry in logs if entry["message"].startswith("denoising")]) == 10
    (row,) = jobs_rows(tmp_path)
    assert len(row["input"]) < 1024 and "base64" not in row["input"]
    assert engine.sources[0].duration == 60.0  # the run still got the whole song (1323000 frames / 22050 Hz)
    assert list((tmp_path / "inputs").iterdir()) == []  # its file went with the job
    database = sum(p.stat().st_size for p in tmp_path.glob("jobs.sqlite3*"))
    assert database < 1024 * 1024, database  # was > 2 x the song: the row, rewritten per log line, and its WAL


def test_7_a_malformed_inline_file_is_refused_at_submit_and_nothing_is_stored(tmp_path):
    with TestClient(create_app(EngineDouble(steps=1), Settings(), tmp_path)) as client:
        answer = client.post(f"/{APP}/audio-to-audio", json={"audio_url": "data:audio/wav;base64,@@@" + "A" * 4096, "tags": "x", "original_tags": "y"})
        assert answer.status_code == 422 and answer.json()["detail"][0]["type"] == "file_download_error"
    assert jobs_rows(tmp_path) == [] and list((tmp_path / "inputs").iterdir()) == []


def test_7_retention_prunes_jobs_files_and_deliveries_but_keeps_the_usage_ledger(tmp_path):
    from acestep_app.cli import main

    with Receiver() as receiver:
        with TestClient(create_app(EngineDouble(steps=1), settings(), tmp_path)) as client:
            hook = f"/{APP}/prompt-to-audio?fal_webhook={receiver.url}"
            handles = [client.post(hook, json=SONG).json() for _ in range(3)]
            receiver.wait_for(3)
            wait_until(lambda: client.app.state.webhooks.webhooks.outbox.count(
                client.app.state.webhooks.webhooks.outbox.all()[0].state.DELIVERED) == 3)
            kept = client.app.state.retention.prune()  # default retention: 30 days, nothing that old
            assert (kept.jobs, kept.audio_files, kept.webhooks) == (0, 0, 0)
    assert main(["prune", "--data-dir", str(tmp_path), "--days", "0"]) == 0
    assert jobs_rows(tmp_path) == [] and list((tmp_path / "files").iterdir()) == []
    with sqlite3.connect(tmp_path / "webhooks.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone() == (0,)
    store = SqliteJobStore(tmp_path)
    assert sorted(r.request_id for r in store.usage_records()) == sorted(h["request_id"] for h in handles)
    store.close()


# -- 8. decoding took far more memory than the file ------------------------------------------------


def test_8_a_small_file_that_decodes_to_too_many_samples_is_refused_before_decoding():
    song = wav_data_uri(seconds=239.0, sample_rate=192_000, fmt="FLAC")  # silence: ~170 kB, 350 MiB decoded
    assert len(song) < 512 * 1024
    with pytest.raises(AudioInputError) as refused:
        load_audio_url(song, Settings())
    assert refused.value.error_type == "audio_duration_too_long"
    assert refused.value.ctx["max_duration"] == 60.0  # 240 s of 48 kHz stereo is 60 s at 192 kHz


def test_8_decoding_peaks_at_the_decoded_audio_not_twice_it():
    wav = base64.b64decode(wav_data_uri(seconds=20.0, sample_rate=48_000).split(",", 1)[1])
    decoded_bytes = 20 * 48_000 * 2 * 4  # the (2, N) float32 result
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        waveform = decode_audio(wav, Settings()).waveform
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert waveform.shape == (2, 20 * 48_000)
    # the result plus what one 65536-frame block needs (0.5 MB as read, its finiteness mask, libsndfile's
    # buffers): under 2 MiB; reading the whole file and transposing it took 2 x the result (+7.7 MB)
    assert peak < decoded_bytes + 2 * 1024 * 1024, peak / decoded_bytes


# -- 9. no queue cap ---------------------------------------------------------------------------------


def test_9_submits_past_the_default_per_key_and_global_caps_get_429(tmp_path):
    engine = EngineDouble(steps=1)
    engine.hold = threading.Event()
    caps = type("Caps", (), {"max_pending": DEFAULT_MAX_PENDING, "max_pending_per_key": DEFAULT_MAX_PENDING_PER_KEY})
    keys = [f"key-{n}" for n in range(caps.max_pending // caps.max_pending_per_key + 1)]
    submit = f"/{APP}/prompt-to-audio"
    with TestClient(create_app(engine, Settings(), tmp_path, api_key=keys)) as client:
        try:
            for key in keys[:-1]:  # each key fills its own share: 64 each, 256 in all
                auth = {"Authorization": f"Key {key}"}
                answers = [client.post(submit, json=SONG, headers=auth).status_code for _ in range(caps.max_pending_per_key)]
                assert answers == [200] * caps.max_pending_per_key
            per_key = client.post(submit, json=SONG, headers={"Authorization": f"Key {keys[0]}"})
            assert per_key.status_code == 429 and per_key.json()["error_type"] == "queue_full"
            assert per_key.headers["retry-after"] and per_key.headers["x-fal-billable-units"] == "0"
            full = client.post(submit, json=SONG, headers={"Authorization": f"Key {keys[-1]}"})
            assert full.status_code == 429 and "on this server" in full.json()["detail"]
            assert len(jobs_rows(tmp_path)) == caps.max_pending
        finally:
            engine.hold.set()
    assert (Settings().queue.max_pending, Settings().queue.max_pending_per_key) == (caps.max_pending,
                                                                                    caps.max_pending_per_key)


# -- 10. a webhook was lost to a crash between the job and its registration -------------------------


def test_10_a_crash_right_after_the_job_is_written_still_delivers_its_webhook(tmp_path, monkeypatch):
    from acestep_app.serving.webhooks.outbox import Outbox

    def crash(*args, **kwargs):  # the process dies here (where the registration used to be written)
        raise RuntimeError("the process died here")

    with Receiver() as receiver:
        engine = EngineDouble(steps=1)
        engine.hold = threading.Event()  # the job stays queued while the process "dies"
        app = create_app(engine, settings(), tmp_path)
        monkeypatch.setattr(Outbox, "register", crash)
        monkeypatch.setattr(Outbox, "enqueue", crash)
        with TestClient(app, raise_server_exceptions=False) as client:
            client.post(f"/{APP}/prompt-to-audio?fal_webhook={receiver.url}", json=SONG)
            assert len(jobs_rows(tmp_path)) == 1
            app.state.worker.stop(timeout=0)  # no more work in this process
            engine.hold.set()
        monkeypatch.undo()
        with TestClient(create_app(EngineDouble(steps=1), settings(), tmp_path)):  # the restart
            [item] = receiver.wait_for(1)
    assert json.loads(item.body)["request_id"] == jobs_rows(tmp_path)[0]["request_id"]


# -- 11, 12. malformed signatures raised instead of failing -----------------------------------------


@pytest.mark.parametrize("timestamp, signature", [
    ("9" * 400, "00" * 64), ("-1", "00" * 64), ("1e9", "00" * 64), (str(int(time.time())), "zz" * 64),
    (str(int(time.time())), "00" * 63), (str(int(time.time())), "00" * 65), (str(int(time.time())), "é" * 128),
])
def test_11_verify_never_raises_on_what_a_sender_controls(timestamp, signature):
    headers = {"X-Fal-Webhook-Request-Id": "r", "X-Fal-Webhook-User-Id": "u", "X-Fal-Webhook-Timestamp": timestamp,
               "X-Fal-Webhook-Signature": signature}
    assert verify(headers, b"{}", {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}]}) is False
    assert verify(headers, b"{}", {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "not base64!"}]}) is False


def test_12_a_non_ascii_file_signature_is_a_404_not_a_500(tmp_path):
    with TestClient(create_app(EngineDouble(steps=1), Settings(), tmp_path, api_key=KEY)) as client:
        url = client.post("/prompt-to-audio", json=SONG, headers=AUTH).json()["audio"]["url"]
        path = url.split("?")[0].replace("http://testserver", "")
        for query in ({"sig": "é" * 32}, {"sig": "\u0660" * 32, "exp": "1"}, {"sig": "0" * 32, "exp": "9" * 400}):
            assert client.get(path, params=query).status_code == 404


# -- 13. a data dir others could read; owner ids an unsalted hash of the key -----------------------


def test_13_the_data_dir_is_private_and_owner_ids_are_keyed(tmp_path):
    data_dir = tmp_path / "data"
    with TestClient(create_app(EngineDouble(steps=1), Settings(), data_dir, api_key=KEY)) as client:
        assert client.post("/prompt-to-audio", json=SONG, headers=AUTH).status_code == 200
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "files").stat().st_mode) == 0o700
    written = [p for p in data_dir.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"jobs.sqlite3", "webhooks.sqlite3", "webhook-signing-key.pem"}
    assert {p: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p: "0o600" for p in written}
    (row,) = jobs_rows(data_dir)
    assert row["owner"] != hashlib.sha256(KEY.encode()).hexdigest()  # not testable offline without the secret


# -- 14. Modal -----------------------------------------------------------------------------------------


def test_14_modal_gpu_containers_are_capped_from_infra_toml(monkeypatch):
    import importlib.util

    import modal

    declared = {}
    real_cls = modal.App.cls

    def recording_cls(self, **kwargs):
        declared.update(kwargs)
        return real_cls(self, **kwargs)

    monkeypatch.setattr(modal.App, "cls", recording_cls)
    spec = importlib.util.spec_from_file_location("modal_app_declared", Path(__file__).parents[1] / "deploy" / "modal_app.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert declared["max_containers"] == Settings.load().modal.max_containers >= 1


class FakeCall:
    def __init__(self, error):
        self.error = error

    def get(self, timeout=None):
        raise self.error


@pytest.mark.parametrize("transient", [True, False])
def test_14_modal_only_a_definite_loss_of_the_call_fails_the_job(tmp_path, monkeypatch, transient):
    import modal

    from acestep_app.hosts.modal_calls import FunctionCalls
    from acestep_app.serving.queue import CallFailed, QueueService
    from acestep_app.serving.stores.modal import ModalJobStore
    from modal_harness import InMemoryDict

    error = modal.exception.ConnectionError("connection reset") if transient else \
        modal.exception.FunctionTimeoutError("the call ran past its timeout")
    monkeypatch.setattr(modal.FunctionCall, "from_id", lambda call_id: FakeCall(error))
    store = ModalJobStore(InMemoryDict(), tmp_path)
    runner = FunctionCalls(store, spawn=lambda job: type("Call", (), {"object_id": "fc-1"})())
    job = QueueService(store, runner).submit("prompt-to-audio", "owner", SONG)
    if transient:
        runner.wait(job, 0.01)  # the job is still running somewhere: wait again later
        assert store.get(job.request_id).status is JobStatus.IN_QUEUE
    else:
        with pytest.raises(CallFailed):
            runner.wait(job, 0.01)


def test_14_modal_usage_survives_a_crash_between_the_outcome_and_its_record(tmp_path):
    from acestep_app.serving.stores.modal import ModalJobStore
    from modal_harness import InMemoryDict

    class DiesAfterTheOutcome(InMemoryDict):
        def put(self, key, value, *, skip_if_exists=False):
            stored = super().put(key, value, skip_if_exists=skip_if_exists)
            if key.endswith(":outcome"):
                raise SystemExit("the container died here")
            return stored

    registry = DiesAfterTheOutcome()
    store = ModalJobStore(registry, tmp_path)
    job = store.create("prompt-to-audio", "owner", SONG)
    with pytest.raises(SystemExit):
        store.finish(store.start(job.request_id), Outcome.completed({"seed": 1}, 5.0, 0.001))
    restarted = ModalJobStore(registry, tmp_path)  # the next container (or `usage`) reads the ledger
    assert [(r.request_id, r.status, r.seconds) for r in restarted.usage_records()] == [
        (job.request_id, "COMPLETED", 5.0)]


def test_14_modal_queue_positions_come_from_the_backlog(tmp_path):
    from acestep_app.serving.stores.modal import ModalJobStore
    from modal_harness import InMemoryDict

    backlog = [3]
    store = ModalJobStore(InMemoryDict(), tmp_path, backlog=lambda: backlog[0])
    job = store.create("prompt-to-audio", "owner", SONG)  # three inputs were waiting before it
    backlog[0] = 4
    assert store.queue_position(job) == 3
    backlog[0] = 2  # two of those started
    assert store.queue_position(job) == 1


# -- 15. file URLs, body limits, fal's file errors --------------------------------------------------


def test_15_signed_file_urls_expire(tmp_path):
    app = create_app(EngineDouble(steps=1), Settings(), tmp_path, api_key=KEY)
    with TestClient(app) as client:
        url = client.post("/prompt-to-audio", json=SONG, headers=AUTH).json()["audio"]["url"]
        path, query = url.replace("http://testserver", "").split("?")
        params = dict(part.split("=") for part in query.split("&"))
        (row,) = jobs_rows(tmp_path)
        assert int(params["exp"]) == int(row["finished_at"]) + Settings().storage.url_ttl_s  # 7 days from its end
        assert client.get(path, params=params).status_code == 200
        expired = int(time.time()) - 1
        stale = {"exp": str(expired), "sig": app.state.keys.sign(row["owner"], path.split("/")[-1], expired)}
        assert client.get(path, params=stale).status_code == 404
        assert client.get(path, params={**params, "exp": str(int(params["exp"]) + 1)}).status_code == 404


def test_15_body_limits_are_set_per_endpoint(tmp_path):
    from acestep_app.cli.serve import body_limits
    from acestep_app.engine.family import get_family
    from acestep_app.serving.endpoints import EndpointRegistry

    limits = body_limits(["audio-to-audio=1000"], EndpointRegistry([get_family("acestep-v1")]))
    with pytest.raises(ValueError, match="no endpoint 'nope'"):
        body_limits(["nope=5"], EndpointRegistry([get_family("acestep-v1")]))
    body = {"audio_url": "https://example.com/" + "a" * 1500, "tags": "x", "original_tags": "y"}
    with TestClient(create_app(EngineDouble(steps=1), Settings(), tmp_path, max_body_bytes=limits)) as client:
        assert client.post("/audio-to-audio", json=body).status_code == 413
        assert client.post(f"/{APP}/audio-inpaint", json={**body, "start_time": 0, "end_time": 1}).status_code == 200


def test_15_file_errors_carry_fals_input_key(public_loopback):
    with LocalServer({"/missing.wav": lambda h: send(h, 404, b"gone")}, host=PLAYS_PUBLIC) as server:
        with pytest.raises(AudioInputError) as refused:
            load_audio_url(server.url("/missing.wav"), Settings())
    assert refused.value.detail()["input"] == server.url("/missing.wav")
    with pytest.raises(AudioInputError) as inline:
        load_audio_url("data:audio/wav;base64,@@" + "A" * 100, Settings())
    assert inline.value.detail()["input"] == "data:audio/wav;base64,..."  # a data: URI by its header only
