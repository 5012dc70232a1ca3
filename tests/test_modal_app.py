"""deploy/modal_app.py without a Modal token: import, the inference class run locally on a tiny checkpoint,
and the web app in-process over an in-memory ``modal.Dict`` and a thread-pool runner (tests/modal_harness.py)."""

from __future__ import annotations

import argparse
import threading
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from modal._utils.function_utils import parse_gpu_config

from acestep_app.serving.jobs import JobStatus, read_usage_dir
from acestep_app.engine.family import get_family
from acestep_app.serving.endpoints import EndpointRegistry
from acestep_app.serving.stores.modal import ModalJobStore, VolumeFiles, finished_event, run_job
from acestep_app.acestep_v1.schema import PromptToAudioOutput, TextToAudioOutput
from acestep_app.settings import INFRA_ENV, REPO_INFRA_PATH, Settings
from conftest import wait_until
from engine_double import EngineDouble
from metrics_scrape import parse, value
from modal_harness import InMemoryDict, InMemoryQueue, ThreadCalls, load_modal_app

pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally and will not have access:UserWarning")

modal_app = load_modal_app()
KEY, OTHER_KEY = "test-key", "other-key"
AUTH = {"Authorization": f"Key {KEY}"}
V1_ENDPOINTS = EndpointRegistry([get_family("acestep-v1")])
# GPU types Modal documents for `gpu=` (modal.com/docs/guide/gpu); modal 1.6's client only upper-cases
# the string and splits an optional ":count" (modal/_utils/function_utils.py parse_gpu_config).
MODAL_GPU_TYPES = {"T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "RTX-PRO-6000",
                   "H100", "H100!", "H200", "B200", "B200+"}
TEXT_INPUT = {"tags": "lofi, chill", "lyrics": "[inst]", "duration": 5, "number_of_steps": 3, "seed": 7}
PROMPT_INPUT = {"prompt": "a calm piano piece", "duration": 5, "number_of_steps": 3, "seed": 3, "instrumental": True}


@pytest.fixture(scope="module")
def runtime(tiny_infra, tmp_path_factory):
    """The tiny infra.toml, a files dir standing in for the Volume, an in-memory Dict for the registry."""
    root = tmp_path_factory.mktemp("modal")
    store = ModalJobStore(InMemoryDict(), root / "files")
    patch = pytest.MonkeyPatch()
    patch.setenv(INFRA_ENV, str(tiny_infra))
    patch.setenv(modal_app.FILES_DIR_ENV, str(root / "files"))
    patch.setattr(modal_app, "job_store", lambda: store)
    yield store
    patch.undo()


@pytest.fixture(scope="module")
def inference(runtime):
    return modal_app.AceStep()  # @modal.enter runs on its first .local() call, once


def web_client(store, run, keys=(KEY, OTHER_KEY), workers: int = 1, on_finished=None):
    calls = ThreadCalls(run, workers)
    files = VolumeFiles(store.files_root, reload=lambda: None)
    web = modal_app.build_web(store, calls, list(keys), files, Settings.load(), on_finished=on_finished)
    return TestClient(web), calls


@pytest.fixture
def client(runtime, inference):
    client, calls = web_client(runtime, inference.run_job.local)
    with client:
        yield client
    calls.shutdown()


def wait_until_done(client: TestClient, status_url: str, headers=AUTH, timeout: float = 60.0) -> dict:
    return wait_until(lambda: (body := client.get(status_url, params={"logs": "true"}, headers=headers).json())[
        "status"] == "COMPLETED" and body, timeout, interval=0.05)


def test_module_declares_the_app_from_infra_toml():
    settings = Settings.load(REPO_INFRA_PATH)
    assert modal_app.app.name == settings.app.name
    assert modal_app.SETTINGS.modal == Settings.load().modal
    for name in ("AceStep", "pull_weights", "web", "main"):
        assert hasattr(modal_app, name)
    assert modal_app.SYNC_WAIT_SECONDS < 150  # Modal's web request limit


