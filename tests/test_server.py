"""The local server in-process: endpoints, fal queue protocol, billing, validation, auth, files.

Most tests drive an engine double (tests/engine_double.py) so jobs can be held, failed and counted;
``test_real_engine_*`` run the real Engine on a tiny random checkpoint (acestep_app.acestep_v1.tiny).
Reliability checks (issue 9) that these tests cover are counted in tests/reliability.py's summary.
"""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from acestep_app.serving import billing
from acestep_app.errors import InputError
from acestep_app.serving.jobs import JobStatus
from acestep_app.acestep_v1.schema import PromptToAudioOutput, TextToAudioOutput
from acestep_app.hosts.local import create_app
from acestep_app.settings import Settings
from conftest import wait_until
from engine_double import EngineDouble
from reliability import TALLY, reliability_tally  # noqa: F401  (autouse: prints the reliability summary)

APP = "fal-ai/ace-step"
KEY_A, KEY_B = "key-a:secret", "key-b:secret"


@pytest.fixture()
def engine():
    return EngineDouble()


@pytest.fixture()
def client(engine, tmp_path):
    with TestClient(create_app(engine, Settings(), tmp_path / "data")) as client:
        yield client


@pytest.fixture()
def keyed(engine, tmp_path):
    """A server with two isolated keys; ``keyed.headers`` authenticates as key A."""
    app = create_app(engine, Settings(), tmp_path / "data", api_key=[KEY_A, KEY_B])
    with TestClient(app, headers={"Authorization": f"Key {KEY_A}"}) as client:
        yield client


def wait_status(client, handle: dict, expected: str, timeout: float = 10.0, **params) -> dict:
    return wait_until(lambda: (body := client.get(handle["status_url"], params=params).json())["status"] == expected
                      and body, timeout)


