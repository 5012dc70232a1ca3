"""fal's wire format, built here and nowhere else: queue records, results, errors, billing header.

* submit -> ``{"status": "IN_QUEUE", "request_id", "response_url", "status_url", "cancel_url", "queue_position"}``
* status -> ``IN_QUEUE`` (+ ``queue_position``) | ``IN_PROGRESS`` | ``COMPLETED`` (+ ``metrics``; failures
  and cancellations add ``error`` and ``error_type``: fal's protocol has one terminal status), with
  ``logs`` when asked for; 202 until completed, then 200.
* result -> the output model (``x-fal-billable-units`` = seconds of audio), or the failure.
* webhook payload -> the result body, or the failure's body and status (fal's envelope around it is
  :func:`acestep_app.serving.webhooks.outbox.webhook_body`).
* cancel -> 202 ``CANCELLATION_REQUESTED`` | 400 ``ALREADY_COMPLETED`` | 404 ``NOT_FOUND``.
* errors -> ``{"detail": ..., "error_type": ...}`` with ``x-fal-error-type``; 422 field errors are
  fal's ``{"detail": [{"loc", "msg", "type", ...}]}``. Every error bills 0.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from fastapi.responses import JSONResponse

from acestep_app.serving import billing
from acestep_app.serving.failures import Failure
from acestep_app.serving.jobs import CancelResult, Job, JobStatus

ERROR_TYPE_HEADER = "x-fal-error-type"
REQUEST_ID_HEADER = "x-fal-request-id"


def error_body(failure: Failure) -> dict[str, Any]:
    if failure.is_field_error:
        return {"detail": failure.detail}
    return {"detail": failure.detail, "error_type": failure.error_type}


def error_headers(failure: Failure) -> dict[str, str]:
    return {billing.BILLING_HEADER: "0", ERROR_TYPE_HEADER: failure.error_type}


def failure_response(failure: Failure, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(failure), status_code=failure.status_code,
                        headers={**(headers or {}), **error_headers(failure)})


def error_response(status_code: int, detail: Any, error_type: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """An unbilled error that is not a request's outcome (auth, size, unknown path, storage)."""
    body: dict[str, Any] = {"detail": detail}
    headers = {**(headers or {}), billing.BILLING_HEADER: "0"}
    if error_type:
        body["error_type"] = error_type
        headers[ERROR_TYPE_HEADER] = error_type
    return JSONResponse(body, status_code=status_code, headers=headers)


def validation_detail(errors: Sequence[dict[str, Any]], prefix: tuple = ("body",)) -> list[dict[str, Any]]:
    """Pydantic errors as fal's items: ``loc``, ``msg``, ``type`` (no echoed input)."""
    return [{"loc": [*prefix, *error.get("loc", ())], "msg": error.get("msg", ""), "type": error.get("type", "value_error")}
            for error in errors]


def field_error(loc: list[str], message: str, error_type: str = "value_error") -> JSONResponse:
    return error_response(422, [{"loc": loc, "msg": message, "type": error_type}])


# -- queue records ---------------------------------------------------------------------------------


def queue_urls(base_url: str, app_id: str, request_id: str) -> dict[str, str]:
    """fal's request URLs: under the app id only (no endpoint sub-path), as ``fal_client`` rebuilds them."""
    base = f"{base_url.rstrip('/')}/{app_id}/requests/{request_id}"
    return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}


def submitted(job: Job, urls: dict[str, str], queue_position: int) -> JSONResponse:
    body = {"status": "IN_QUEUE", "request_id": job.request_id, **urls, "queue_position": queue_position}
    return JSONResponse(body, headers={REQUEST_ID_HEADER: job.request_id})


def status(job: Job, urls: dict[str, str], queue_position: int | None, with_logs: bool) -> JSONResponse:
    body: dict[str, Any] = {"status": job.status.value, "request_id": job.request_id, **urls,
                            "logs": job.logs if with_logs else None}
    if job.status is JobStatus.IN_QUEUE:
        body["queue_position"] = queue_position or 0
    elif job.status.is_terminal:
        inference_time = job.inference_time
        body.update(status="COMPLETED",
                    metrics={} if inference_time is None else {"inference_time": round(inference_time, 3)})
        if job.failure is not None:
            body.update(error=job.failure.message, error_type=job.failure.error_type)
    return JSONResponse(body, status_code=200 if body["status"] == "COMPLETED" else 202)


def in_progress(job: Job) -> JSONResponse:
    return error_response(400, "Request is still in progress", "request_in_progress",
                          headers={REQUEST_ID_HEADER: job.request_id})


def result_body(job: Job, file_url: Callable[[Job, str], str]) -> dict[str, Any]:
    """A completed job's output JSON, its files linked through ``file_url`` (the result URL's and webhooks' payload)."""
    body = copy.deepcopy(job.result)
    audio = body.get("audio")
    if isinstance(audio, dict) and isinstance(audio.get("url"), str):
        audio["url"] = file_url(job, audio["url"])
    return body


def result(job: Job, file_url: Callable[[Job, str], str]) -> JSONResponse:
    """A finished job's answer: its output (files linked through ``file_url``) or its failure."""
    headers = {REQUEST_ID_HEADER: job.request_id}
    if job.failure is not None:
        return failure_response(job.failure, headers)
    headers[billing.BILLING_HEADER] = billing.header_value(job.billable_seconds)
    return JSONResponse(result_body(job, file_url), headers=headers)


def webhook_payload(job: Job, file_url: Callable[[Job, str], str]) -> tuple[dict[str, Any], int | None]:
    """What a finished job's webhook carries: the result URL's body, plus the HTTP status of a failure (else None)."""
    if job.failure is not None:
        return error_body(job.failure), job.failure.status_code
    return result_body(job, file_url), None


def cancel_reply(outcome: CancelResult | None) -> JSONResponse:
    if outcome is None:
        return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
    if outcome is CancelResult.ALREADY_COMPLETED:
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
    return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)


def still_running(job: Job, wait_url: str) -> JSONResponse:
    """A synchronous call that outlived the host's wait: 303 to a URL that waits again (``curl -L`` follows)."""
    body = {"status": job.status.value, "request_id": job.request_id, "wait_url": wait_url}
    return JSONResponse(body, status_code=303, headers={"location": wait_url, REQUEST_ID_HEADER: job.request_id})
