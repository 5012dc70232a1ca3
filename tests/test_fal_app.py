"""deploy/fal_app.py served in-process as on a fal runner: tiny checkpoint, no credentials, no network.

The module is imported with ``$ACESTEP_INFRA`` naming a test ``infra.toml`` whose ``[engine]`` points
at a tiny checkpoint on the CPU; audio goes to fal's ``in_memory`` file repository.
"""

from __future__ import annotations

import base64
import io
import re
import tomllib

import pytest
import soundfile
import torch

from acestep_app.serving import billing
from acestep_app.acestep_v1.endpoints import ENDPOINTS
from acestep_app.errors import InputError
from acestep_app.acestep_v1.schema import PromptToAudioInput, PromptToAudioOutput, TextToAudioInput, TextToAudioOutput
from acestep_app.settings import Settings
from fal_harness import PROJECT_ROOT, load_module, serve

FAST = {"duration": 5, "number_of_steps": 3, "seed": 7}
SEED_FIELD = re.compile(r"^- \*\*`(\w+)`\*\*", re.MULTILINE)


@pytest.fixture(scope="module")
def infra(tiny_infra):
    return tiny_infra


@pytest.fixture(scope="module")
def fal_app(infra):
    return load_module(PROJECT_ROOT / "deploy" / "fal_app.py", "acestep_fal_app", {"ACESTEP_INFRA": str(infra)})


@pytest.fixture(scope="module")
def served(fal_app, tmp_path_factory):
    env = {fal_app.FILE_REPOSITORY_ENV: "in_memory"}
    with serve(fal_app.AceStep, env, home=tmp_path_factory.mktemp("fal-home")) as app_and_client:
        yield app_and_client


@pytest.fixture
def client(served):
    return served[1]


@pytest.fixture
def engine(served):
    return served[0].engine


def decode_wav(audio: dict) -> tuple[int, int]:
    header, _, data = audio["url"].partition(",")
    assert header == "data:audio/wav;base64"
    samples, sample_rate = soundfile.read(io.BytesIO(base64.b64decode(data)))
    return samples.shape[0], sample_rate


def published(schema: dict) -> dict:
    """A component as the App publishes it, less fal's property-order hint (checked to be the field order)."""
    schema = dict(schema)
    if "properties" in schema:
        assert schema.pop("x-fal-order-properties") == list(schema["properties"])
    return schema


def without_null_defaults(schema: dict) -> dict:
    """FastAPI's OpenAPI leaves out ``"default": null`` (the field is optional either way)."""
    if "properties" not in schema:
        return schema
    properties = {name: {k: v for k, v in prop.items() if (k, v) != ("default", None)}
                  for name, prop in schema["properties"].items()}
    return {**schema, "properties": properties}


def test_deploy_settings_come_from_infra_toml_and_pyproject(fal_app, infra):
    settings, app = Settings.load(infra), fal_app.AceStep
    assert app.settings == settings
    assert app.app_name == settings.fal.app_name and app.app_auth == settings.fal.app_auth
    assert (app.machine_type, app.num_gpus) == (settings.fal.machine_type, settings.fal.num_gpus)
    assert app.host_kwargs["keep_alive"] == settings.fal.keep_alive
    assert app.host_kwargs["request_timeout"] == settings.fal.request_timeout
    assert app.host_kwargs["startup_timeout"] == settings.fal.startup_timeout >= 1800
    assert (app.host_kwargs["min_concurrency"], app.host_kwargs["max_concurrency"]) == (
        settings.fal.min_concurrency, settings.fal.max_concurrency)
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert app.requirements == [project["dependencies"] + project["optional-dependencies"]["fal"], ["."]]
    assert app.requirements_context_dir == str(PROJECT_ROOT)