def submit(client, payload: dict, path: str = "/prompt-to-audio") -> dict:
    response = client.post(f"/{APP}{path}", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def usage(client) -> dict[str, dict]:
    return {record.request_id: vars(record) for record in client.app.state.store.usage_records()}


def read_wav(data: bytes) -> tuple[int, int, int]:
    samples, sample_rate = soundfile.read(io.BytesIO(data), always_2d=True)
    return samples.shape[1], sample_rate, samples.shape[0]


# -- synchronous endpoints -------------------------------------------------------------------------


def test_sync_prompt_to_audio_bills_and_links_the_file(client):
    response = client.post("/prompt-to-audio", json={"prompt": "lofi beat", "duration": 5, "seed": 7})
    assert response.status_code == 200
    output = PromptToAudioOutput.model_validate(response.json())
    assert output.seed == 7 and output.audio.content_type == "audio/wav"
    assert response.headers[billing.BILLING_HEADER] == "5"
    assert output.audio.url.startswith("http://testserver/files/")
    file = client.get(output.audio.url)
    assert file.status_code == 200 and file.headers["content-type"] == "audio/wav"
    assert len(file.content) == output.audio.file_size
    assert read_wav(file.content) == (2, 8000, 40000)
    row = usage(client)[response.headers["x-fal-request-id"]]
    assert row["endpoint"] == "prompt-to-audio" and row["seconds"] == 5.0
    assert row["price_usd"] == pytest.approx(5 * 0.0002)  # float64 product: approx's 1e-6


def test_sync_text_to_audio_at_root(client, engine):
    response = client.post("/", json={"tags": "jazz", "lyrics": "[verse]\nla la", "duration": 6.5})
    assert response.status_code == 200
    output = TextToAudioOutput.model_validate(response.json())
    assert (output.tags, output.lyrics) == ("jazz", "[verse]\nla la")
    assert response.headers[billing.BILLING_HEADER] == "6.5"
    assert type(engine.calls[-1]).__name__ == "TextToAudioInput"
    assert usage(client)[response.headers["x-fal-request-id"]]["endpoint"] == "text-to-audio"


def test_fal_run_style_route(client):
    response = client.post(f"/run/{APP}/prompt-to-audio", json={"prompt": "x", "duration": 5})
    assert response.status_code == 200 and response.headers[billing.BILLING_HEADER] == "5"
    assert client.post(f"/run/{APP}/nope", json={}).status_code == 404


def test_openapi_lists_both_endpoints_with_schema_models(client):
    spec = client.get("/openapi.json").json()
    assert {"/prompt-to-audio", "/", "/health"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    for name in ("PromptToAudioInput", "PromptToAudioOutput", "TextToAudioInput", "TextToAudioOutput", "File"):
        assert name in schemas
    body = spec["paths"]["/prompt-to-audio"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/PromptToAudioInput")
    assert schemas["PromptToAudioInput"]["required"] == ["prompt"]


def test_health(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["engine"]["is_tiny"] is True


# -- queue protocol --------------------------------------------------------------------------------


def test_queue_lifecycle_with_positions_logs_and_cancel(client, engine):
    engine.hold = threading.Event()
    running = submit(client, {"prompt": "a", "duration": 5})
    assert set(running) >= {"request_id", "status_url", "response_url", "cancel_url", "queue_position"}
    assert running["status_url"] == f"http://testserver/{APP}/requests/{running['request_id']}/status"
    assert running["cancel_url"] == f"http://testserver/{APP}/requests/{running['request_id']}/cancel"
    assert running["response_url"] == f"http://testserver/{APP}/requests/{running['request_id']}"
    assert engine.started.wait(5)
    queued = submit(client, {"prompt": "b", "duration": 5})
    last = submit(client, {"prompt": "c", "duration": 5})
    assert (queued["queue_position"], last["queue_position"]) == (0, 1)

    status = client.get(running["status_url"], params={"logs": "true"})
    assert status.status_code == 202 and status.json()["status"] == "IN_PROGRESS"
    assert status.json()["logs"][0]["message"] == "Request queued."
    assert client.get(running["status_url"]).json()["logs"] is None
    queued_status = client.get(queued["status_url"]).json()
    assert (queued_status["status"], queued_status["queue_position"]) == ("IN_QUEUE", 0)
    in_progress = client.get(running["response_url"])
    assert in_progress.status_code == 400 and in_progress.headers[billing.BILLING_HEADER] == "0"

    cancel = client.put(queued["cancel_url"])  # while queued
    assert (cancel.status_code, cancel.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    assert client.get(last["status_url"]).json()["queue_position"] == 0
    assert client.put(running["cancel_url"]).status_code == 202  # while running
    engine.hold.set()

    cancelled = wait_status(client, running, "COMPLETED")
    assert cancelled["error_type"] == "request_cancelled"
    done = wait_status(client, last, "COMPLETED", logs="true")
    assert "error" not in done and done["metrics"]["inference_time"] >= 0
    assert done["logs"][-1]["message"] == "Request completed."
    for handle in (running, queued):
        result = client.get(handle["response_url"])
        assert result.status_code == 400 and result.json()["error_type"] == "request_cancelled"
        assert result.headers[billing.BILLING_HEADER] == "0"
    result = client.get(last["response_url"])
    assert result.status_code == 200 and result.headers[billing.BILLING_HEADER] == "5"
    assert client.put(last["cancel_url"]).json() == {"status": "ALREADY_COMPLETED"}

    rows = usage(client)
    assert {rid: (row["status"], row["seconds"]) for rid, row in rows.items()} == {
        running["request_id"]: ("CANCELLED", 0),
        queued["request_id"]: ("CANCELLED", 0),
        last["request_id"]: ("COMPLETED", 5),
    }
    TALLY.count_jobs([row["status"] for row in rows.values()])


def test_text_to_audio_queue_at_app_root(client):
    handle = submit(client, {"tags": "rock", "duration": 5}, path="")
    wait_status(client, handle, "COMPLETED")
    assert client.get(handle["response_url"]).json()["tags"] == "rock"


def test_generation_exception_fails_the_job_bills_zero_and_server_keeps_serving(client, engine):
    engine.fail_with = RuntimeError("decoder exploded")
    handle = submit(client, {"prompt": "x", "duration": 5})
    status = wait_status(client, handle, "COMPLETED")
    assert "decoder exploded" in status["error"]
    result = client.get(handle["response_url"])
    assert result.status_code == 500 and "decoder exploded" in result.json()["detail"]
    assert result.headers[billing.BILLING_HEADER] == "0"
    sync = client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5})
    assert sync.status_code == 500 and sync.headers[billing.BILLING_HEADER] == "0"

    engine.fail_with = None
    ok = client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5})
    assert ok.status_code == 200
    assert [row["seconds"] for row in usage(client).values()] == [0, 0, 5]
    TALLY.count_jobs([row["status"] for row in usage(client).values()])
    TALLY.fault()
    TALLY.fault()


def test_engine_input_error_is_a_422_naming_the_field(client, engine):
    engine.fail_with = InputError("lyrics", "tokenizes to nothing")
    response = client.post("/", json={"tags": "x", "lyrics": "\u200b", "duration": 5})
    assert response.status_code == 422 and response.headers[billing.BILLING_HEADER] == "0"
    assert response.json()["detail"][0]["loc"] == ["body", "lyrics"]


def test_unknown_requests_and_paths_are_404(client):
    missing = "00000000-0000-4000-8000-000000000000"
    for method, path in (("GET", f"/{APP}/requests/{missing}/status"), ("GET", f"/{APP}/requests/{missing}"),
                         ("PUT", f"/{APP}/requests/{missing}/cancel"), ("POST", f"/{APP}/not-an-endpoint")):
        response = client.request(method, path, json={})
        assert response.status_code == 404 and response.headers[billing.BILLING_HEADER] == "0"


# -- validation ------------------------------------------------------------------------------------

INVALID = [
    ({}, ["body", "prompt"]),
    ({"prompt": "x", "duration": 4}, ["body", "duration"]),
    ({"prompt": "x", "duration": 241}, ["body", "duration"]),
    ({"prompt": "x", "number_of_steps": "many"}, ["body", "number_of_steps"]),
    ({"prompt": "x", "scheduler": "ddim"}, ["body", "scheduler"]),
    ({"prompt": "x", "guidance_scale": float("nan")}, ["body", "guidance_scale"]),
    ({"prompt": "x", "seed": 2**64}, ["body", "seed"]),
    ({"prompt": ["not", "text"]}, ["body", "prompt"]),
]


@pytest.mark.parametrize(("payload", "loc"), INVALID)
@pytest.mark.parametrize("path", ["/prompt-to-audio", f"/{APP}/prompt-to-audio", f"/run/{APP}/prompt-to-audio"])
def test_invalid_input_is_422_naming_the_field(client, path, payload, loc):
    body = json.dumps(payload)  # allows the NaN literal, as lenient JSON encoders send it
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.headers[billing.BILLING_HEADER] == "0"
    detail = response.json()["detail"]
    assert any(error["loc"] == loc for error in detail), detail
    assert all(set(error) == {"loc", "msg", "type"} for error in detail)
    assert client.app.state.store.usage_records() == []


@pytest.mark.parametrize("path", ["/prompt-to-audio", f"/{APP}/prompt-to-audio"])
@pytest.mark.parametrize("body", [b"{not json", b'{"prompt": "\xff\xfe"}', b"", b"[1, 2]"])
def test_malformed_bodies_are_422(client, path, body):
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][0] == "body"


