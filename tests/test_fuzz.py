"""Property-based fuzzing of the local server (issue 9): no input ever gets a 5xx, bad input a 422 naming the field.

* The published OpenAPI (``/prompt-to-audio``, ``/``, ``/health``) is fuzzed with schemathesis in both
  positive and negative generation modes.
* The routes OpenAPI does not list (fal queue submit/status/result/cancel, ``/run/...``, ``/files/...``)
  are fuzzed with hypothesis: bodies from the same schemathesis strategies, ids and file names from
  text strategies (traversal, encodings, foreign ids), and raw bytes.
* ``Authorization`` headers are fuzzed against a server with two keys: only ``Key <a configured key>``
  passes, on every route but ``/health``.
* The oracle for every generation request is the pydantic input model itself: a body it accepts must
  be a 200 billed for the audio, a body it rejects must be a 422 whose ``loc``s name exactly the fields
  pydantic names, billed 0.

These run in-process against an engine double that returns at once (generation cost must not bound
the fuzz); a few hypothesis examples run on the real Engine with a tiny checkpoint. Inputs beyond the
schema that have their own tests elsewhere: oversized body -> 413 and invalid UTF-8 / non-object JSON
(tests/test_server.py ``test_oversized_body_is_413``, ``test_malformed_bodies_are_422``), unknown
fields ignored (``test_unknown_fields_are_ignored_as_fal_does``), file path traversal
(``test_file_paths_cannot_escape_or_guess``), keys (``test_every_route_but_health_needs_a_valid_key``,
``test_keys_are_isolated_and_file_urls_are_signed``).
"""

from __future__ import annotations

import json
import math
import sqlite3
import urllib.parse
import uuid
from contextlib import closing

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from schemathesis.generation.modes import GenerationMode

from acestep_app.serving import billing
from acestep_app.serving.jobs import JobStatus
from acestep_app.acestep_v1.schema import (
    MAX_LYRICS_LENGTH,
    MAX_PROMPT_LENGTH,
    AudioInpaintInput,
    AudioOutpaintInput,
    AudioToAudioInput,
    PromptToAudioInput,
    TextToAudioInput,
)
from acestep_app.hosts.local import create_app
from acestep_app.settings import Settings
from conftest import wait_until
from engine_double import EngineDouble
from reliability import TALLY, reliability_tally  # noqa: F401  (autouse: prints the reliability summary)

APP = "fal-ai/ace-step"
MODEL_BY_PATH = {"/prompt-to-audio": PromptToAudioInput, "/": TextToAudioInput, "/audio-to-audio": AudioToAudioInput,
                 "/audio-inpaint": AudioInpaintInput, "/audio-outpaint": AudioOutpaintInput}
# A fuzzed audio_url is almost never a song: a valid body may also get one of fal's file errors on it.
FILE_ERROR_TYPES = {"file_download_error", "file_too_large", "unsupported_audio_format", "audio_duration_too_long",
                    "audio_duration_too_short"}
QUEUE_PATH_BY_MODEL = {PromptToAudioInput: "/prompt-to-audio", TextToAudioInput: ""}
DOUBLE_SAMPLE_RATE = 100  # a 240 s song is 24k samples: the fuzz measures the server, not the WAV writer
FUZZ = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory):
    engine = EngineDouble(steps=1, sample_rate=DOUBLE_SAMPLE_RATE)
    app = create_app(engine, Settings(), tmp_path_factory.mktemp("fuzz-data"))
    with TestClient(app) as client:
        yield client
        store = client.app.state.store
        wait_for(lambda: store.count(JobStatus.IN_QUEUE) + store.count(JobStatus.IN_PROGRESS) == 0)
        account_for_jobs(client)


@pytest.fixture(scope="module")
def openapi(fuzz_client):
    return schemathesis.openapi.from_dict(fuzz_client.get("/openapi.json").json())


def wait_for(predicate, timeout: float = 60.0) -> None:
    wait_until(predicate, timeout, interval=0.05)


def account_for_jobs(client) -> None:
    """Every job the fuzz got accepted ended, with exactly one usage row."""
    store = client.app.state.store
    with closing(sqlite3.connect(store.path)) as db:
        statuses = [status for (status,) in db.execute("SELECT status FROM jobs")]
    rows = store.usage_records()
    assert len({row.request_id for row in rows}) == len(rows) == len(statuses)
    TALLY.count_jobs(statuses)


