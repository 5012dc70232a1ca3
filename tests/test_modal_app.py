"""deploy/modal_app.py without a Modal token: import, the inference class run locally on a tiny
checkpoint, and the web app in-process (TestClient) over an in-process queue instead of `.spawn()`."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from modal._utils.function_utils import parse_gpu_config

from acestep_app.schema import PromptToAudioOutput, TextToAudioOutput
from acestep_app.settings import INFRA_ENV, REPO_INFRA_PATH, Settings
from acestep_app.tiny import write_tiny_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally and will not have access:UserWarning")

MODAL_APP_PATH = Path(__file__).resolve().parents[1] / "deploy" / "modal_app.py"
KEY, OTHER_KEY = "test-key", "other-key"
AUTH = {"Authorization": f"Key {KEY}"}
# GPU types Modal documents for `gpu=` (modal.com/docs/guide/gpu); modal 1.6's client only upper-cases
# the string and splits an optional ":count" (modal/_utils/function_utils.py parse_gpu_config).
MODAL_GPU_TYPES = {"T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "RTX-PRO-6000",
                   "H100", "H100!", "H200", "B200", "B200+"}
TEXT_INPUT = {"tags": "lofi, chill", "lyrics": "[inst]", "duration": 5, "number_of_steps": 3, "seed": 7}
PROMPT_INPUT = {"prompt": "a calm piano piece", "duration": 5, "number_of_steps": 3, "seed": 3, "instrumental": True}


def load_module():
    spec = importlib.util.spec_from_file_location("modal_app", MODAL_APP_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


modal_app = load_module()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """A tiny checkpoint, an infra.toml that loads it on CPU, and a files dir standing in for the Volume."""
    root = tmp_path_factory.mktemp("modal")
    checkpoint = write_tiny_checkpoint(root / "checkpoint")
    infra = root / "infra.toml"
    infra.write_text(REPO_INFRA_PATH.read_text().replace('weights_dir = ""', f'weights_dir = "{checkpoint}"')
                     .replace('device = "auto"', 'device = "cpu"')
                     .replace('prompt_backend = "transformers"', 'prompt_backend = "fallback"'))
    patch = pytest.MonkeyPatch()
    patch.setenv(INFRA_ENV, str(infra))
    patch.setenv(modal_app.FILES_DIR_ENV, str(root / "files"))
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def inference(runtime):
    return modal_app.AceStep()  # @modal.enter runs on its first .local() call, once


@pytest.fixture
def queue(inference):
    queue = modal_app.InProcessQueue(run=inference.generate.local)
    yield queue
    queue.shutdown()


@pytest.fixture
def client(runtime, queue):
    web = modal_app.create_web_app(queue, [KEY, OTHER_KEY], runtime / "files", Settings.load(), sync_timeout=120)
    with TestClient(web) as client:
        yield client


def wait_until_done(client: TestClient, status_url: str, headers=AUTH, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(status_url, params={"logs": "true"}, headers=headers).json()
        if body["status"] == "COMPLETED":
            return body
        time.sleep(0.05)
    raise AssertionError(f"not done after {timeout}s: {body}")


def test_module_declares_the_app_from_infra_toml():
    settings = Settings.load(REPO_INFRA_PATH)
    assert modal_app.app.name == settings.app.name
    assert modal_app.SETTINGS.modal == Settings.load().modal
    for name in ("AceStep", "pull_weights", "web", "main"):
        assert hasattr(modal_app, name)


def test_infra_gpu_is_a_type_modal_accepts():
    configured = Settings.load(REPO_INFRA_PATH).modal.gpu
    for value in [configured] if isinstance(configured, str) else configured:
        parsed = parse_gpu_config(value)
        assert parsed.gpu_type in MODAL_GPU_TYPES and parsed.count >= 1, value


def test_pull_weights_returns_the_configured_checkpoint(runtime):
    assert modal_app.pull_weights.local() == str(runtime / "checkpoint")


def test_generate_locally_stores_audio_logs_and_usage(runtime, inference):
    requests = {"00000000-0000-4000-8000-000000000001": {"status": "IN_QUEUE", "logs": []}}
    (request_id,) = requests
    outcome = inference.generate.local("text-to-audio", TEXT_INPUT, request_id, "owner-a", requests)
    assert outcome["status"] == "COMPLETED" and outcome["billable_seconds"] > 0
    output = TextToAudioOutput.model_validate(outcome["result"])
    assert output.audio.url == f"files/{request_id}.wav" and output.seed == 7
    assert (runtime / "files" / "audio" / f"{request_id}.wav").stat().st_size == output.audio.file_size
    assert requests[request_id]["status"] == "IN_PROGRESS" and requests[request_id]["logs"]
    usage = json.loads((runtime / "files" / "usage" / f"{request_id}.json").read_text())
    assert usage["seconds"] == outcome["billable_seconds"] and usage["owner"] == "owner-a"
    assert usage["price_usd"] == pytest.approx(outcome["billable_seconds"] * 0.0002)


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


def test_bad_input_is_422_naming_the_field(client, queue):
    response = client.post("/prompt-to-audio", json={**PROMPT_INPUT, "duration": 1}, headers=AUTH)
    assert response.status_code == 422 and response.headers["x-fal-billable-units"] == "0"
    assert response.json()["detail"][0]["loc"][-1] == "duration"
    queued = client.post("/me/ace-step/prompt-to-audio", json={"duration": 30}, headers=AUTH)
    assert queued.status_code == 422 and queued.json()["detail"][0]["loc"] == ["body", "prompt"]
    assert queue.requests == {}  # never became a request


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

    def held_run(*args):
        release.wait(30)
        return inference.generate.local(*args)

    queue = modal_app.InProcessQueue(run=held_run)
    web = modal_app.create_web_app(queue, [KEY], runtime / "files", Settings.load())
    with TestClient(web) as client:
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
    queue.shutdown()
    usage = json.loads((runtime / "files" / "usage" / f"{second['request_id']}.json").read_text())
    assert usage["status"] == "CANCELLED" and usage["seconds"] == 0


def test_asgi_function_local_returns_the_app_and_requires_a_key(monkeypatch):
    monkeypatch.setenv(modal_app.API_KEY_ENV, f"{KEY}, {OTHER_KEY}")
    web = modal_app.web.local()
    assert isinstance(web, FastAPI)
    assert {"/prompt-to-audio", "/"} <= {route.path for route in web.routes}
    monkeypatch.delenv(modal_app.API_KEY_ENV)
    with pytest.raises(RuntimeError, match="ACESTEP_API_KEY"):
        modal_app.web.local()