def test_unknown_fields_are_ignored_as_fal_does(client, engine):
    response = client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5, "format": "mp3"})
    assert response.status_code == 200
    assert not hasattr(engine.calls[-1], "format")


@pytest.mark.parametrize("path", ["/prompt-to-audio", f"/{APP}/prompt-to-audio"])
def test_oversized_body_is_413(client, path):
    response = client.post(path, json={"prompt": "x" * 300_000})
    assert response.status_code == 413 and response.headers[billing.BILLING_HEADER] == "0"


# -- auth and isolation ----------------------------------------------------------------------------


def test_every_route_but_health_needs_a_valid_key(keyed):
    rid = "00000000-0000-4000-8000-000000000000"
    routes = [("POST", "/prompt-to-audio"), ("POST", "/"), ("POST", f"/{APP}/prompt-to-audio"),
              ("POST", f"/run/{APP}"), ("GET", f"/{APP}/requests/{rid}/status"), ("GET", f"/{APP}/requests/{rid}"),
              ("PUT", f"/{APP}/requests/{rid}/cancel"), ("GET", f"/files/{rid}.wav"), ("GET", "/openapi.json"),
              ("GET", "/docs")]
    for authorization in (None, "Key wrong", f"Bearer {KEY_A}", f"Key {KEY_A}x", "Key "):
        headers = {"Authorization": authorization} if authorization else {"Authorization": ""}
        for method, path in routes:
            response = keyed.request(method, path, json={"prompt": "x"}, headers=headers)
            assert response.status_code == 401, (authorization, method, path)
            assert response.headers[billing.BILLING_HEADER] == "0"
    assert keyed.get("/health", headers={"Authorization": ""}).status_code == 200
    assert keyed.get("/openapi.json").status_code == 200


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch):
    """Every configured key is compared with hmac.compare_digest, matched or not, first or last."""
    from acestep_app.serving import auth

    compared: list[tuple[bytes, bytes]] = []
    real_compare = auth.hmac.compare_digest

    def counting_compare(a, b):
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting_compare)
    keys = auth.Keys([KEY_A, KEY_B, "key-c:secret"])
    for header, owner in ((f"Key {KEY_A}", keys.owner_of(KEY_A.encode())), (f"Key {KEY_B}", keys.owner_of(KEY_B.encode())),
                          ("Key key-a:secreX", None), ("Key ", None), (None, None), (f"Bearer {KEY_A}", None)):
        compared.clear()
        assert keys.authenticate(header) == owner
        assert len(compared) == 3, header