def test_modal_app_is_wiring_only():
    from pathlib import Path

    source = Path(modal_app.__file__).read_text()
    assert len(source.splitlines()) <= 200
    assert "JSONResponse" not in source and "IN_QUEUE" not in source  # the protocol lives in acestep_app


def test_infra_gpu_is_a_type_modal_accepts():
    configured = Settings.load(REPO_INFRA_PATH).modal.gpu
    for value in [configured] if isinstance(configured, str) else configured:
        parsed = parse_gpu_config(value)
        assert parsed.gpu_type in MODAL_GPU_TYPES and parsed.count >= 1, value


def test_pull_weights_returns_the_configured_checkpoint(runtime, tiny_weights):
    assert modal_app.pull_weights.local() == str(tiny_weights)


def test_run_job_locally_stores_audio_logs_and_usage(runtime, inference):
    job = runtime.create("text-to-audio", "owner-a", TEXT_INPUT)
    assert inference.run_job.local(job.request_id) == "COMPLETED"
    done = runtime.get(job.request_id)
    output = TextToAudioOutput.model_validate(done.result)
    assert done.status is JobStatus.COMPLETED and done.billable_seconds > 0
    assert output.audio.url == f"files/{job.request_id}.wav" and output.seed == 7
    assert (runtime.files_root / "audio" / f"{job.request_id}.wav").stat().st_size == output.audio.file_size
    messages = [entry["message"] for entry in done.logs]
    assert messages[0] == "Request queued." and messages[-1] == "Request completed." and "step 1/3" in messages
    (usage,) = [record for record in runtime.usage_records() if record.request_id == job.request_id]
    assert usage.seconds == done.billable_seconds and usage.owner == "owner-a"
    assert usage.price_usd == pytest.approx(done.billable_seconds * 0.0002)  # float64 product: approx's 1e-6
    assert inference.run_job.local(job.request_id) == "skipped"  # a finished job never runs twice


def test_sync_prompt_to_audio_bills_and_serves_the_file(client):
    response = client.post("/prompt-to-audio", json=PROMPT_INPUT, headers=AUTH)
    assert response.status_code == 200, response.text
    output = PromptToAudioOutput.model_validate(response.json())
    assert float(response.headers["x-fal-billable-units"]) > 0 and output.lyrics == "[inst]"
    audio = client.get(output.audio.url)  # signed URL: no key needed
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert len(audio.content) == output.audio.file_size and output.audio.content_type == "audio/wav"


