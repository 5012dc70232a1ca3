"""The ACE-Step 1.5 family on the three hosts (local server, fal App ``AceStep15``, Modal class ``AceStep15``),
in-process on the tiny 1.5 checkpoint: the same requests get the same answers, billing and errors.

Each host runs the real 1.5 engine (the tiny checkpoint renders in about a second); the fal App is
synchronous (fal's platform runs its queue), the other two serve the queue routes as well.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from acestep_app.acestep_15.schema import MusicOutput
from acestep_app.serving import billing
from acestep_app.settings import INFRA_ENV, Settings
from conftest import wait_until, write_infra
from fal_harness import PROJECT_ROOT, load_module, serve

pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally and will not have access:UserWarning")

KEY = "host-key"
AUTH = {"Authorization": f"Key {KEY}"}
PRICE = 0.0003
MUSIC = {"prompt": "dreamy synth-pop", "lyrics": "[verse]\nneon nights", "duration": 1.0, "num_inference_steps": 2,
         "seed": 5, "thinking": False}


def wav_uri(seconds: float = 1.0, rate: int = 24000) -> str:
    time = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * time)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([tone, tone], axis=1), rate, format="WAV")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def infra15(tiny15_checkpoint, tmp_path_factory):
    """Only the 1.5 family, on the tiny checkpoint (official layout, with its tiny planner LM)."""
    return write_infra(tmp_path_factory.mktemp("infra15") / "infra.toml", app={"families": ["acestep-1.5"]},
                       engine={"device": "cpu", "prompt_backend": "fallback"},
                       models={"acestep-1.5": {"weights_dir": str(tiny15_checkpoint)}})


@pytest.fixture(scope="module")
def local15(infra15, tmp_path_factory):
    from acestep_app.engine.family import get_family
    from acestep_app.hosts.local import create_app

    settings = Settings.load(infra15)
    engine = get_family("acestep-1.5").load_engine(settings)
    app = create_app(engine, settings, tmp_path_factory.mktemp("local15"), api_key=[KEY])
    with TestClient(app) as client:
        yield "local", client, AUTH, client.app.state.store.usage_records


@pytest.fixture(scope="module")
def fal15(infra15, tmp_path_factory):
    module = load_module(PROJECT_ROOT / "deploy" / "fal_app.py", "acestep_fal_app_15", {INFRA_ENV: str(infra15)})
    with serve(module.AceStep15, {module.FILE_REPOSITORY_ENV: "in_memory"}, home=tmp_path_factory.mktemp("home")) as (
            _, client):
        yield "fal", client, {}, None


@pytest.fixture(scope="module")
def modal15(infra15, tmp_path_factory):
    from acestep_app.serving.stores.modal import ModalJobStore, VolumeFiles
    from modal_harness import InMemoryDict, ThreadCalls

    module = load_module(PROJECT_ROOT / "deploy" / "modal_app.py", "acestep_modal_app_15", {INFRA_ENV: str(infra15)})
    store = ModalJobStore(InMemoryDict(), tmp_path_factory.mktemp("modal15") / "files")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(INFRA_ENV, str(infra15))
        patch.setattr(module, "job_store", lambda: store)
        server = module.AceStep15()
        calls = ThreadCalls(server.run_job.local)
        web = module.build_web(store, calls, [KEY], VolumeFiles(store.files_root, reload=lambda: None),
                               Settings.load(infra15))
        with TestClient(web) as client:
            yield "modal", client, AUTH, store.usage_records
        calls.shutdown()


@pytest.fixture(scope="module")
def hosts(local15, fal15, modal15):
    return [local15, fal15, modal15]


def post(host, path: str, body: dict):
    _, client, headers, _ = host
    return client.post(path, json=body, headers=headers)


def test_text_to_music_is_served_and_billed_alike(hosts):
    answers = []
    for host in hosts:
        response = post(host, "/", MUSIC)
        assert response.status_code == 200, (host[0], response.text)
        output = MusicOutput.model_validate(response.json())
        assert (output.seed, output.prompt, output.lyrics) == (5, MUSIC["prompt"], MUSIC["lyrics"])
        assert response.headers[billing.BILLING_HEADER] == "1", host[0]  # one second of returned audio
        answers.append({k: v for k, v in response.json().items() if k != "audio"})
        if host[3] is not None:  # local and Modal keep a usage ledger at the family's price
            record = host[3]()[-1]
            assert record.seconds == pytest.approx(1.0) and record.price_usd == pytest.approx(PRICE)
    assert answers == [answers[0]] * len(hosts)


def test_the_published_defaults_follow_the_variant_and_the_planner(hosts):
    for name, client, headers, _ in hosts:
        schema = client.get("/openapi.json", headers=headers).json()["components"]["schemas"]["TextToMusicInput"]
        properties = schema["properties"]
        assert properties["num_inference_steps"]["default"] == 8 and properties["shift"]["default"] == 3, name
        assert properties["thinking"]["default"] is True, name  # a planner is configured


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/", {"duration": 5}, "prompt"),
    ("/", {"prompt": "x", "duration": 601}, "duration"),
    ("/", {"prompt": "x", "key_scale": "H major"}, "key_scale"),
    ("/repaint", {"prompt": "x", "source_audio_url": "data:audio/wav;base64,AA", "repaint_strength": 0}, "repaint_strength"),
])
def test_schema_errors_name_the_same_field_on_every_host(hosts, path, body, field):
    for host in hosts:
        response = post(host, path, body)
        assert response.status_code == 422 and response.headers[billing.BILLING_HEADER] == "0", host[0]
        assert response.json()["detail"][0]["loc"] == ["body", field], (host[0], response.json())


def test_repaint_and_cover_take_audio_urls(hosts):
    song = wav_uri()
    for host in hosts:
        repainted = post(host, "/repaint", {"source_audio_url": song, "start_time": 0.2, "end_time": 0.6,
                                            "prompt": "brass", "num_inference_steps": 2, "seed": 1})
        assert repainted.status_code == 200 and repainted.headers[billing.BILLING_HEADER] == "1", host[0]
        covered = post(host, "/cover", {"source_audio_url": song, "reference_audio_url": song, "prompt": "folk",
                                        "duration": 0.8, "num_inference_steps": 2, "seed": 2})
        assert covered.status_code == 200 and covered.headers[billing.BILLING_HEADER] == "0.8", host[0]


def test_a_span_outside_the_song_is_an_unbilled_field_error_on_every_host(hosts):
    answers = []
    for host in hosts:
        response = post(host, "/repaint", {"source_audio_url": wav_uri(), "start_time": 30, "prompt": "x"})
        assert response.headers[billing.BILLING_HEADER] == "0", host[0]
        answers.append((response.status_code, response.json()))
    assert answers[0][0] == 422 and answers[0][1]["detail"][0]["loc"] == ["body", "start_time"]
    assert answers == [answers[0]] * len(hosts)


def test_the_queue_routes_by_the_fal_app_id(local15, modal15):
    for name, client, headers, _ in (local15, modal15):
        handle = client.post("/fal-ai/ace-step-1.5/repaint", headers=headers,
                             json={"source_audio_url": wav_uri(), "prompt": "x", "num_inference_steps": 2}).json()
        status = wait_until(lambda: (body := client.get(handle["status_url"], headers=headers).json())[
            "status"] == "COMPLETED" and body, 60)
        assert "error" not in status or status["error"] is None, (name, status)
        result = client.get(handle["response_url"], headers=headers)
        assert result.status_code == 200 and MusicOutput.model_validate(result.json()).seed >= 0, name


def test_webhooks_and_the_output_format_work_for_1_5(infra15, tmp_path):
    """A queued 1.5 request with ``?fal_webhook=`` is delivered signed, its payload the result URL's answer,
    in the configured output format (FLAC here), as for v1."""
    import json

    from acestep_app.engine.family import get_family
    from acestep_app.hosts.local import create_app
    from acestep_app.serving.webhooks.verify import verify
    from test_webhooks import fast_settings
    from webhook_receiver import Receiver

    settings = Settings.load(infra15)
    settings = settings.model_copy(update={
        "output": settings.output.model_copy(update={"format": "flac"}),
        "security": settings.security.model_copy(update={"allow_private_urls": True}),
        "webhooks": fast_settings()})
    engine = get_family("acestep-1.5").load_engine(settings)
    app = create_app(engine, settings, tmp_path / "data", api_key=[KEY])
    with Receiver() as receiver, TestClient(app) as client:
        handle = client.post(f"/fal-ai/ace-step-1.5?fal_webhook={receiver.url}", json=MUSIC, headers=AUTH).json()
        (delivered,) = receiver.wait_for(1, timeout=60)
        answer = client.get(handle["response_url"], headers=AUTH)
        keys = client.get("/.well-known/jwks.json").json()
    body = json.loads(delivered.body)
    assert verify(delivered.headers, delivered.body, keys) and body["status"] == "OK"
    assert body["request_id"] == handle["request_id"] and body["payload"] == answer.json()
    assert answer.json()["audio"]["content_type"] == "audio/flac" and answer.json()["seed"] == MUSIC["seed"]


def test_thinking_is_on_by_default_and_the_plan_is_reported_on_every_host(hosts):
    """A request that leaves ``thinking`` at its default runs the tiny planner on every host: the codes
    reach the DiT (duration x 5 of them), the response names what the planner decided, and the queue's
    logs show the planner's metadata."""
    planned = {key: value for key, value in MUSIC.items() if key != "thinking"} | {"duration": 2.0}
    answers = []
    for host in hosts:
        response = post(host, "/", planned)
        assert response.status_code == 200, (host[0], response.text)
        body = response.json()
        assert body["audio_code_count"] == 10 and "audio_codes" in body["planned"], host[0]
        assert {"prompt", "bpm", "key_scale", "time_signature", "vocal_language"} <= set(body["planned"]), host[0]
        assert response.headers[billing.BILLING_HEADER] == "2", host[0]
        answers.append({k: v for k, v in body.items() if k not in ("audio", "planner_seconds")})
    assert answers == [answers[0]] * len(hosts)  # the request's seed drives the planner too
    for name, client, headers, _ in hosts:
        if name == "fal":
            continue  # fal's platform keeps the logs; its App is called synchronously here
        handle = client.post("/fal-ai/ace-step-1.5", headers=headers, json=planned).json()
        status = wait_until(lambda: (body := client.get(handle["status_url"] + "?logs=true", headers=headers).json())[
            "status"] == "COMPLETED" and body, 60)
        lines = [entry["message"] if isinstance(entry, dict) else entry for entry in status["logs"]]
        assert any("metadata from the LM" in line and "keyscale" in line for line in lines), (name, lines)