def test_keys_are_isolated_and_file_urls_are_signed(keyed):
    response = keyed.post("/prompt-to-audio", json={"prompt": "x", "duration": 5})
    assert response.status_code == 200
    url = response.json()["audio"]["url"]
    assert "?exp=" in url and "&sig=" in url
    handle = submit(keyed, {"prompt": "y", "duration": 5})
    wait_status(keyed, handle, "COMPLETED")

    other = {"Authorization": f"Key {KEY_B}"}
    for method, target in (("GET", handle["status_url"]), ("GET", handle["response_url"]),
                           ("PUT", handle["cancel_url"])):
        assert keyed.request(method, target, headers=other).status_code == 404
    file_path = url.split("?")[0]
    assert keyed.get(file_path, headers=other).status_code == 404
    assert keyed.get(file_path).status_code == 200
    assert keyed.get(url, headers={"Authorization": ""}).status_code == 200  # signed link, no header
    assert keyed.get(file_path + "?sig=" + "0" * 32, headers={"Authorization": ""}).status_code == 404
    assert keyed.get(file_path, headers={"Authorization": ""}).status_code == 401


def test_file_paths_cannot_escape_or_guess(client):
    response = client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5})
    rid = response.headers["x-fal-request-id"]
    for path in ("/files/../jobs.sqlite3", "/files/..%2Fjobs.sqlite3", "/files/%2e%2e%2fjobs.sqlite3",
                 "/files/jobs.sqlite3", f"/files/{rid}.wav.partial", f"/files/{rid.upper()}.wav",
                 "/files/00000000-0000-4000-8000-000000000000.wav"):
        got = client.get(path)
        assert got.status_code in (404, 405), path  # 405: a decoded %2F made it a queue-shaped path
        assert b"SQLite" not in got.content


def test_unwritable_data_dir_fails_at_creation(engine, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(RuntimeError, match="cannot open the job database"):
        create_app(engine, Settings(), blocker / "data")


def test_full_disk_on_store_fails_the_job_with_a_reason(client, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("acestep_app.serving.storage.AudioStore.save", no_space)
    handle = submit(client, {"prompt": "x", "duration": 5})
    status = wait_status(client, handle, "COMPLETED")
    assert status["error_type"] == "storage_error" and "No space left" in status["error"]
    assert list(usage(client).values())[0]["seconds"] == 0
    monkeypatch.undo()
    assert client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5}).status_code == 200  # still serving
    TALLY.count_jobs([row["status"] for row in usage(client).values()])
    TALLY.fault()


# -- the real Engine on a tiny random checkpoint ---------------------------------------------------

REAL_SAMPLE_RATE = 48_000
LATENT_STEP_SECONDS = 4096 / 44100  # the latent grid floors the requested duration by less than this


@pytest.fixture()
def real_client(tiny_engine, tmp_path):
    with TestClient(create_app(tiny_engine, Settings(), tmp_path / "data")) as client:
        yield client


