"""Per-request ``loras`` on every host (local server, fal App, Modal app) with the real tiny engine, and the
unmodified ``fal_client`` against ``acestep-app serve``.

* With ``[lora].per_request`` on, every endpoint publishes ``loras`` in its OpenAPI; off, the schema is fal's and
  a ``loras`` field is a 422 rather than silently ignored.
* Bad-adapter fuzz: adapter files drawn by hypothesis (random bytes, truncated files, foreign keys, wrong shapes,
  integer and non-finite tensors, oversized files) served over HTTP; on every host each gets the same 422 naming
  ``loras[i].path``, billed 0, and the model is untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import ssl
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as safetensors_bytes

from acestep_app.engine.family import get_family
from acestep_app.serving import billing
from acestep_app.serving.endpoints import EndpointRegistry
from acestep_app.settings import INFRA_ENV, Settings
from conftest import write_infra
from local_http import LocalServer, body_route
from lora_files import V1_TARGETS, adapter_tensors, linear_shapes
from server_process import free_port, running, serve_command, write_self_signed_cert

pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally and will not have access:UserWarning")

KEY = "lora-key"
AUTH = {"Authorization": f"Key {KEY}"}
MAX_ADAPTER_BYTES = 1024 * 1024
BODY = {"tags": "funk", "lyrics": "[verse]\nla la", "duration": 5, "number_of_steps": 3, "seed": 4}
BODY_15 = {"prompt": "dreamy synth-pop", "lyrics": "[verse]\nneon nights", "duration": 1.0, "num_inference_steps": 2,
           "seed": 5, "thinking": False}
DRIVER = Path(__file__).resolve().parent / "fal_client_lora_driver.py"


class AdapterServer:
    """Adapter files over HTTP, each at a fresh path (adapters are fetched once per URL)."""

    def __init__(self):
        self.server = LocalServer({})

    def publish(self, data: bytes) -> str:
        path = f"/{uuid.uuid4().hex}.safetensors"
        self.server.routes[path] = body_route(data)
        return self.server.url(path)


@pytest.fixture(scope="module")
def adapter_server():
    served = AdapterServer()
    with served.server:
        yield served


@dataclass(frozen=True)
class FamilyCase:
    """A model family as these tests drive it: its fal App class, a fast request, the Linear layers to adapt."""

    name: str
    fal_app: str
    body: dict
    target: str  # the layer the bad adapters aim at
    targets: tuple[str, ...]  # the layers the good adapter adapts


FAMILIES = [
    FamilyCase("acestep-v1", "AceStep", BODY, "transformer_blocks.0.attn.to_q", V1_TARGETS),
    FamilyCase("acestep-1.5", "AceStep15", BODY_15, "layers.0.self_attn.to_q", ("to_q", "to_k", "to_v", "to_out.0")),
]


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda case: case.name)
def family(request) -> FamilyCase:
    return request.param


@pytest.fixture(scope="module")
def lora_infra(family, request, tmp_path_factory) -> Path:
    return write_lora_infra(tmp_path_factory.mktemp("lora-infra"), family, request)


def write_lora_infra(root: Path, family: FamilyCase, request) -> Path:
    """infra.toml serving ``family`` alone on its tiny checkpoint, per-request adapters on."""
    lora = {"per_request": True, "cache_dir": str(root / "loras"), "max_download_bytes": MAX_ADAPTER_BYTES}
    engine = {"device": "cpu", "prompt_backend": "fallback"}
    if family.name == "acestep-v1":
        sections = {"engine": {**engine, "weights_dir": str(request.getfixturevalue("tiny_weights"))}}
    else:
        sections = {"app": {"families": [family.name]}, "engine": engine,
                    "models": {family.name: {"weights_dir": str(request.getfixturevalue("tiny15_checkpoint"))}}}
    return write_infra(root / "infra.toml", lora=lora, security={"allow_private_urls": True}, **sections)


@pytest.fixture(scope="module")
def engine(family, lora_infra):
    return get_family(family.name).load_engine(Settings.load(lora_infra))


@pytest.fixture(scope="module")
def good_adapter(family, engine, adapter_server) -> str:
    tensors = adapter_tensors(linear_shapes(engine.pipeline.transformer, family.targets), rank=2, seed=9, std=0.5)
    return adapter_server.publish(safetensors_bytes(tensors))


@pytest.fixture(scope="module")
def hosts(family, lora_infra, engine, tmp_path_factory):
    """(name, client, headers, usage records or None, engine) of the three hosts, per-request LoRA on."""
    from acestep_app.hosts.local import create_app
    from acestep_app.serving.stores.modal import ModalJobStore, VolumeFiles, run_job
    from fal_harness import PROJECT_ROOT, load_module, serve
    from modal_harness import InMemoryDict, ThreadCalls

    lora_settings = Settings.load(lora_infra)
    root = tmp_path_factory.mktemp("lora-hosts")
    env = {INFRA_ENV: str(lora_infra)}
    local = TestClient(create_app(engine, lora_settings, root / "local", api_key=[KEY]))
    store = ModalJobStore(InMemoryDict(), root / "modal")
    registry = EndpointRegistry([get_family(family.name)], lora_settings)
    calls = ThreadCalls(lambda request_id: run_job(store, engine, registry, lora_settings, request_id))
    modal_module = load_module(PROJECT_ROOT / "deploy" / "modal_app.py", f"acestep_modal_lora_{family.fal_app}", env)
    modal = TestClient(modal_module.build_web(store, calls, [KEY], VolumeFiles(store.files_root, reload=lambda: None),
                                              lora_settings))
    fal_module = load_module(PROJECT_ROOT / "deploy" / "fal_app.py", f"acestep_fal_lora_{family.fal_app}", env)
    with local, modal, serve(getattr(fal_module, family.fal_app), {fal_module.FILE_REPOSITORY_ENV: "in_memory"},
                             home=root / "fal-home") as (fal_app, fal):
        yield [("local", local, AUTH, local.app.state.store.usage_records, engine),
               ("fal", fal, {}, None, fal_app.engine),
               ("modal", modal, AUTH, store.usage_records, engine)]
    calls.shutdown()


def weights_digest(engine) -> str:
    digest = hashlib.sha256()
    for parameter in engine.pipeline.transformer.parameters():
        digest.update(parameter.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def post(host, body):
    name, client, headers, usage, _ = host
    before = {record.request_id for record in usage()} if usage else set()
    response = client.post("/", json=body, headers=headers)
    new = [record for record in usage() if record.request_id not in before] if usage else []
    return response, new


def test_openapi_publishes_loras_on_every_endpoint_only_when_per_request(family, hosts):
    for name, client, headers, _, _ in hosts:
        schema = client.get("/openapi.json", headers=headers).json()
        bodies = [operation["post"]["requestBody"]["content"]["application/json"]["schema"]
                  for path, operation in schema["paths"].items() if "post" in operation and "requestBody" in operation["post"]]
        resolved = [schema["components"]["schemas"][body["$ref"].rpartition("/")[2]] for body in bodies]
        served = len(get_family(family.name).endpoints)  # v1: 5, 1.5: 3 (all generate or edit)
        assert len(resolved) == served and all("loras" in model["properties"] for model in resolved), name
        assert schema["components"]["schemas"]["LoraWeight"]["properties"]["scale"]["default"] == 1.0, name
    off = EndpointRegistry([get_family(family.name)], Settings())
    assert all("loras" not in endpoint.input_model.model_fields for endpoint in off.endpoints)


def test_a_request_with_a_good_adapter_is_served_and_billed_on_every_host(family, hosts, good_adapter):
    for host in hosts:
        response, records = post(host, {**family.body, "loras": [{"path": good_adapter, "scale": 0.5}]})
        assert response.status_code == 200, (host[0], response.text)
        assert response.headers[billing.BILLING_HEADER] != "0"
        assert all(record.seconds > 0 for record in records)


def test_loras_is_refused_where_per_request_adapters_are_off(tiny_engine, tmp_path):
    from acestep_app.hosts.local import create_app

    with TestClient(create_app(tiny_engine, Settings(), tmp_path, api_key=[KEY])) as client:
        response = client.post("/", json={**BODY, "loras": [{"path": "me/lora"}]}, headers=AUTH)
        assert "loras" not in json.dumps(client.get("/openapi.json", headers=AUTH).json()["components"]["schemas"])
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "loras"]
    assert response.headers[billing.BILLING_HEADER] == "0"


# -- bad adapters ----------------------------------------------------------------------------------


def tensors(shape_strategy, dtype=torch.float32):
    return shape_strategy.map(lambda shape: torch.full(shape, 0.01, dtype=dtype))


SHAPES = st.tuples(st.integers(1, 6), st.integers(1, 6))
KEY_TEXT = st.text(alphabet="abcdefgh_.0123456789", min_size=1, max_size=30)


@st.composite
def bad_adapter_bytes(draw, module: str, out_features: int, in_features: int) -> bytes:
    """One adapter file that must be refused, of one of several kinds."""
    kind = draw(st.sampled_from(["bytes", "truncated", "foreign keys", "unknown module", "wrong shape",
                                 "rank mismatch", "integer", "non-finite", "too large"]))
    rank = draw(st.integers(1, 4))
    good = {f"{module}.lora_A.weight": torch.full((rank, in_features), 0.01),
            f"{module}.lora_B.weight": torch.full((out_features, rank), 0.01)}
    if kind == "bytes":
        return draw(st.binary(max_size=512))
    if kind == "truncated":
        data = safetensors_bytes(good)
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "foreign keys":
        return safetensors_bytes({draw(KEY_TEXT): draw(tensors(SHAPES))})
    if kind == "unknown module":
        return safetensors_bytes({f"nowhere.{draw(KEY_TEXT)}.lora_A.weight": torch.zeros(rank, 4),
                                  f"nowhere.{draw(KEY_TEXT)}.lora_B.weight": torch.zeros(4, rank)})
    if kind == "wrong shape":
        extra = draw(st.integers(1, 5))
        return safetensors_bytes({f"{module}.lora_A.weight": torch.zeros(rank, in_features + extra),
                                  f"{module}.lora_B.weight": torch.zeros(out_features, rank)})
    if kind == "rank mismatch":
        return safetensors_bytes({f"{module}.lora_A.weight": torch.zeros(rank, in_features),
                                  f"{module}.lora_B.weight": torch.zeros(out_features, rank + 1)})
    if kind == "integer":
        return safetensors_bytes({key: value.to(torch.int32) for key, value in good.items()})
    if kind == "non-finite":
        value = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        return safetensors_bytes({**good, f"{module}.lora_B.weight": torch.full((out_features, rank), value)})
    return safetensors_bytes({**good, "padding.lora_A.weight": torch.zeros(1, MAX_ADAPTER_BYTES // 4 + 16)})


@pytest.fixture(scope="module")
def target(family, engine) -> tuple[str, int, int]:
    module = engine.pipeline.transformer.get_submodule(family.target)
    module = getattr(module, "base_layer", module)  # a loaded 1.5 adapter wraps the Linear
    return family.target, module.out_features, module.in_features


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data(), index=st.integers(0, 2))
def test_bad_adapters_get_the_same_unbilled_422_naming_the_entry_on_every_host(family, hosts, adapter_server,
                                                                                 good_adapter, target, data, index):
    bad = adapter_server.publish(data.draw(bad_adapter_bytes(*target)))
    loras = [{"path": good_adapter, "scale": 0.5}] * index + [{"path": bad}]
    before = {name: weights_digest(engine) for name, _, _, _, engine in hosts}
    answers = []
    for host in hosts:
        response, records = post(host, {**family.body, "loras": loras})
        assert response.status_code == 422, (host[0], response.text)
        assert response.headers[billing.BILLING_HEADER] == "0"
        assert all(record.seconds == 0 and record.price_usd == 0 for record in records)
        answers.append(response.json())
    assert answers == [answers[0]] * len(hosts), answers
    [item] = answers[0]["detail"]
    assert item["loc"] == ["body", "loras", index, "path"] and item["type"] in ("validation_error", "file_too_large")
    assert {name: weights_digest(engine) for name, _, _, _, engine in hosts} == before


# -- the unmodified fal_client -----------------------------------------------------------------------


def test_fal_client_sends_loras_to_acestep_app_serve(tiny_weights, adapter_server, tmp_path, monkeypatch, request):
    from acestep_app.acestep_v1.models.transformer import ACEStepTransformer2DModel

    lora_infra = write_lora_infra(tmp_path, FAMILIES[0], request)
    transformer = ACEStepTransformer2DModel.from_pretrained(tiny_weights / "ace_step_transformer")
    good_adapter = adapter_server.publish(safetensors_bytes(adapter_tensors(linear_shapes(transformer), 2, 9, 0.5)))
    cert, key = write_self_signed_cert(tmp_path)
    verify = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    fal_key = "lora-key-id:lora-secret"
    monkeypatch.setenv(INFRA_ENV, str(lora_infra))
    command = serve_command(tmp_path / "data", port, "--api-key", fal_key, "--ssl-certfile", str(cert),
                            "--ssl-keyfile", str(key))
    bad = adapter_server.publish(b"not an adapter")
    with running(command, f"https://127.0.0.1:{port}", tmp_path / "server.log", verify=verify, timeout=180):
        env = {**os.environ, "FAL_RUN_HOST": f"127.0.0.1:{port}/run", "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{port}",
               "FAL_KEY": fal_key, "SSL_CERT_FILE": str(cert), "NO_PROXY": "127.0.0.1"}
        done = subprocess.run([sys.executable, str(DRIVER), good_adapter, bad], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))[7:])
        audio = {name: httpx_get(report[name]["audio"]["url"], verify) for name in ("with_lora", "queued", "plain")}
    assert report["with_lora"]["seed"] == report["plain"]["seed"] == 4
    decoded = {name: soundfile.read(io.BytesIO(data), dtype="float32") for name, data in audio.items()}
    (with_lora, rate), (queued, _), (plain, _) = (decoded[name] for name in ("with_lora", "queued", "plain"))
    assert rate == 48000 and np.isfinite(with_lora).all()
    # the WAV header carries a PEAK chunk with a timestamp: compare the samples
    assert np.array_equal(with_lora, queued) and not np.array_equal(with_lora, plain)
    refused = {"status": 422, "loc": ["body", "loras", 0, "path"], "type": "validation_error"}
    assert report["bad_sync"] == refused and report["bad_queue"] == refused


def httpx_get(url: str, verify) -> bytes:
    import httpx

    response = httpx.get(url, verify=verify)
    assert response.status_code == 200
    return response.content