def test_bearer_token_is_accepted_on_the_base_endpoint(client):
    response = client.post("/", json=TEXT_INPUT, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200 and response.json()["tags"] == "lofi, chill"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Key wrong"}, {"Authorization": "Bearer wrong"}])
def test_missing_or_wrong_key_is_401_and_bills_nothing(client, headers):
    response = client.post("/prompt-to-audio", json=PROMPT_INPUT, headers=headers)
    assert response.status_code == 401 and response.headers["x-fal-billable-units"] == "0"
    assert client.get("/health").status_code == 200


def test_bad_input_is_422_naming_the_field(client, runtime):
    before = set(runtime.registry.keys())
    response = client.post("/prompt-to-audio", json={**PROMPT_INPUT, "duration": 1}, headers=AUTH)
    assert response.status_code == 422 and response.headers["x-fal-billable-units"] == "0"
    assert response.json()["detail"][0]["loc"][-1] == "duration"
    queued = client.post("/me/ace-step/prompt-to-audio", json={"duration": 30}, headers=AUTH)
    assert queued.status_code == 422 and queued.json()["detail"][0]["loc"] == ["body", "prompt"]
    assert set(runtime.registry.keys()) == before  # never became a request


def test_queue_lifecycle_in_fal_shapes(client):
    submitted = client.post("/me/ace-step/prompt-to-audio", json=PROMPT_INPUT, headers=AUTH)
    assert submitted.status_code == 200
    handle = submitted.json()
    assert handle["status"] == "IN_QUEUE" and handle["queue_position"] == 0
    assert handle["status_url"].endswith(f"/me/ace-step/requests/{handle['request_id']}/status")
    status = wait_until_done(client, handle["status_url"])
    assert "error" not in status and status["metrics"]["inference_time"] > 0
    assert any(entry["message"].startswith("step ") for entry in status["logs"])
    result = client.get(handle["response_url"], headers=AUTH)
    assert result.status_code == 200 and float(result.headers["x-fal-billable-units"]) > 0
    assert result.headers["x-fal-request-id"] == handle["request_id"]
    PromptToAudioOutput.model_validate(result.json())
    assert client.put(handle["cancel_url"], headers=AUTH).json() == {"status": "ALREADY_COMPLETED"}
    other = {"Authorization": f"Key {OTHER_KEY}"}
    assert client.get(handle["status_url"], headers=other).status_code == 404  # another key's request


def test_cancel_a_queued_request(runtime, inference):
    release = threading.Event()

    def held_run(request_id):
        release.wait(30)
        return inference.run_job.local(request_id)

    client, calls = web_client(runtime, held_run, keys=[KEY])
    with client:
        first = client.post("/me/ace-step", json=TEXT_INPUT, headers=AUTH).json()
        second = client.post("/me/ace-step", json=TEXT_INPUT, headers=AUTH).json()
        cancel = client.put(second["cancel_url"], headers=AUTH)
        assert cancel.status_code == 202 and cancel.json() == {"status": "CANCELLATION_REQUESTED"}
        release.set()
        assert "error" not in wait_until_done(client, first["status_url"])
        cancelled = wait_until_done(client, second["status_url"])
        assert cancelled["error_type"] == "request_cancelled"
        result = client.get(second["response_url"], headers=AUTH)
        assert result.status_code == 400 and result.headers["x-fal-billable-units"] == "0"
    calls.shutdown()
    (usage,) = [record for record in runtime.usage_records() if record.request_id == second["request_id"]]
    assert usage.status == "CANCELLED" and usage.seconds == 0


# -- Modal's own risks: the 150 s web limit, lost calls, racing containers, Volume reloads ------------


def double_store(tmp_path, on_finished=None):
    store = ModalJobStore(InMemoryDict(), tmp_path / "files")
    engine = EngineDouble(steps=2, sample_rate=100)
    return store, engine, (lambda request_id: run_job(store, engine, V1_ENDPOINTS, Settings(), request_id, on_finished))


def test_sync_call_past_the_wait_limit_redirects_to_a_wait_url_that_curl_l_follows(tmp_path, monkeypatch):
    monkeypatch.setattr(modal_app, "SYNC_WAIT_SECONDS", 0.2)  # stands for the 120 s under Modal's 150 s limit
    store, engine, run = double_store(tmp_path)
    engine.hold = threading.Event()
    client, calls = web_client(store, run)
    with client:
        first = client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5}, headers=AUTH,
                            follow_redirects=False)
        assert first.status_code == 303 and first.headers["x-fal-billable-units"] == "0"
        request_id = first.json()["request_id"]
        assert first.headers["location"] == f"http://testserver/requests/{request_id}/wait"
        again = client.get(first.headers["location"], headers=AUTH, follow_redirects=False)
        assert again.status_code == 303 and again.headers["location"] == first.headers["location"]
        threading.Timer(0.5, engine.hold.set).start()
        followed = client.post("/prompt-to-audio", json={"prompt": "y", "duration": 5}, headers=AUTH)  # as curl -L
        assert followed.status_code == 200 and followed.headers["x-fal-billable-units"] == "5"
        assert client.get(first.headers["location"], headers=AUTH).status_code == 200
        assert client.get(first.headers["location"], headers={"Authorization": f"Key {OTHER_KEY}"}).status_code == 404
    calls.shutdown()