def check_real_wav(client, response, duration: float) -> None:
    """48 kHz stereo WAV, the requested duration floored to the latent grid, billed exactly."""
    audio = response.json()["audio"]
    data, sample_rate = soundfile.read(io.BytesIO(client.get(audio["url"]).content), always_2d=True)
    seconds = data.shape[0] / sample_rate
    assert (sample_rate, data.shape[1]) == (REAL_SAMPLE_RATE, 2)
    assert duration - LATENT_STEP_SECONDS < seconds <= duration
    assert np.isfinite(data).all() and np.abs(data).max() > 0
    assert response.headers[billing.BILLING_HEADER] == billing.header_value(billing.billable_seconds(
        data.shape[0], sample_rate))
    row = usage(client)[response.headers["x-fal-request-id"]]
    assert (row["status"], row["seconds"]) == ("COMPLETED", billing.billable_seconds(data.shape[0], sample_rate))


REAL_CASES = [
    ("/prompt-to-audio", "/prompt-to-audio", {"prompt": "lofi beat on the boardwalk", "duration": 5.5}),
    ("/", "", {"tags": "rock, guitar", "lyrics": "[verse]\nla la la", "duration": 5}),
]


@pytest.mark.parametrize(("sync_path", "queue_path", "payload"), REAL_CASES)
def test_real_engine_sync_and_queued_requests_return_the_wav_and_bill_it(
        real_client, sync_path, queue_path, payload):
    payload = {**payload, "number_of_steps": 3, "seed": 11}
    sync = real_client.post(sync_path, json=payload)
    assert sync.status_code == 200, sync.text
    assert sync.json()["seed"] == 11
    check_real_wav(real_client, sync, payload["duration"])

    handle = submit(real_client, payload, path=queue_path)
    done = wait_status(real_client, handle, "COMPLETED", timeout=60, logs="true")
    assert "error" not in done, done
    assert any("tiny random checkpoint" in entry["message"] for entry in done["logs"])
    queued = real_client.get(handle["response_url"])
    assert queued.status_code == 200
    check_real_wav(real_client, queued, payload["duration"])
    assert (queued.json()["tags"], queued.json()["lyrics"]) == (sync.json()["tags"], sync.json()["lyrics"])


def test_full_disk_on_the_job_database_is_a_clear_503_and_the_server_recovers(client, monkeypatch):
    import sqlite3

    def disk_full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr("acestep_app.serving.stores.sqlite.SqliteJobStore.create", disk_full)
    for path in ("/prompt-to-audio", f"/{APP}/prompt-to-audio"):
        response = client.post(path, json={"prompt": "x", "duration": 5})
        assert response.status_code == 503 and response.json()["error_type"] == "storage_error"
        assert "disk is full" in response.json()["detail"] and response.headers[billing.BILLING_HEADER] == "0"
    monkeypatch.undo()
    assert client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5}).status_code == 200
    TALLY.fault()


def test_full_disk_when_recording_a_result_fails_the_job_with_the_reason(client, monkeypatch):
    from acestep_app.serving.jobs import JobStatus
    from acestep_app.serving.stores.sqlite import SqliteJobStore

    real_finish = SqliteJobStore.finish

    def no_space_for_results(store, job, outcome):
        if outcome.status is JobStatus.COMPLETED:
            raise OSError(28, "No space left on device")
        return real_finish(store, job, outcome)

    monkeypatch.setattr(SqliteJobStore, "finish", no_space_for_results)
    response = client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5})
    assert response.status_code == 500 and response.headers[billing.BILLING_HEADER] == "0"
    assert response.json()["error_type"] == "storage_error" and "No space left" in response.json()["detail"]
    monkeypatch.undo()
    assert client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5}).status_code == 200
    TALLY.count_jobs([row["status"] for row in usage(client).values()])
    TALLY.fault()


