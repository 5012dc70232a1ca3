"""Issue 9's checks on the fal and Modal adapters' in-process apps: fuzzed input never gets a 5xx, bad
input is a 422 naming the field, an injected generation fault is an unbilled 5xx and the app keeps serving.

Both apps run with an engine double that returns at once (tests/engine_double.py), so the fuzz
measures the HTTP layer. The adapters' own tests (tests/test_fal_app.py, tests/test_modal_app.py) cover
the real tiny engine, auth and the queue shapes; what they already check is not repeated here.
"""

from __future__ import annotations

import functools
import types

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

import schemathesis
from acestep_app import billing
from acestep_app.settings import INFRA_ENV, REPO_INFRA_PATH, Settings
from acestep_app.storage import AudioStore
from acestep_app.tiny import write_tiny_checkpoint
from engine_double import EngineDouble
from reliability import TALLY, reliability_tally  # noqa: F401  (autouse: prints the reliability summary)
from test_fuzz import DOUBLE_SAMPLE_RATE, FUZZ, MODEL_BY_PATH, case_body, check_generation_response

pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally and will not have access:UserWarning")

KEY = "adapter-key"
AUTH = {"Authorization": f"Key {KEY}"}
OK_BODY = {"prompt": "x", "duration": 5}


def tiny_infra(root) -> str:
    checkpoint = write_tiny_checkpoint(root / "checkpoint")
    infra = root / "infra.toml"
    infra.write_text(REPO_INFRA_PATH.read_text().replace('weights_dir = ""', f'weights_dir = "{checkpoint}"')
                     .replace('device = "auto"', 'device = "cpu"')
                     .replace('prompt_backend = "transformers"', 'prompt_backend = "fallback"'))
    return str(infra)


@pytest.fixture(scope="module")
def fal_client(tmp_path_factory):
    """deploy/fal_app.py's App in-process (tiny checkpoint loaded by setup), its engine swapped for the double."""
    from fal_harness import PROJECT_ROOT, load_module, serve

    root = tmp_path_factory.mktemp("fal-reliability")
    module = load_module(PROJECT_ROOT / "deploy" / "fal_app.py", "acestep_fal_app_reliability",
                         {INFRA_ENV: tiny_infra(root)})
    with serve(module.AceStep, {module.FILE_REPOSITORY_ENV: "in_memory"}, home=root / "home") as (app, client):
        app.engine = EngineDouble(steps=1, sample_rate=DOUBLE_SAMPLE_RATE)
        yield client, app.engine, {}


@pytest.fixture(scope="module")
def modal_client(tmp_path_factory):
    """deploy/modal_app.py's web app over its in-process queue, running AceStep.generate on the double."""
    from test_modal_app import modal_app

    root = tmp_path_factory.mktemp("modal-reliability")
    patch = pytest.MonkeyPatch()
    patch.setenv(INFRA_ENV, str(REPO_INFRA_PATH))
    patch.setenv(modal_app.FILES_DIR_ENV, str(root / "files"))
    engine = EngineDouble(steps=1, sample_rate=DOUBLE_SAMPLE_RATE)
    container = types.SimpleNamespace(engine=engine, audio=AudioStore(root / "files" / "audio"), settings=Settings.load())
    generate = modal_app.AceStep._get_user_cls().generate._get_raw_f()
    queue = modal_app.InProcessQueue(run=functools.partial(generate, container))
    web = modal_app.create_web_app(queue, [KEY], root / "files", Settings.load(), sync_timeout=30)
    with TestClient(web) as client:
        yield client, engine, AUTH
    queue.shutdown()
    patch.undo()


@pytest.fixture(params=["fal", "modal"])
def adapter(request):
    return request.getfixturevalue(f"{request.param}_client")


def send(client, auth: dict, method: str, url: str, **kwargs):
    response = client.request(method, url, headers={**auth, **kwargs.pop("headers", {})}, **kwargs)
    TALLY.requests_fuzzed += 1
    TALLY.server_errors += response.status_code >= 500
    assert response.status_code < 500, (url, kwargs, response.text)
    if response.status_code != 200:
        assert response.headers.get(billing.BILLING_HEADER) == "0", (response.status_code, url, kwargs, response.text)
    return response


def test_adapter_openapi_fuzz(adapter):
    client, _, headers = adapter
    openapi = schemathesis.openapi.from_dict(client.get("/openapi.json", headers=headers).json())
    operations = [openapi[path]["POST"] for path in MODEL_BY_PATH]
    strategy = st.one_of(*(op.as_strategy(mode) for op in operations
                           for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)))

    @settings(FUZZ, max_examples=150)
    @given(strategy)
    def run(case):
        request = case.as_transport_kwargs(base_url="http://testserver")
        if "json" not in request:  # bodies that are not JSON: test_adapter_malformed_body_is_an_unbilled_422
            return
        response = send(client, headers, "POST", request["url"], json=request["json"])
        # fal's own 422 items also echo the ``input``; the local server leaves it out
        check_generation_response(MODEL_BY_PATH[case.path], case_body(case), response, queued=False,
                                  detail_keys_exact=False)

    run()


@pytest.mark.parametrize("fault", [RuntimeError("decoder exploded"), MemoryError("out of memory")])
def test_adapter_generation_fault_is_an_unbilled_5xx_and_it_keeps_serving(adapter, fault):
    client, engine, headers = adapter
    engine.fail_with = fault
    try:
        failed = client.post("/prompt-to-audio", json=OK_BODY, headers=headers)
    finally:
        engine.fail_with = None
    assert failed.status_code >= 500 and failed.headers.get(billing.BILLING_HEADER) == "0", failed.text
    ok = client.post("/prompt-to-audio", json=OK_BODY, headers=headers)
    assert ok.status_code == 200 and ok.headers[billing.BILLING_HEADER] == "5"
    TALLY.fault(survived=True)


UNDECODABLE = [b'{"prompt": "\xff\xfe"}', b"\x00\x00\x00\x00\x00"]  # not UTF-8 / read as UTF-32 by json


@pytest.mark.parametrize("body", [b"\x00\x00\x00", b"{not json", b"", *UNDECODABLE])
def test_adapter_malformed_body_is_an_unbilled_422(adapter, body):
    client, _, headers = adapter
    response = client.post("/prompt-to-audio", content=body, headers={**headers, "content-type": "application/json"})
    assert response.status_code == 422 and response.headers.get(billing.BILLING_HEADER) == "0", (
        response.status_code, dict(response.headers), response.text)