def test_a_cancel_wins_over_a_generation_that_finishes_later_and_nothing_is_billed(tmp_path):
    finished = []  # on_finished from both sides: the web container's cancel and the GPU container's finish
    store, engine, run = double_store(tmp_path, on_finished=finished.append)
    engine.hold = threading.Event()
    client, calls = web_client(store, run, on_finished=finished.append)
    with client:
        handle = client.post("/me/ace-step", json={"tags": "x", "duration": 5}, headers=AUTH).json()
        assert engine.started.wait(10)
        assert client.put(handle["cancel_url"], headers=AUTH).status_code == 202
        engine.hold.set()  # the GPU side finishes its steps after the cancel was recorded
        calls.calls[handle["request_id"]].result(10)
        status = wait_until_done(client, handle["status_url"])
        assert status["error_type"] == "request_cancelled"
    calls.shutdown()
    job = store.get(handle["request_id"])
    assert job.status is JobStatus.CANCELLED and job.billable_seconds == 0
    assert [(r.status, r.seconds) for r in store.usage_records()] == [("CANCELLED", 0)]
    assert [(job.request_id, job.status) for job in finished] == [(handle["request_id"], JobStatus.CANCELLED)]


def test_registry_keys_have_one_writer_each_so_no_update_is_lost(tmp_path):
    store, engine, run = double_store(tmp_path)
    job = store.create("text-to-audio", "owner", {"tags": "x", "duration": 5}, webhook_url="https://example.com/hook")
    store.set_call(job.request_id, "fc-1")
    run(job.request_id)
    keys = store.registry.keys()
    assert sorted(key.split(":")[1] for key in keys if key.startswith(job.request_id)) == ["call", "job", "outcome", "run"]
    # the owner's history: a slot claimed once (put if absent), and a hint that only speeds up the next claim
    assert sorted(key for key in keys if not key.startswith(job.request_id)) == ["owner:history", "owner:history:0"]
    done = store.get(job.request_id)
    assert (done.owner, done.webhook_url, done.input["tags"], store.call_id(job.request_id)) == (
        "owner", "https://example.com/hook", "x", "fc-1")
    assert done.status is JobStatus.COMPLETED and len([e for e in done.logs if e["message"].startswith("denoising")]) == 2


def test_history_lists_an_owners_requests_newest_first_even_when_containers_race(tmp_path):
    shared = InMemoryDict()
    web_a, web_b = ModalJobStore(shared, tmp_path / "files"), ModalJobStore(shared, tmp_path / "files")
    first = web_a.create("text-to-audio", "alice", {"tags": "a"})
    shared.put("alice:history", 0)  # a container whose hint fell behind (it wrote before another's claim)
    second = web_b.create("prompt-to-audio", "alice", {"prompt": "b"})
    third = web_a.create("text-to-audio", "alice", {"tags": "c"})
    other = web_b.create("text-to-audio", "bob", {"tags": "d"})
    assert [job.request_id for job in web_b.recent("alice", 10)] == [third.request_id, second.request_id,
                                                                     first.request_id]
    assert [job.request_id for job in web_a.recent("alice", 2)] == [third.request_id, second.request_id]
    assert [job.request_id for job in web_a.recent("bob", 10)] == [other.request_id]
    assert web_a.recent("carol", 10) == []


def test_a_lost_generation_call_fails_the_request_unbilled(tmp_path):
    store, engine, _ = double_store(tmp_path)

    def lost(request_id):
        raise ConnectionError("container preempted")

    client, calls = web_client(store, lost)
    with client:
        handle = client.post("/me/ace-step", json={"tags": "x", "duration": 5}, headers=AUTH).json()
        status = wait_until_done(client, handle["status_url"])
        assert status["error_type"] == "generation_failed" and "call failed" in status["error"]
        assert client.get(handle["response_url"], headers=AUTH).headers["x-fal-billable-units"] == "0"
    calls.shutdown()
    assert [(r.status, r.seconds) for r in store.usage_records()] == [("FAILED", 0)]


def test_files_volume_reload_is_retried_while_files_are_open(tmp_path, monkeypatch):
    monkeypatch.setattr(VolumeFiles, "FIRST_DELAY", 0.01)
    store, engine, run = double_store(tmp_path)
    job = store.create("text-to-audio", "owner", {"tags": "x", "duration": 5})
    attempts = []
    hidden = tmp_path / "committed-elsewhere"

    def reload():  # Modal refuses a reload while a download holds a file of the Volume open
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("there are open files preventing the operation")
        hidden.rename(store.files_root / "audio")

    run(job.request_id)
    (store.files_root / "audio").rename(hidden)
    files = VolumeFiles(store.files_root, reload=reload)
    stored = files.open(f"{job.request_id}.wav")
    assert stored is not None and stored.size > 0 and len(attempts) == 3