# -- the oracle ------------------------------------------------------------------------------------


def send(client, method: str, url: str, **kwargs):
    response = client.request(method, url, **kwargs)
    TALLY.requests_fuzzed += 1
    if response.status_code >= 500:
        TALLY.server_errors += 1
    assert response.status_code < 500, (method, url, kwargs, response.status_code, response.text)
    assert billing.BILLING_HEADER in response.headers
    if response.status_code != 200:
        assert response.headers[billing.BILLING_HEADER] == "0"
    return response


def pydantic_error_fields(model: type[BaseModel], body) -> set[tuple] | None:
    """The ``("body", field...)`` locations pydantic rejects ``body`` at; None when it is valid."""
    try:
        model.model_validate(body)
    except ValidationError as error:
        return {("body", *error_loc(item)) for item in error.errors()}
    return None


def error_loc(item: dict) -> tuple:
    return tuple(item["loc"][:1])  # the field; deeper parts (e.g. enum members) are the field's detail


def check_generation_response(model: type[BaseModel], body, response, *, queued: bool,
                              detail_keys_exact: bool = True) -> None:
    expected_errors = pydantic_error_fields(model, body)
    if expected_errors is None and "audio_url" in model.model_fields and not queued and response.status_code == 422:
        (item,) = response.json()["detail"]
        assert item["loc"] == ["body", "audio_url"] and item["type"] in FILE_ERROR_TYPES, (body, item)
        return
    if expected_errors is None:
        assert response.status_code == 200, (body, response.text)
        if queued:
            handle = response.json()
            assert handle["status"] == "IN_QUEUE" and handle["queue_position"] >= 0
            uuid.UUID(handle["request_id"])
        elif "duration" in model.model_fields:  # an edit's length follows its song
            duration = model.model_validate(body).duration
            billed = float(response.headers[billing.BILLING_HEADER])
            assert math.isclose(billed, round(duration * DOUBLE_SAMPLE_RATE) / DOUBLE_SAMPLE_RATE, abs_tol=1e-3)  # billed to the millisecond
        return
    assert response.status_code == 422, (body, response.text)
    detail = response.json()["detail"]
    assert all(set(item) == {"loc", "msg", "type"} if detail_keys_exact else {"loc", "msg", "type"} <= set(item)
               for item in detail), detail
    named = {tuple(item["loc"][:2]) for item in detail}
    assert named == expected_errors, (body, detail)
    for loc in named:  # every error names a field of the model (or the body as a whole)
        assert loc == ("body",) or loc[1] in model.model_fields, detail


def check_raw_body(model: type[BaseModel], content: bytes, response, *, queued: bool) -> None:
    try:
        parsed = json.loads(content)
    except (UnicodeDecodeError, ValueError):
        assert response.status_code == 422 and response.json()["detail"][0]["loc"][0] == "body", response.text
        return
    check_generation_response(model, parsed, response, queued=queued)


def case_body(case):
    body = case.body
    return None if type(body).__name__ == "NotSet" else body


# -- the published OpenAPI (schemathesis) ----------------------------------------------------------


def test_openapi_fuzz_positive_and_negative(fuzz_client, openapi, loopback_only_dns):
    strategy = st.one_of(openapi.as_strategy(GenerationMode.POSITIVE), openapi.as_strategy(GenerationMode.NEGATIVE))

    @settings(FUZZ, max_examples=500)
    @given(strategy)
    def run(case):
        request = case.as_transport_kwargs(base_url="http://testserver")
        headers = {k: v for k, v in (request.get("headers") or {}).items() if not k.lower().startswith("x-schemathesis")}
        response = send(fuzz_client, request["method"], request["url"], headers=headers, params=request.get("params"),
                        json=request.get("json"), content=request.get("data"))
        model = MODEL_BY_PATH.get(case.path)
        if model is None or case.method.upper() != "POST":
            assert response.status_code == 200
            return
        if "json" not in request:  # a body sent as something other than JSON: never valid input
            sent_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
            # not declared JSON: 415 before the body is read; declared JSON but malformed: 422
            assert response.status_code == (422 if "json" in sent_type else 415), response.text
            return
        check_generation_response(model, case_body(case), response, queued=False)

    run()


# -- routes OpenAPI does not list: queue, run, files (hypothesis) ----------------------------------