def test_real_engine_cancel_while_queued_and_running_bills_nothing_and_keeps_serving(real_client):
    slow = {"tags": "slow", "duration": 5, "number_of_steps": 60, "seed": 1}
    running = submit(real_client, slow, path="")
    queued = submit(real_client, {**slow, "number_of_steps": 3}, path="")
    wait_status(real_client, running, "IN_PROGRESS", timeout=60)
    assert real_client.put(queued["cancel_url"]).status_code == 202
    assert real_client.put(running["cancel_url"]).status_code == 202  # stops at the engine's next step
    for handle in (running, queued):
        assert wait_status(real_client, handle, "COMPLETED", timeout=60)["error_type"] == "request_cancelled"
    after = real_client.post("/", json={**slow, "number_of_steps": 3})
    assert after.status_code == 200
    rows = usage(real_client)
    assert [(rows[h["request_id"]]["status"], rows[h["request_id"]]["seconds"]) for h in (running, queued)] == [
        ("CANCELLED", 0), ("CANCELLED", 0)]
    steps_run = [e for e in real_client.get(running["status_url"], params={"logs": "true"}).json()["logs"]
                 if e["message"].startswith("step ")]
    assert len(steps_run) < 60
    TALLY.count_jobs([row["status"] for row in rows.values()])


# -- webhooks: ?fal_webhook= on queue submit, and the on_finished hook --------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "ftp://example.com/x",
                                 "not a url"])
def test_a_refused_webhook_url_is_a_422_naming_fal_webhook(client, url):
    response = client.post(f"/{APP}/prompt-to-audio", params={"fal_webhook": url}, json={"prompt": "x", "duration": 5})
    assert response.status_code == 422 and response.headers[billing.BILLING_HEADER] == "0"
    (item,) = response.json()["detail"]
    assert item["loc"] == ["query", "fal_webhook"] and item["msg"]
    assert client.app.state.store.count(JobStatus.IN_QUEUE) + len(usage(client)) == 0  # never became a job


def test_the_webhook_url_is_kept_on_the_job_when_private_urls_are_allowed(engine, tmp_path):
    settings = Settings.from_dict({"security": {"allow_private_urls": True}})
    with TestClient(create_app(engine, settings, tmp_path / "data")) as client:
        handle = submit_with(client, {"prompt": "x", "duration": 5}, "http://127.0.0.1:9/hook")
        assert client.app.state.store.get(handle["request_id"]).webhook_url == "http://127.0.0.1:9/hook"
        metadata = client.post(f"/{APP}/prompt-to-audio", params={"fal_webhook": "http://169.254.169.254/"},
                               json={"prompt": "x", "duration": 5})
        assert metadata.status_code == 422  # cloud metadata stays refused


def submit_with(client, payload: dict, webhook: str) -> dict:
    response = client.post(f"/{APP}/prompt-to-audio", params={"fal_webhook": webhook}, json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def test_on_finished_runs_once_per_job_on_every_terminal_transition(engine, tmp_path):
    finished: list = []
    app = create_app(engine, Settings(), tmp_path / "data", on_finished=finished.append)
    with TestClient(app) as client:
        done = client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5}).headers["x-fal-request-id"]
        engine.fail_with = RuntimeError("boom")
        failed = client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5}).headers["x-fal-request-id"]
        engine.fail_with, engine.hold = None, threading.Event()
        engine.started.clear()
        running = submit(client, {"prompt": "a", "duration": 5})
        assert engine.started.wait(5)
        queued = submit(client, {"prompt": "b", "duration": 5})
        for handle in (queued, running, queued):  # a second cancel changes nothing
            client.put(handle["cancel_url"])
        engine.hold.set()
        wait_status(client, running, "COMPLETED")
        wait_until(lambda: len(finished) >= 4)
    statuses = {job.request_id: job.status for job in finished}
    assert len(finished) == 4 and statuses == {
        done: JobStatus.COMPLETED, failed: JobStatus.FAILED,
        running["request_id"]: JobStatus.CANCELLED, queued["request_id"]: JobStatus.CANCELLED}


def test_hooks_see_submits_with_their_base_url_and_extra_routes(engine, tmp_path):
    from fastapi import APIRouter

    submitted = []
    extra = APIRouter()
    extra.add_api_route("/.well-known/extra.json", lambda: {"keys": []}, methods=["GET"])
    app = create_app(engine, Settings(), tmp_path / "data", on_submitted=lambda job, base: submitted.append(
        (job.request_id, base)), routers=[extra])
    with TestClient(app) as client:
        handle = submit(client, {"prompt": "x", "duration": 5})
        assert submitted == [(handle["request_id"], "http://testserver/")]
        assert client.get("/.well-known/extra.json").json() == {"keys": []}