def test_usage_command_reads_the_modal_ledger(runtime, inference, capsys):
    from acestep_app.cli import usage

    job = runtime.create("text-to-audio", "owner", TEXT_INPUT)
    inference.run_job.local(job.request_id)
    records = read_usage_dir(runtime.files_root / "usage")
    assert usage.run(argparse.Namespace(data_dir=None, usage_dir=runtime.files_root / "usage")) == 0
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert int(lines["all"][0]) == len(records) and float(lines["all"][2]) == pytest.approx(
        sum(r.seconds for r in records), abs=1e-3)  # printed to the millisecond


def test_asgi_function_local_returns_the_app_and_requires_a_key(monkeypatch):
    monkeypatch.setenv(modal_app.API_KEY_ENV, f"{KEY}, {OTHER_KEY}")
    web = modal_app.web.local()
    assert isinstance(web, FastAPI)
    assert {"/prompt-to-audio", "/"} <= {route.path for route in web.routes}
    monkeypatch.delenv(modal_app.API_KEY_ENV)
    with pytest.raises(RuntimeError, match="ACESTEP_API_KEY"):
        modal_app.web.local()


def test_metrics_count_what_gpu_containers_finish_and_what_the_web_container_cancels_once(tmp_path):
    events = InMemoryQueue()  # GPU containers put the jobs they finish; the web container takes them at a scrape
    store = ModalJobStore(InMemoryDict(), tmp_path / "files")
    engine = EngineDouble(steps=1, sample_rate=100)
    calls = ThreadCalls(lambda request_id: run_job(store, engine, V1_ENDPOINTS, Settings(), request_id,
                                                   on_finished=lambda job: events.put(finished_event(job))))
    web = modal_app.build_web(store, calls, [KEY], VolumeFiles(store.files_root, reload=lambda: None),
                              Settings.load(), events=events,
                              stats=lambda: SimpleNamespace(backlog=2, num_running_inputs=1))  # Modal's FunctionStats
    with TestClient(web, client=("127.0.0.1", 50000)) as client:
        assert client.post("/prompt-to-audio", json={"prompt": "x", "duration": 5}, headers=AUTH).status_code == 200
        engine.hold = threading.Event()
        held = client.post("/fal-ai/ace-step", json={"tags": "x", "duration": 7}, headers=AUTH).json()
        assert engine.started.wait(10)
        assert client.put(held["cancel_url"], headers=AUTH).status_code == 202
        engine.hold.set()
        calls.calls[held["request_id"]].result(10)  # the GPU side ended too; the cancel had won
        samples = parse(client.get("/metrics").text)
        again = parse(client.get("/metrics").text)
    calls.shutdown()
    assert value(samples, "acestep_requests_total", endpoint="prompt-to-audio", status="COMPLETED") == 1
    assert value(samples, "acestep_billed_audio_seconds_total", endpoint="prompt-to-audio") == 5.0
    assert value(samples, "acestep_run_seconds_count", endpoint="prompt-to-audio") == 1
    assert value(samples, "acestep_requests_total", endpoint="text-to-audio", status="CANCELLED") == 1
    assert value(samples, "acestep_requests_total", endpoint="text-to-audio", status="COMPLETED") == 0
    assert value(samples, "acestep_requests_submitted_total", endpoint="text-to-audio") == 1
    assert (value(samples, "acestep_queue_depth", state="queued"), value(samples, "acestep_queue_depth", state="running")) \
        == (2, 1)
    requests = {key: count for key, count in samples.items() if key[0].startswith("acestep_requests")}
    assert requests == {key: again[key] for key in requests}  # each event is taken once
    assert events.get_many(10, block=False) == []