def body_strategy(openapi, path: str):
    operation = openapi["/prompt-to-audio" if path == "/prompt-to-audio" else "/"]["POST"]
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)).map(
        case_body)


# one URL path segment of any text ("/" and dot-only names would make it another route)
segment = st.text(st.characters(exclude_characters="/", exclude_categories=["Cs"]), min_size=1, max_size=12).filter(
    lambda s: s.strip(".") != "").map(lambda s: urllib.parse.quote(s, safe=""))


def test_queue_and_run_routes_fuzz(fuzz_client, openapi):
    routes = st.sampled_from([(model, kind) for model in (PromptToAudioInput, TextToAudioInput) for kind in ("queue", "run")])

    @settings(FUZZ, max_examples=300)
    @given(st.data())
    def run(data):
        model, kind = data.draw(routes)
        body = data.draw(body_strategy(openapi, QUEUE_PATH_BY_MODEL[model] or "/"))
        owner, app = data.draw(st.sampled_from([tuple(APP.split("/"))]) | st.tuples(segment, segment))
        prefix = "/run" if kind == "run" else ""
        url = f"{prefix}/{owner}/{app}{QUEUE_PATH_BY_MODEL[model]}"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = send(fuzz_client, "POST", url, content=content, headers={"content-type": "application/json"})
        check_raw_body(model, content, response, queued=kind == "queue")

    run()


def test_request_and_file_urls_fuzz(fuzz_client):
    known = fuzz_client.post(f"/{APP}/prompt-to-audio", json={"prompt": "known", "duration": 5}).json()["request_id"]
    wait_for(lambda: fuzz_client.get(f"/{APP}/requests/{known}/status").json()["status"] == "COMPLETED")
    traversal = st.sampled_from(["..", "%2e%2e", "..%2f..%2fjobs.sqlite3", "%2e%2e%2fjobs.sqlite3", "jobs.sqlite3",
                                 f"{known}.wav.partial", f"{known.upper()}", "%00", "a%0d%0ab", f"{known}%00"])
    foreign = st.uuids().map(str)
    ids = st.one_of(segment, traversal, foreign, st.just(known))
    query = st.one_of(st.none(), st.dictionaries(st.sampled_from(["logs", "sig", "x"]), st.text(max_size=8), max_size=2))

    @settings(FUZZ, max_examples=300)
    @given(ids, st.sampled_from(["status", "result", "cancel", "file"]), query)
    def run(request_id, kind, params):
        base = f"/{APP}/requests/{request_id}"
        method, url = {"status": ("GET", base + "/status"), "result": ("GET", base), "cancel": ("PUT", base + "/cancel"),
                       "file": ("GET", f"/files/{request_id}.wav")}[kind]
        response = send(fuzz_client, method, url, params=params)
        assert b"SQLite" not in response.content
        if request_id != known:
            bad_logs = kind == "status" and params and "logs" in params
            assert response.status_code in ((404, 405, 422) if bad_logs else (404, 405)), (url, response.text)
        elif kind == "cancel":
            assert response.json() == {"status": "ALREADY_COMPLETED"}

    run()


def test_raw_bodies_fuzz(fuzz_client):
    """Bytes that are not a JSON object: invalid UTF-8, control characters, NaN/Infinity literals."""
    targets = st.sampled_from(["/prompt-to-audio", "/", f"/{APP}/prompt-to-audio", f"/{APP}", f"/run/{APP}"])
    literals = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b'"\x00"', b'"\x01\x1f"',
                                b"18446744073709551616", b"-9223372036854775809", b"null", b"true", b"[]", b"{}"])
    fields = st.sampled_from(sorted(set(PromptToAudioInput.model_fields) | set(TextToAudioInput.model_fields)))
    object_with_literal = st.tuples(fields, literals).map(
        lambda pair: b'{"prompt": "x", "tags": "y", "duration": 5, "%s": %s}' % (pair[0].encode(), pair[1]))
    bodies = st.one_of(st.binary(max_size=64), st.text(max_size=32).map(str.encode), object_with_literal)

    @settings(FUZZ, max_examples=200)
    @given(targets, bodies)
    def run(target, body):
        response = send(fuzz_client, "POST", target, content=body, headers={"content-type": "application/json"})
        model = PromptToAudioInput if "prompt-to-audio" in target else TextToAudioInput
        check_raw_body(model, body, response, queued=target.startswith(f"/{APP}"))

    run()


