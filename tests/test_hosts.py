"""One failure policy, three hosts: the same case against the local server, the fal App and the Modal app
(all in-process, tests/hosts.py) gets the identical status code, body, error-type header and billing.

The fal App is synchronous (fal's platform runs its queue), so queue-only cases (cancellation) run on the
local server and the Modal app.
"""

from __future__ import annotations

import threading

import pytest
import torch

from acestep_app.serving import billing
from acestep_app.errors import AudioInputError, InputError
from conftest import wait_until
from hosts import fal_host, local_host, modal_host  # noqa: F401  (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally and will not have access:UserWarning")

HOSTS = ("local", "fal", "modal")
BODY = {"tags": "rock", "duration": 5}


@pytest.fixture
def hosts(request):
    every = [request.getfixturevalue(f"{name}_host") for name in HOSTS]
    yield every
    for host in every:
        host.engine.fail_with = None
        host.engine.hold = None


def unbilled_answers(hosts, send) -> list[tuple[int, dict, str | None]]:
    """(status, body, x-fal-error-type) per host; each answer bills 0, and so does each ledger's record."""
    answers = []
    for host in hosts:
        before = {record.request_id for record in host.usage()} if host.usage else set()
        response = send(host)
        assert response.headers[billing.BILLING_HEADER] == "0", (host.name, response.text)
        answers.append((response.status_code, response.json(), response.headers.get("x-fal-error-type")))
        if host.usage:
            new = [record for record in host.usage() if record.request_id not in before]
            assert all(record.seconds == 0 and record.price_usd == 0 for record in new), (host.name, new)
    return answers


FAULTS = [
    pytest.param(InputError("lyrics", "tokenizes to nothing"), 422, "validation_error", id="input-error"),
    pytest.param(AudioInputError("tags", "File download error", error_type="file_download_error"), 422,
                 "file_download_error", id="file-error"),
    pytest.param(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB"), 500, "gpu_out_of_memory",
                 id="out-of-memory"),
    pytest.param(RuntimeError("decoder exploded"), 500, "generation_failed", id="generation-failed"),
]


@pytest.mark.parametrize(("fault", "status", "error_type"), FAULTS)
def test_a_generation_fault_gets_the_same_answer_on_every_host(hosts, fault, status, error_type):
    for host in hosts:
        host.engine.fail_with = fault
    answers = unbilled_answers(hosts, lambda host: host.client.post("/", json=BODY, headers=host.headers))
    assert answers[0][0] == status and answers[0][2] == error_type
    assert answers == [answers[0]] * len(HOSTS), answers
    for host in hosts:  # and every host keeps serving
        host.engine.fail_with = None
        ok = host.client.post("/", json=BODY, headers=host.headers)
        assert ok.status_code == 200 and ok.headers[billing.BILLING_HEADER] == "5", (host.name, ok.text)


def test_an_unstorable_result_gets_the_same_answer_on_every_host(hosts, monkeypatch):
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("acestep_app.serving.service.encode_audio", disk_full)
    answers = unbilled_answers(hosts, lambda host: host.client.post("/", json=BODY, headers=host.headers))
    assert answers[0][0] == 500 and answers[0][2] == "storage_error" and "No space left" in answers[0][1]["detail"]
    assert answers == [answers[0]] * len(HOSTS), answers


def test_a_field_error_item_matches_fal_shape(hosts):
    for host in hosts:
        host.engine.fail_with = AudioInputError("tags", "File download error", error_type="file_download_error",
                                                ctx={"url": "https://example.com/a.wav"})
    (status, body, _), *_ = unbilled_answers(hosts, lambda host: host.client.post("/", json=BODY, headers=host.headers))
    assert status == 422 and body == {"detail": [{
        "loc": ["body", "tags"], "msg": "File download error", "type": "file_download_error",
        "url": "https://docs.fal.ai/errors#file_download_error", "ctx": {"url": "https://example.com/a.wav"}}]}


@pytest.mark.parametrize("payload", [{"duration": 5}, {"tags": "x", "duration": 241}, {"tags": "x", "scheduler": "ddim"}])
def test_schema_validation_names_the_same_field_on_every_host(hosts, payload):
    """fal's own handler answers these (its items also echo ``input``); the located field and type agree."""
    answers = unbilled_answers(hosts, lambda host: host.client.post("/", json=payload, headers=host.headers))
    located = [(status, [(item["loc"], item["type"]) for item in body["detail"]]) for status, body, _ in answers]
    assert located == [located[0]] * len(HOSTS) and located[0][0] == 422


def test_cancellation_gets_the_same_answer_on_both_queue_hosts(hosts):
    answers = []
    for host in (host for host in hosts if host.queue):
        host.engine.hold = threading.Event()
        host.engine.started.clear()
        handle = host.client.post("/fal-ai/ace-step", json=BODY, headers=host.headers).json()
        assert host.engine.started.wait(10)
        assert host.client.put(handle["cancel_url"], headers=host.headers).status_code == 202
        host.engine.hold.set()
        status = wait_until(lambda: (body := host.client.get(handle["status_url"], headers=host.headers).json())[
            "status"] == "COMPLETED" and body)
        assert (status["error"], status["error_type"]) == ("Request was cancelled.", "request_cancelled")
        result = host.client.get(handle["response_url"], headers=host.headers)
        assert result.headers[billing.BILLING_HEADER] == "0"
        answers.append((result.status_code, result.json(), result.headers["x-fal-error-type"]))
        (record,) = [r for r in host.usage() if r.request_id == handle["request_id"]]
        assert (record.status, record.seconds, record.price_usd) == ("CANCELLED", 0, 0)
    assert answers == [(400, {"detail": "Request was cancelled.", "error_type": "request_cancelled"},
                        "request_cancelled")] * 2
