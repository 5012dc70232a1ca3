"""Issue 9's checks on the fal and Modal adapters' in-process apps: fuzzed input never gets a 5xx, bad
input is a 422 naming the field, an injected generation fault is an unbilled 5xx and the app keeps serving.

Both apps run with an engine double that returns at once (tests/engine_double.py), so the fuzz
measures the HTTP layer. The adapters' own tests (tests/test_fal_app.py, tests/test_modal_app.py) cover
the real tiny engine, auth and the queue shapes; what they already check is not repeated here.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

import schemathesis
from acestep_app.serving import billing
from hosts import fal_host, modal_host  # noqa: F401  (fixtures)
from reliability import TALLY, reliability_tally  # noqa: F401  (autouse: prints the reliability summary)
from test_fuzz import DOUBLE_SAMPLE_RATE, FUZZ, MODEL_BY_PATH, case_body, check_generation_response

pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally and will not have access:UserWarning")

OK_BODY = {"prompt": "x", "duration": 5}


@pytest.fixture(params=["fal", "modal"])
def adapter(request):
    host = request.getfixturevalue(f"{request.param}_host")
    return host.client, host.engine, host.headers


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