# -- inputs beyond the schema, named -------------------------------------------------------------

BEYOND = [
    ({"prompt": "x" * (MAX_PROMPT_LENGTH + 1)}, ("body", "prompt")),
    ({"prompt": "x", "seed": 2**63}, ("body", "seed")),
    ({"prompt": "x", "seed": -(2**63) - 1}, ("body", "seed")),
    ({"prompt": "x", "seed": 10**40}, ("body", "seed")),
    ({"prompt": "x", "seed": 1.5}, ("body", "seed")),
    ({"prompt": "x", "duration": float("inf")}, ("body", "duration")),
    ({"prompt": "x", "guidance_interval": float("-inf")}, ("body", "guidance_interval")),
    ({"prompt": "x", "tag_guidance_scale": float("nan")}, ("body", "tag_guidance_scale")),
    ({"prompt": "x", "instrumental": "maybe"}, ("body", "instrumental")),
    ({"prompt": None}, ("body", "prompt")),
]


@pytest.mark.parametrize(("payload", "loc"), BEYOND)
@pytest.mark.parametrize("path", ["/prompt-to-audio", f"/{APP}/prompt-to-audio"])
def test_inputs_beyond_the_schema_are_422_naming_the_field(fuzz_client, path, payload, loc):
    response = send(fuzz_client, "POST", path, content=json.dumps(payload).encode(),
                    headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert loc in {tuple(item["loc"]) for item in response.json()["detail"]}, response.text


def test_text_limits_apply_to_tags_and_lyrics(fuzz_client):
    for payload, loc in (({"tags": "x" * 5_001}, ("body", "tags")),
                         ({"tags": "x", "lyrics": "x" * (MAX_LYRICS_LENGTH + 1)}, ("body", "lyrics"))):
        response = send(fuzz_client, "POST", "/", json=payload)
        assert response.status_code == 422 and loc in {tuple(item["loc"]) for item in response.json()["detail"]}


def test_control_characters_and_unknown_fields_are_accepted_on_the_queue(fuzz_client):
    payload = {"prompt": "a\x00b\x07\u202e\ud7ff", "duration": 5, "format": "mp3", "nested": {"x": [1]}}
    response = send(fuzz_client, "POST", f"/{APP}/prompt-to-audio", json=payload)
    assert response.status_code == 200
    rid = response.json()["request_id"]
    wait_for(lambda: fuzz_client.get(f"/{APP}/requests/{rid}/status").json()["status"] == "COMPLETED")
    stored = fuzz_client.app.state.store.get(rid).input
    assert stored["prompt"] == payload["prompt"] and "format" not in stored and "nested" not in stored
    assert "seed" not in stored  # what the client sent: a left-out field gets its default when the job runs


# -- a few fuzzed requests on the real Engine (tiny checkpoint) ------------------------------------

REAL_BOUNDS = {"duration": 5, "number_of_steps": 3}  # generation cost stays ~1 s; every other field fuzzed


@pytest.fixture(scope="module")
def real_client(tiny_engine, tmp_path_factory):
    with TestClient(create_app(tiny_engine, Settings(), tmp_path_factory.mktemp("real-data"))) as client:
        yield client
        account_for_jobs(client)


short_text = st.text(max_size=60)
real_bodies = st.one_of(
    st.fixed_dictionaries({"prompt": short_text}, optional={"instrumental": st.booleans()}).map(
        lambda body: ("/prompt-to-audio", body)),
    st.fixed_dictionaries({"tags": short_text}, optional={"lyrics": short_text}).map(lambda body: ("/", body)),
)
real_parameters = st.fixed_dictionaries({}, optional={
    "seed": st.integers(-(2**63), 2**63 - 1),
    "scheduler": st.sampled_from(["euler", "heun"]),
    "guidance_type": st.sampled_from(["cfg", "apg", "cfg_star"]),
    "granularity_scale": st.integers(-100, 100),
    "guidance_interval": st.floats(0, 1),
    "guidance_interval_decay": st.floats(0, 1),
    "guidance_scale": st.floats(0, 200),
    "minimum_guidance_scale": st.floats(0, 200),
    "tag_guidance_scale": st.floats(0, 10),
    "lyric_guidance_scale": st.floats(0, 10),
})


def test_real_engine_fuzz(real_client):
    @settings(FUZZ, max_examples=12)
    @given(real_bodies, real_parameters)
    def run(path_and_body, parameters):
        path, body = path_and_body
        body = {**body, **parameters, **REAL_BOUNDS}
        response = send(real_client, "POST", path, json=body)
        assert response.status_code == 200, (body, response.text)
        assert 4.9 < float(response.headers[billing.BILLING_HEADER]) <= 5

    run()


EMPTY_AFTER_TOKENIZING = [
    ("/", {"tags": "", "lyrics": ""}),
    ("/", {"tags": "   ", "lyrics": "\u200b\u200b\n\n"}),
    ("/", {"tags": "\x00\x01", "lyrics": "\x00[verse]\n\x07"}),
    ("/", {"tags": "🎸🎸", "lyrics": "🎸\n!!!\n[chorus]"}),
    ("/prompt-to-audio", {"prompt": ""}),
    ("/prompt-to-audio", {"prompt": "\u200b\x00", "instrumental": True}),
]


@pytest.mark.parametrize(("path", "body"), EMPTY_AFTER_TOKENIZING)
def test_real_engine_inputs_that_tokenize_to_nothing_still_generate(real_client, path, body):
    response = send(real_client, "POST", path, json={**body, **REAL_BOUNDS, "seed": 5})
    assert response.status_code == 200, response.text


def test_real_engine_longest_prompt_is_not_a_server_error(real_client):
    response = real_client.post("/prompt-to-audio", json={"prompt": "x" * MAX_PROMPT_LENGTH, **REAL_BOUNDS})
    assert response.status_code in (200, 422), response.text


# -- keys: fuzzed Authorization headers on every route ---------------------------------------------

KEYS = ("key-a:secret", "key-b:secret")


@pytest.fixture(scope="module")
def keyed_fuzz_client(tmp_path_factory):
    engine = EngineDouble(steps=1, sample_rate=DOUBLE_SAMPLE_RATE)
    with TestClient(create_app(engine, Settings(), tmp_path_factory.mktemp("keyed"), api_key=list(KEYS))) as client:
        yield client
        store = client.app.state.store
        wait_for(lambda: store.count(JobStatus.IN_QUEUE) + store.count(JobStatus.IN_PROGRESS) == 0)
        account_for_jobs(client)


def test_authorization_header_fuzz(keyed_fuzz_client):
    """Only ``Key <configured key>`` gets past the gate, on every route but /health; nothing else is billed."""
    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=24)
    near_misses = st.sampled_from(KEYS).flatmap(lambda key: st.sampled_from(
        [key[:-1], key + "x", key.upper(), key[1:], " " + key[:-1], key.replace(":", "")]))
    presented = st.one_of(header_text, st.sampled_from(KEYS), near_misses)
    schemes = st.sampled_from(["Key", "key", "KEY", "Bearer", "Basic", "", "Key:"])
    routes = st.sampled_from([("POST", "/prompt-to-audio"), ("POST", "/"), ("POST", f"/{APP}/prompt-to-audio"),
                              ("POST", f"/run/{APP}"), ("GET", f"/{APP}/requests/{uuid.uuid4()}/status"),
                              ("GET", f"/{APP}/requests/{uuid.uuid4()}"), ("PUT", f"/{APP}/requests/{uuid.uuid4()}/cancel"),
                              ("GET", f"/files/{uuid.uuid4()}.wav"), ("GET", "/openapi.json"), ("GET", "/health")])

    passed_the_gate: list[bool] = []

    @settings(FUZZ, max_examples=250)
    @given(schemes, presented, routes)
    def run(scheme, key, route):
        method, path = route
        authorization = f"{scheme} {key}" if scheme else key
        response = send(keyed_fuzz_client, method, path, headers={"Authorization": authorization.encode("latin-1")},
                        json={"prompt": "x", "duration": 5, "tags": "x"})
        accepted = scheme.lower() == "key" and key.strip() in KEYS
        passed_the_gate.append(accepted)
        if path == "/health" or accepted:
            assert response.status_code != 401, (authorization, path)
        else:
            assert response.status_code == 401, (authorization, path, response.status_code)
            assert response.headers[billing.BILLING_HEADER] == "0"

    run()
    assert 0 < sum(passed_the_gate) < len(passed_the_gate)
