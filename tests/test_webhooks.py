"""Webhooks: fal's signature and payload, the JWKS, the retry schedule, the persistent outbox and its worker."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import threading
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from acestep_app.settings import SecuritySection, Settings, WebhooksSection
from acestep_app.serving.webhooks.verify import signed_message, verify
from acestep_app.serving.webhooks.outbox import (
    PAYLOAD_ERROR,
    SIGNING_KEY_ENV,
    SIGNING_KEY_FILE,
    DeliveryState,
    DeliveryWorker,
    Outbox,
    SigningKey,
    Webhooks,
    jwks,
    retry_delays,
    webhook_body,
)
from conftest import wait_until
from engine_double import EngineDouble
from hosts import modal_host  # noqa: F401  (fixture)
from webhook_receiver import Receiver

RESULT = {"audio": {"url": "https://h/files/r1.wav", "content_type": "audio/wav", "file_name": "r1.wav",
                    "file_size": 44}, "seed": 7, "tags": "lofi", "lyrics": "[inst]"}
# RFC 8037, appendix A: an Ed25519 key and the RFC 7638 thumbprint of its public JWK.
RFC8037_SEED = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def fast_settings(**overrides) -> WebhooksSection:
    return WebhooksSection(**{"max_attempts": 4, "retry_window_seconds": 0.7, "timeout_seconds": 5.0,
                              **overrides})


# -- signing and verification -------------------------------------------------------------------------


def test_jwk_and_kid_match_rfc8037_known_answer():
    key = SigningKey.from_text(RFC8037_SEED)
    assert key.jwk() == {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": RFC8037_THUMBPRINT,
                         "use": "sig", "alg": "EdDSA"}
    assert jwks(key) == {"keys": [key.jwk()]}


def test_signature_verifies_against_the_jwks_and_tampering_fails():
    key, other = SigningKey.generate(), SigningKey.generate()
    body = webhook_body("req-1", RESULT)
    now = int(time.time())
    headers = key.signature_headers("req-1", "user-9", body, timestamp=now)
    assert set(headers) == {"X-Fal-Webhook-Request-Id", "X-Fal-Webhook-User-Id", "X-Fal-Webhook-Timestamp",
                            "X-Fal-Webhook-Signature"}
    assert headers["X-Fal-Webhook-Timestamp"] == str(now) and len(headers["X-Fal-Webhook-Signature"]) == 128
    published = json.loads(json.dumps(jwks(other, key)))  # as a receiver fetches it
    assert verify(headers, body, published)
    assert verify({name.lower(): value for name, value in headers.items()}, body, published)
    raw_public = base64.urlsafe_b64decode(key.x + "=")
    assert verify(headers, body, [raw_public])
    # the message is exactly fal's: request_id, user_id, timestamp, hex sha256 of the raw body
    key.private_key.public_key().verify(bytes.fromhex(headers["X-Fal-Webhook-Signature"]),
                                        signed_message("req-1", "user-9", str(now), body))

    assert not verify(headers, body + b" ", published)
    assert not verify(headers, json.dumps(json.loads(body)).encode(), published)  # re-serialised, not raw
    assert not verify({**headers, "X-Fal-Webhook-Timestamp": str(now + 1)}, body, published)
    assert not verify({**headers, "X-Fal-Webhook-User-Id": "user-8"}, body, published)
    assert not verify(headers, body, jwks(other))
    assert not verify({k: v for k, v in headers.items() if k != "X-Fal-Webhook-User-Id"}, body, published)
    assert not verify({**headers, "X-Fal-Webhook-Signature": "zz"}, body, published)


def test_verify_rejects_stale_or_future_timestamps():
    key = SigningKey.generate()
    body = webhook_body("r", RESULT)
    headers = key.signature_headers("r", "u", body, timestamp=1_000_000)
    assert verify(headers, body, jwks(key), now=1_000_300)
    assert not verify(headers, body, jwks(key), now=1_000_301)
    assert not verify(headers, body, jwks(key), now=999_699)
    assert verify(headers, body, jwks(key), now=1_000_301, max_age_s=400)


def test_signing_key_is_created_once_with_mode_0600_and_reloaded(tmp_path):
    first = SigningKey.load(tmp_path, environ={})
    path = tmp_path / SIGNING_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load(tmp_path, environ={}).kid == first.kid
    assert [p.name for p in tmp_path.iterdir()] == [SIGNING_KEY_FILE]  # no temporary file left behind


def test_signing_key_from_the_environment_wins(tmp_path):
    pem = SigningKey.generate().private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    from_pem = SigningKey.load(tmp_path, environ={SIGNING_KEY_ENV: pem})
    assert from_pem.kid == SigningKey.from_text(pem).kid
    assert SigningKey.load(tmp_path, environ={SIGNING_KEY_ENV: RFC8037_SEED}).x == RFC8037_X
    assert not (tmp_path / SIGNING_KEY_FILE).exists()
    with pytest.raises(ValueError, match=SIGNING_KEY_ENV):
        SigningKey.load(tmp_path, environ={SIGNING_KEY_ENV: "c2hvcnQ"})


def test_user_id_is_keyed_by_the_signing_key_not_a_plain_hash_of_the_api_key():
    import hashlib

    owner = hashlib.sha256(b"a weak key").hexdigest()  # what auth calls the owner of that API key
    key = SigningKey.generate()
    user_id = key.user_id(owner)
    assert user_id == key.user_id(owner) and len(user_id) == 32
    assert user_id not in (owner, owner[:32], hashlib.sha256(owner.encode()).hexdigest()[:32])
    assert SigningKey.generate().user_id(owner) != user_id  # a receiver cannot recompute it without the key
    assert key.user_id(hashlib.sha256(b"another key").hexdigest()) != user_id


# -- payload ------------------------------------------------------------------------------------------


def test_ok_payload_is_fals_shape():
    assert json.loads(webhook_body("r1", RESULT)) == {
        "request_id": "r1", "gateway_request_id": "r1", "status": "OK", "payload": RESULT}


def test_error_payload_is_fals_shape():
    detail = {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]}
    assert json.loads(webhook_body("r2", detail, error_status=422)) == {
        "request_id": "r2", "gateway_request_id": "r2", "status": "ERROR",
        "error": "Invalid status code: 422", "payload": detail}


def test_payload_that_is_not_json_becomes_payload_error():
    body = json.loads(webhook_body("r3", {"seed": float("nan")}))
    assert body == {"request_id": "r3", "gateway_request_id": "r3", "status": "OK", "payload": None,
                    "payload_error": PAYLOAD_ERROR}


# -- schedule -----------------------------------------------------------------------------------------


def test_fal_default_schedule_is_ten_attempts_within_two_hours():
    delays = retry_delays(10, 7200)
    assert len(delays) == 9
    assert sum(delays) == pytest.approx(7200)  # float64 sums and halvings: approx's relative 1e-6
    assert delays[0] == pytest.approx(7200 / 511)
    assert all(later == pytest.approx(2 * earlier) for earlier, later in zip(delays, delays[1:]))
    assert retry_delays(1, 7200) == []


def test_outbox_claims_follow_the_schedule(tmp_path):
    settings = WebhooksSection(max_attempts=3, retry_window_seconds=30)  # gaps of 10 s and 20 s
    outbox = Outbox(tmp_path, settings)
    assert outbox.enqueue("r", "https://example.com/h", "u", b"{}", now=100)
    assert not outbox.enqueue("r", "https://example.com/other", "u", b"[]", now=100)  # one delivery per request
    assert [d.attempts for d in outbox.claim(100, limit=5)] == [1]
    assert outbox.claim(109.9, limit=5) == []
    assert [d.attempts for d in outbox.claim(110, limit=5)] == [2]
    assert outbox.claim(129.9, limit=5) == []
    assert [d.attempts for d in outbox.claim(130, limit=5)] == [3]
    assert outbox.get("r").url == "https://example.com/h"


# -- delivery -----------------------------------------------------------------------------------------


def test_retries_after_500s_then_exactly_one_success(tmp_path):
    clock = Clock()
    settings = WebhooksSection(max_attempts=10, retry_window_seconds=7200)
    key = SigningKey.generate()
    outbox = Outbox(tmp_path, settings)
    worker = DeliveryWorker(outbox, key, settings, allow_private=True, clock=clock)
    delays = retry_delays(10, 7200)
    with Receiver(fail_first=2) as receiver:
        outbox.enqueue("req-7", receiver.url, "user-1", webhook_body("req-7", RESULT), now=clock.now)
        assert worker.deliver_due() == 1
        assert worker.deliver_due() == 0  # not due before the first gap
        clock.now += delays[0]
        assert worker.deliver_due() == 1
        clock.now += delays[1]
        assert worker.deliver_due() == 1
        clock.now += 10 * 7200
        assert worker.deliver_due() == 0  # delivered: never sent again
    assert [item.answered for item in receiver.received] == [500, 500, 200]
    bodies = {item.body for item in receiver.received}
    assert bodies == {webhook_body("req-7", RESULT)}
    for item in receiver.received:
        assert item.headers["x-fal-webhook-request-id"] == "req-7"
        assert item.headers["content-type"] == "application/json"
        assert verify(item.headers, item.body, jwks(key), now=int(item.headers["x-fal-webhook-timestamp"]))
    stamps = [int(item.headers["x-fal-webhook-timestamp"]) for item in receiver.received]
    assert stamps[1] > stamps[0]  # each attempt is signed afresh
    delivery = outbox.get("req-7")
    assert delivery.state is DeliveryState.DELIVERED and delivery.attempts == 3 and delivery.last_status == 200


def test_gives_up_after_the_last_attempt(tmp_path):
    clock = Clock()
    settings = WebhooksSection(max_attempts=3, retry_window_seconds=3)
    outbox = Outbox(tmp_path, settings)
    worker = DeliveryWorker(outbox, SigningKey.generate(), settings, allow_private=True, clock=clock)
    with Receiver(fail_first=99) as receiver:
        outbox.enqueue("r", receiver.url, "u", b"{}", now=clock.now)
        for _ in range(5):
            worker.deliver_due()
            clock.now += 10
    assert len(receiver.received) == 3
    delivery = outbox.get("r")
    assert delivery.state is DeliveryState.FAILED and delivery.attempts == 3
    assert delivery.last_error == "HTTP 500" and delivery.last_status == 500


@pytest.mark.parametrize("target", ["loopback", "file:///etc/passwd", "ftp://example.com/hook",
                                    "http://169.254.169.254/latest"])
def test_refused_targets_never_get_traffic(tmp_path, target):
    outbox = Outbox(tmp_path, fast_settings())
    worker = DeliveryWorker(outbox, SigningKey.generate(), fast_settings(), allow_private=False)
    with Receiver() as receiver:
        url = receiver.url if target == "loopback" else target
        outbox.enqueue("r", url, "u", b"{}")
        assert worker.deliver_due() == 1
    assert receiver.received == []
    delivery = outbox.get("r")
    assert delivery.state is DeliveryState.FAILED and delivery.attempts == 1
    assert delivery.last_error.startswith("refused target: ")
    assert worker.deliver_due() == 0


def test_metadata_address_refused_even_with_private_allowed(tmp_path):
    outbox = Outbox(tmp_path, fast_settings())
    worker = DeliveryWorker(outbox, SigningKey.generate(), fast_settings(), allow_private=True)
    outbox.enqueue("r", "http://169.254.169.254/hook", "u", b"{}")
    worker.deliver_due()
    assert "metadata" in outbox.get("r").last_error and outbox.get("r").state is DeliveryState.FAILED


def test_pending_deliveries_survive_a_new_outbox(tmp_path):
    clock = Clock()
    settings = WebhooksSection(max_attempts=5, retry_window_seconds=15)  # gaps 1, 2, 4, 8 s
    key = SigningKey.load(tmp_path, environ={})
    with Receiver(fail_first=1) as receiver:
        first = Outbox(tmp_path, settings)
        first.enqueue("sent-once", receiver.url, "u", webhook_body("sent-once", RESULT), now=clock.now)
        DeliveryWorker(first, key, settings, allow_private=True, clock=clock).deliver_due()  # 500
        first.enqueue("never-sent", receiver.url, "u", webhook_body("never-sent", RESULT), now=clock.now)
        first.claim(clock.now, limit=1, skip={"sent-once"})  # claimed, then the process "dies" mid-POST
        first.close()

        second = Outbox(tmp_path, settings)
        worker = DeliveryWorker(second, SigningKey.load(tmp_path, environ={}), settings, allow_private=True,
                                clock=clock)
        assert worker.deliver_due() == 0  # both wait for their next slot on the schedule
        clock.now += 1
        assert worker.deliver_due() == 2
    assert sorted(item.headers["x-fal-webhook-request-id"] for item in receiver.successes) == [
        "never-sent", "sent-once"]
    assert {d.request_id: (d.state, d.attempts) for d in second.all()} == {
        "sent-once": (DeliveryState.DELIVERED, 2), "never-sent": (DeliveryState.DELIVERED, 2)}
    for item in receiver.successes:
        assert verify(item.headers, item.body, jwks(key), now=clock.now)


def test_worker_thread_delivers_retries_and_stops_cleanly(tmp_path):
    with Receiver(fail_first=2) as receiver:
        webhooks = Webhooks(tmp_path, fast_settings(), allow_private=True)
        webhooks.start()
        try:
            assert webhooks.enqueue("req-a", receiver.url, "user", RESULT)
            assert webhooks.enqueue("req-b", receiver.url, "user", {"detail": "boom"}, error_status=500)
            assert not webhooks.enqueue("req-a", receiver.url, "user", RESULT)
            deadline = time.monotonic() + 30
            while webhooks.outbox.count(DeliveryState.DELIVERED) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            webhooks.stop()
    assert not webhooks.worker.running
    assert sorted(item.headers["x-fal-webhook-request-id"] for item in receiver.successes) == ["req-a", "req-b"]
    assert len(receiver.received) == 4  # two 500s, then one success each
    published = webhooks.jwks()
    for item in receiver.received:
        assert verify(item.headers, item.body, published)
    errors = [json.loads(item.body) for item in receiver.successes if json.loads(item.body)["status"] == "ERROR"]
    assert errors == [{"request_id": "req-b", "gateway_request_id": "req-b", "status": "ERROR",
                       "error": "Invalid status code: 500", "payload": {"detail": "boom"}}]


def test_stop_leaves_undelivered_work_pending(tmp_path):
    webhooks = Webhooks(tmp_path, fast_settings(), allow_private=True)
    webhooks.start()
    webhooks.stop()
    webhooks.outbox.enqueue("later", "http://127.0.0.1:9/hook", "u", b"{}")
    assert webhooks.outbox.get("later").state is DeliveryState.PENDING and webhooks.outbox.get("later").attempts == 0
    assert os.path.exists(tmp_path / "webhooks.sqlite3")


def test_a_registered_webhook_waits_for_its_request_then_is_delivered_once(tmp_path):
    clock = Clock()
    outbox = Outbox(tmp_path, fast_settings())
    worker = DeliveryWorker(outbox, SigningKey.generate(), fast_settings(), allow_private=True, clock=clock)
    with Receiver() as receiver:
        assert outbox.register("r", receiver.url, "owner", "https://public.example/", now=clock.now)
        assert not outbox.register("r", "http://elsewhere/", "other")
        assert worker.deliver_due() == 0  # nothing to send while the request runs
        assert [d.base_url for d in Outbox(tmp_path, fast_settings()).waiting()] == ["https://public.example/"]
        assert outbox.enqueue("r", "http://ignored/", "ignored", b'{"x":1}', now=clock.now)
        assert not outbox.enqueue("r", receiver.url, "owner", b'{"x":2}', now=clock.now)
        assert worker.deliver_due() == 1
    assert [(item.body, item.headers["x-fal-webhook-user-id"]) for item in receiver.received] == [
        (b'{"x":1}', "owner")]
    assert outbox.waiting() == [] and outbox.get("r").state is DeliveryState.DELIVERED


# -- the local server (in-process) ----------------------------------------------------------------------

SERVER_KEY = "webhook-key"
SERVER_AUTH = {"Authorization": f"Key {SERVER_KEY}"}
SONG = {"tags": "lofi", "lyrics": "[inst]", "duration": 5}


def server_settings(allow_private: bool = True) -> Settings:
    return Settings(security=SecuritySection(allow_private_urls=allow_private), webhooks=fast_settings())


def submit(client, url: str | None, body: dict = SONG):
    query = "" if url is None else "?" + urlencode({"fal_webhook": url})
    return client.post(f"/fal-ai/ace-step{query}", json=body, headers=SERVER_AUTH)


def test_local_server_webhook_payload_is_the_result_urls_answer(tmp_path):
    from acestep_app.hosts.local import create_app

    engine = EngineDouble(steps=1, sample_rate=100)
    app = create_app(engine, server_settings(), tmp_path, api_key=[SERVER_KEY])
    with Receiver() as receiver, TestClient(app) as client:
        jwks_answer = client.get("/.well-known/jwks.json")  # open, no key
        handles = [submit(client, receiver.url).json()]
        wait_until(lambda: receiver.received)
        engine.fail_with = RuntimeError("boom")
        handles.append(submit(client, receiver.url).json())
        wait_until(lambda: len(receiver.received) == 2)
        engine.fail_with, engine.hold = None, threading.Event()
        engine.started.clear()
        running_handle = submit(client, receiver.url).json()
        assert engine.started.wait(10)
        handles.append(submit(client, receiver.url).json())  # queued behind it, then cancelled
        assert client.put(handles[-1]["cancel_url"], headers=SERVER_AUTH).status_code == 202
        engine.hold.set()
        handles.append(running_handle)
        wait_until(lambda: len(receiver.received) == 4)
        results = {handle["request_id"]: client.get(handle["response_url"], headers=SERVER_AUTH) for handle in handles}
        client.app.state.webhooks.webhooks.worker.deliver_due()  # nothing is due again: each was delivered once
    assert jwks_answer.status_code == 200 and jwks_answer.json() == app.state.webhooks.jwks()
    assert len(receiver.received) == 4
    kinds = []
    for item in receiver.received:
        assert verify(item.headers, item.body, jwks_answer.json())
        body = json.loads(item.body)
        answer = results[body["request_id"]]
        assert body["payload"] == answer.json()  # the signed link too: its expiry counts from the job's end
        if answer.status_code == 200:
            assert body["status"] == "OK" and "error" not in body
            assert body["payload"]["audio"]["url"].startswith("http://testserver/files/")
        else:
            assert body["status"] == "ERROR" and body["error"] == f"Invalid status code: {answer.status_code}"
        kinds.append(answer.json().get("error_type", "ok"))
    assert sorted(kinds) == ["generation_failed", "ok", "ok", "request_cancelled"]
    owner = app.state.keys.owner_of(SERVER_KEY.encode())
    user_ids = {value for item in receiver.received for name, value in item.headers.items()
                if name.lower() == "x-fal-webhook-user-id"}
    assert user_ids == {
        app.state.webhooks.webhooks.key.user_id(owner)}


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "ftp://example.com/hook", "not a url"])
def test_refused_webhook_targets_are_a_422_naming_fal_webhook(tmp_path, url):
    from acestep_app.hosts.local import create_app

    app = create_app(EngineDouble(steps=1, sample_rate=100), server_settings(allow_private=False), tmp_path,
                     api_key=[SERVER_KEY])
    with TestClient(app) as client:
        answer = submit(client, url)
        assert answer.status_code == 422
        assert [item["loc"] for item in answer.json()["detail"]] == [["query", "fal_webhook"]]
        assert client.get("/health").json()["queue"] == {"in_queue": 0, "in_progress": 0}
    assert app.state.webhooks.webhooks.outbox.all() == []


def test_modal_host_refuses_webhooks_it_cannot_deliver(modal_host):
    answer = modal_host.client.post("/fal-ai/ace-step?fal_webhook=https%3A%2F%2Fexample.com%2Fhook", json=SONG,
                                    headers=modal_host.headers)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["query", "fal_webhook"]
    assert "not delivered by this host" in answer.json()["detail"][0]["msg"]
    assert modal_host.client.get("/.well-known/jwks.json", headers=modal_host.headers).status_code in (404, 405)


def test_a_request_that_finished_before_its_hook_ran_is_delivered_at_startup(tmp_path):
    """A kill -9 after the terminal transition but before ``on_finished``: the registration remains WAITING."""
    from acestep_app.serving.jobs import Outcome
    from acestep_app.hosts.local import create_app
    from acestep_app.serving.stores.sqlite import SqliteJobStore

    with Receiver() as receiver:
        store = SqliteJobStore(tmp_path)
        job = store.create("text-to-audio", "owner-1", SONG, webhook_url=receiver.url)
        Outbox(tmp_path).register(job.request_id, receiver.url, job.owner, "https://public.example/")
        result = {"audio": {"url": f"files/{job.request_id}.wav", "content_type": "audio/wav"}, "seed": 1}
        assert store.finish(store.start(job.request_id), Outcome.completed(result, 5.0, 0.001))
        store.close()
        app = create_app(EngineDouble(steps=1), server_settings(), tmp_path)
        with TestClient(app):
            [item] = receiver.wait_for(1)
    body = json.loads(item.body)
    assert body["status"] == "OK" and body["request_id"] == job.request_id
    assert body["payload"]["audio"]["url"] == f"https://public.example/files/{job.request_id}.wav"
    assert item.headers["x-fal-webhook-user-id"] == "owner-1"
    assert Outbox(tmp_path).get(job.request_id).state is DeliveryState.DELIVERED