def test_fal_app_is_a_short_declaration_without_protocol_logic(fal_app):
    source = (PROJECT_ROOT / "deploy" / "fal_app.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 200
    for protocol_detail in ("HTTPException", "JSONResponse", "x-fal-error-type", "InputError", "BILLING_HEADER", "header_value"):
        assert protocol_detail not in source, protocol_detail
    routes = {signature.path for signature in fal_app.AceStep(_allow_init=True).collect_routes()}
    assert routes == {endpoint.path for endpoint in ENDPOINTS}  # every registry endpoint, and only those


def test_pinned_weights_go_to_the_persistent_volume(fal_app):
    pulled = fal_app.runner_settings(Settings())
    assert pulled.weights.cache_dir.startswith("/data/.fal/model_weights/")
    assert pulled.weights.revision in pulled.weights.cache_dir
    explicit = Settings.from_dict({"engine": {"weights_dir": "/ckpt"}})
    assert fal_app.runner_settings(explicit) == explicit
    assert isinstance(fal_app.compile_cache(Settings()), type(fal_app.nullcontext()))
    shared = fal_app.compile_cache(Settings.from_dict({"engine": {"compile": True}}))  # not entered: no /data here
    assert shared.gen.gi_code.co_name == "synchronized_inductor_cache"
    assert shared.gen.gi_frame.f_locals["cache_key"].startswith(f"acestep-app/{pulled.weights.revision[:12]}/torch-")


def test_prompt_to_audio(client, capfd):
    response = client.post("/prompt-to-audio", json={"prompt": "a calm piano tune", "instrumental": True, **FAST})
    assert response.status_code == 200, response.text
    output = PromptToAudioOutput.model_validate(response.json())
    assert (output.seed, output.lyrics) == (7, "[inst]")
    assert output.audio.content_type == "audio/wav" and output.audio.file_name.endswith(".wav")
    frames, sample_rate = decode_wav(response.json()["audio"])
    assert output.audio.file_size > 0 and sample_rate == 48000
    assert response.headers[billing.BILLING_HEADER] == billing.header_value(billing.billable_seconds(frames, 48000))
    assert 4.5 < float(response.headers[billing.BILLING_HEADER]) <= 5
    logs = capfd.readouterr().out
    assert all(f"step {step}/3" in logs for step in (1, 2, 3)) and "generated" in logs


def test_text_to_audio_at_root(client):
    response = client.post("/", json={"tags": "jazz, piano", "lyrics": "[verse]\nla la", **FAST})
    assert response.status_code == 200, response.text
    output = TextToAudioOutput.model_validate(response.json())
    assert (output.seed, output.tags, output.lyrics) == (7, "jazz, piano", "[verse]\nla la")
    assert float(response.headers[billing.BILLING_HEADER]) > 4.5


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/prompt-to-audio", {"duration": 5}, "prompt"),
    ("/prompt-to-audio", {"prompt": "x", "duration": 241}, "duration"),
    ("/prompt-to-audio", {"prompt": "x", "scheduler": "ddim"}, "scheduler"),
    ("/", {"tags": "x", "number_of_steps": 2}, "number_of_steps"),
])
def test_invalid_input_is_an_unbilled_422_naming_the_field(client, path, body, field):
    response = client.post(path, json=body)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]
    assert response.headers[billing.BILLING_HEADER] == "0"


def test_engine_input_error_is_a_field_422(client, engine, monkeypatch):
    def reject(request, on_progress=None):
        raise InputError("lyrics", "too long for the duration")

    monkeypatch.setattr(engine, "generate", reject)
    response = client.post("/", json={"tags": "x", **FAST})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body", "lyrics"], "msg": "too long for the duration", "type": "validation_error"}]
    assert response.headers[billing.BILLING_HEADER] == "0"


@pytest.mark.parametrize(("fault", "error_type"), [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "gpu_out_of_memory"),
    (RuntimeError("decoder exploded"), "generation_failed"),
])
def test_runtime_fault_is_unbilled_and_the_runner_keeps_serving(client, engine, monkeypatch, fault, error_type):
    real_generate = engine.generate

    def fail_once(request, on_progress=None):
        monkeypatch.setattr(engine, "generate", real_generate)
        raise fault

    monkeypatch.setattr(engine, "generate", fail_once)
    failed = client.post("/prompt-to-audio", json={"prompt": "x", **FAST})
    assert failed.status_code == 500
    assert "Nothing was billed" in failed.json()["detail"]
    assert failed.headers[billing.BILLING_HEADER] == "0" and failed.headers["x-fal-error-type"] == error_type
    again = client.post("/prompt-to-audio", json={"prompt": "x", **FAST})
    assert again.status_code == 200 and float(again.headers[billing.BILLING_HEADER]) > 0


def test_openapi_schemas_are_the_schema_models(client, shared_dir):
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    for path, input_model, output_model in [
        ("/prompt-to-audio", PromptToAudioInput, PromptToAudioOutput),
        ("/", TextToAudioInput, TextToAudioOutput),
    ]:
        post = spec["paths"][path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        result = post["responses"]["200"]["content"]["application/json"]["schema"]
        assert (body["$ref"], result["$ref"]) == (
            f"#/components/schemas/{input_model.__name__}", f"#/components/schemas/{output_model.__name__}")
        for model in (input_model, output_model):
            expected = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in expected.pop("$defs", {}).items():
                assert published(components[name]) == without_null_defaults(definition), name
            assert published(components[model.__name__]) == without_null_defaults(expected), model.__name__
    seed = (shared_dir / "seed" / "fal-ace-step-prompt-to-audio.md").read_text(encoding="utf-8")
    documented_input, documented_output = (SEED_FIELD.findall(part) for part in seed.split("### Output Schema"))
    assert list(components["PromptToAudioInput"]["properties"]) == documented_input
    assert list(components["PromptToAudioOutput"]["properties"]) == documented_output
