"""Local fal-compatible server: the ACE-Step endpoints, fal's queue protocol, files, billing, auth.

Routes (``{owner}/{app}`` is any app id, e.g. ``fal-ai/ace-step``; the sub-path picks the endpoint):

* ``POST /prompt-to-audio``, ``POST /``: synchronous calls, as on a fal runner (listed in OpenAPI).
* ``POST /run/{owner}/{app}[/prompt-to-audio]``: the same, for ``fal_client.run`` with
  ``FAL_RUN_HOST=<host>:<port>/run``.
* ``POST /{owner}/{app}[/prompt-to-audio]``: queue submit -> ``request_id``, ``status_url``,
  ``response_url``, ``cancel_url``, ``queue_position`` (``FAL_QUEUE_RUN_HOST=<host>:<port>``).
* ``GET /{owner}/{app}/requests/{id}/status[?logs=true]``, ``GET /{owner}/{app}/requests/{id}``,
  ``PUT /{owner}/{app}/requests/{id}/cancel``: as fal's queue (no endpoint sub-path).
* ``GET /files/{request_id}.{wav,flac,mp3,ogg}``: generated audio (``[output].format``), linked from ``File.url``.
* ``GET /health``: the only route open without a key.

Every job, synchronous or queued, goes through the persistent queue in :mod:`acestep_app.jobs` and
its single GPU worker. Inputs are validated before a job is accepted, so bad input is a 422 naming the
field and never becomes a job. Successful results carry ``x-fal-billable-units`` (seconds of audio);
every other response, and every 4xx/5xx, carries ``0``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from acestep_app import billing
from acestep_app.jobs import Job, JobContext, JobOutcome, JobStatus, JobStore, JobWorker
from acestep_app.schema import PromptToAudioInput, PromptToAudioOutput, TextToAudioInput, TextToAudioOutput
from acestep_app.service import ENDPOINT_BY_SUB_PATH, ENDPOINTS, FILES_PREFIX, Endpoint, generate_output
from acestep_app.storage import AudioStore

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 256 * 1024  # fits the schema's text limits even fully \u-escaped; more is abuse


# -- errors in fal's shape ---------------------------------------------------------------------------


def validation_detail(errors: Sequence[dict[str, Any]], prefix: tuple = ("body",)) -> list[dict[str, Any]]:
    """Pydantic errors as fal returns them: ``loc``, ``msg``, ``type`` (no echoed input)."""
    return [
        {"loc": [*prefix, *error.get("loc", ())], "msg": error.get("msg", ""), "type": error.get("type", "value_error")}
        for error in errors
    ]


def error_response(status_code: int, detail: Any, error_type: str | None = None,
                   headers: dict[str, str] | None = None, **extra_headers: str) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if error_type:
        body["error_type"] = error_type
    return JSONResponse(body, status_code=status_code,
                        headers={**(headers or {}), **extra_headers, billing.BILLING_HEADER: "0"})


class RequestRejected(Exception):
    def __init__(self, response: JSONResponse):
        self.response = response


def parse_input(endpoint: Endpoint, body: bytes) -> BaseModel:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestRejected(error_response(
            422, [{"loc": ["body"], "msg": f"Invalid JSON body: {error}", "type": "json_invalid"}]))
    try:
        return endpoint.input_model.model_validate(payload)
    except ValidationError as error:
        raise RequestRejected(error_response(422, validation_detail(error.errors())))


# -- keys --------------------------------------------------------------------------------------------


class Keys:
    """API keys; each key is its own owner (jobs and files of one key are invisible to another).

    Keys are compared with ``hmac.compare_digest`` against every configured key, so the time taken
    does not depend on which key (or how much of one) matched. Owners are stored as SHA-256 digests.
    """

    ANONYMOUS = "anonymous"

    def __init__(self, api_key: str | Sequence[str] | None):
        keys = [api_key] if isinstance(api_key, str) else list(api_key or [])
        if any(not key for key in keys):
            raise ValueError("an API key must not be empty")
        self._keys = [key.encode() for key in keys]
        self._by_owner = {self.owner_of(key): key for key in self._keys}

    @property
    def required(self) -> bool:
        return bool(self._keys)

    @staticmethod
    def owner_of(key: bytes) -> str:
        return hashlib.sha256(key).hexdigest()

    def authenticate(self, authorization: str | None) -> str | None:
        """The owner for an ``Authorization: Key <key>`` header, or None when it is not valid."""
        if not self.required:
            return self.ANONYMOUS
        scheme, _, presented = (authorization or "").partition(" ")
        presented_bytes = presented.strip().encode()
        matched = None
        for key in self._keys:
            if hmac.compare_digest(presented_bytes, key):
                matched = key
        if scheme.lower() != "key" or matched is None:
            return None
        return self.owner_of(matched)

    def sign(self, owner: str, file_name: str) -> str | None:
        key = self._by_owner.get(owner)
        if key is None:
            return None
        return hmac.new(key, file_name.encode(), hashlib.sha256).hexdigest()[:32]

    def verify(self, owner: str, file_name: str, signature: str) -> bool:
        expected = self.sign(owner, file_name)
        return expected is not None and hmac.compare_digest(expected, signature)


# -- the gate: auth, body size, default billing header ----------------------------------------------


class Gate:
    """ASGI middleware in front of every route.

    * ``Authorization: Key <key>`` on everything but ``/health`` (files also take a signed URL).
    * Request bodies over ``max_body_bytes`` -> 413 before the app reads them.
    * ``x-fal-billable-units: 0`` on every response that did not set it, and on all 4xx/5xx.
    """

    def __init__(self, app, keys: Keys, max_body_bytes: int):
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = self._billing_send(send)
        path = scope["path"]
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        owner = self.keys.authenticate(headers.get("authorization"))
        signed_file = path.startswith("/" + FILES_PREFIX) and b"sig=" in scope.get("query_string", b"")
        if owner is None and path != "/health" and not signed_file:
            response = error_response(401, "Missing or invalid API key: send 'Authorization: Key <key>'.",
                                      "unauthorized", **{"www-authenticate": "Key"})
            return await response(scope, receive, send)
        scope["state"] = {**scope.get("state", {}), "owner": owner}
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self._read_body(headers, receive)
            if body is None:
                response = error_response(413, f"Request body is larger than {self.max_body_bytes} bytes.",
                                          "request_too_large")
                return await response(scope, receive, send)
            receive = _replay(body)
        await self.app(scope, receive, send)

    async def _read_body(self, headers: dict[str, str], receive) -> bytes | None:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    def _billing_send(send):
        header = billing.BILLING_HEADER.encode()

        async def send_with_billing(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if message["status"] < 400 or k.lower() != header]
                if not any(k.lower() == header for k, _ in headers):
                    headers.append((header, b"0"))
                message = {**message, "headers": headers}
            await send(message)

        return send_with_billing


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


# -- running a job on the engine (worker thread) -----------------------------------------------------


class EngineJobHandler:
    """Turns a stored job into ``engine.generate`` + a stored WAV + the endpoint's output model."""

    def __init__(self, engine, audio: AudioStore, settings):
        self.engine = engine
        self.audio = audio
        self.settings = settings

    def __call__(self, job: Job, context: JobContext) -> JobOutcome:
        endpoint = ENDPOINTS[job.endpoint]
        request = endpoint.input_model.model_validate(job.input)

        def on_progress(progress) -> None:
            context.check()
            message = getattr(progress, "message", "") or f"step {progress.step}/{progress.total}"
            context.log(message)

        return generate_output(self.engine, self.audio, self.settings, endpoint, request, job.request_id,
                               on_progress=on_progress, log=context.log, check=context.check)


class Waiters:
    """Lets async request handlers await a job's end, which the worker thread reports."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = {}

    def finished(self, job: Job) -> None:
        with self._lock:
            pending = self._pending.pop(job.request_id, [])
        for loop, future in pending:
            loop.call_soon_threadsafe(lambda f=future: f.done() or f.set_result(None))

    async def wait(self, store: JobStore, request_id: str) -> Job:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._pending.setdefault(request_id, []).append((loop, future))
        job = store.get(request_id)
        while job is not None and not job.status.is_terminal:
            try:  # the timeout only guards against a lost wake-up
                await asyncio.wait_for(asyncio.shield(future), timeout=5.0)
            except asyncio.TimeoutError:
                pass
            job = store.get(request_id)
        assert job is not None
        return job


# -- the app -----------------------------------------------------------------------------------------


def add_error_handlers(app: FastAPI) -> None:
    """fal-shaped errors: 422 field detail, 404 ``Path ... not found``, 500 without internals; all bill 0."""

    @app.exception_handler(RequestValidationError)
    async def _on_validation_error(request: Request, error: RequestValidationError):
        return error_response(422, validation_detail(error.errors(), prefix=()))

    @app.exception_handler(RequestRejected)
    async def _on_rejected(request: Request, error: RequestRejected):
        return error.response

    @app.exception_handler(sqlite3.Error)
    @app.exception_handler(OSError)
    async def _on_storage_error(request: Request, error: Exception):  # e.g. a full disk: say so, accept nothing
        logger.exception("storage error on %s", request.url.path)
        return error_response(503, f"The server cannot write to its data dir ({type(error).__name__}: {error}); "
                                   "the request was not accepted and nothing was billed.", "storage_error")

    @app.exception_handler(Exception)
    async def _on_unhandled(request: Request, error: Exception):  # runs outside Gate: bill 0 here
        logger.exception("unhandled error on %s", request.url.path)
        return error_response(500, "Internal Server Error", "internal_error")

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 404:
            return error_response(404, f"Path {request.url.path} not found")
        if error.status_code == 400:  # FastAPI's "error parsing the body" (e.g. invalid UTF-8)
            return error_response(422, [{"loc": ["body"], "msg": str(error.detail), "type": "json_invalid"}])
        return error_response(error.status_code, error.detail, headers=error.headers)


def create_app(engine, settings, data_dir: str | Path, api_key: str | Sequence[str] | None = None, *,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The local server as an ASGI app (mount it, serve it with uvicorn, or test it in-process).

    The job database and files live under ``data_dir``; an unusable data dir fails here, not later.
    The worker thread starts and stops with the app's lifespan; queued jobs of an earlier process
    resume then, and jobs it was running are re-queued once (then failed with a reason).
    """
    data_dir = Path(data_dir)
    store = JobStore(data_dir)
    try:
        audio = AudioStore(data_dir / "files")
    except OSError as error:
        raise RuntimeError(f"cannot write generated audio under {data_dir}: {error}") from error
    keys = Keys(api_key)
    worker = JobWorker(store, EngineJobHandler(engine, audio, settings))
    waiters = Waiters()
    worker.add_listener(waiters.finished)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        requeued, failed = store.recover()
        if requeued or failed:
            logger.warning("recovered interrupted jobs: %d re-queued, %d failed", requeued, failed)
        worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)

    app = FastAPI(
        title="ACE-Step (acestep-app)",
        description="ACE-Step v1 text-to-music; API-compatible with fal-ai/ace-step and "
                    "fal-ai/ace-step/prompt-to-audio.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.worker = worker
    app.state.engine = engine

    add_error_handlers(app)

    def owner_of(request: Request) -> str:
        return request.state.owner

    def submit(request: Request, endpoint: Endpoint, parsed: BaseModel) -> Job:
        job = store.create(endpoint.name, owner_of(request), parsed.model_dump(mode="json"))
        worker.notify()
        return job

    def render_result(request: Request, job: Job) -> dict[str, Any]:
        """The stored result with File.url made absolute (and signed when keys are in use)."""
        result = json.loads(json.dumps(job.result))
        audio = result.get("audio")
        if isinstance(audio, dict) and str(audio.get("url", "")).startswith(FILES_PREFIX):
            url = str(request.base_url) + audio["url"]
            signature = keys.sign(job.owner, audio["url"][len(FILES_PREFIX):])
            audio["url"] = f"{url}?sig={signature}" if signature else url
        return result

    def job_response(request: Request, job: Job) -> JSONResponse:
        """A finished job as a direct (non-queue) response: the result or its error."""
        headers = {"x-fal-request-id": job.request_id}
        if job.status is JobStatus.COMPLETED:
            headers[billing.BILLING_HEADER] = billing.header_value(job.billable_seconds)
            return JSONResponse(render_result(request, job), headers=headers)
        return error_response(job.error_status or 500, job.error, job.error_type, **headers)

    async def run_sync(request: Request, endpoint: Endpoint, parsed: BaseModel) -> JSONResponse:
        job = submit(request, endpoint, parsed)
        return job_response(request, await waiters.wait(store, job.request_id))

    # -- synchronous endpoints (listed in OpenAPI with the schema models) --

    @app.post("/prompt-to-audio", response_model=PromptToAudioOutput, summary="Prompt to audio",
              responses={422: {"description": "Invalid input (names the field)"}})
    async def prompt_to_audio(request: Request, body: PromptToAudioInput):
        """Generate a song from a prompt (tags and lyrics are written from it)."""
        return await run_sync(request, ENDPOINTS["prompt-to-audio"], body)

    @app.post("/", response_model=TextToAudioOutput, summary="Text to audio",
              responses={422: {"description": "Invalid input (names the field)"}})
    async def text_to_audio(request: Request, body: TextToAudioInput):
        """Generate a song from explicit tags and lyrics."""
        return await run_sync(request, ENDPOINTS["text-to-audio"], body)

    @app.get("/health")
    async def health():
        describe = getattr(engine, "describe", None)
        return {
            "status": "ok",
            "engine": describe() if callable(describe) else {},
            "queue": {"in_queue": store.count(JobStatus.IN_QUEUE),
                      "in_progress": store.count(JobStatus.IN_PROGRESS)},
        }

    # -- files --

    @app.get("/files/{file_name}", include_in_schema=False)
    async def get_file(request: Request, file_name: str, sig: str | None = None):
        request_id = AudioStore.request_id_of(file_name)
        job = store.get(request_id) if request_id else None
        stored = audio.open(file_name) if job else None
        allowed = job is not None and (
            not keys.required
            or job.owner == owner_of(request)
            or (sig is not None and keys.verify(job.owner, file_name, sig))
        )
        if stored is None or not allowed:
            return error_response(404, "File not found")
        return FileResponse(stored.path, media_type=stored.content_type, filename=stored.file_name)

    # -- fal.run style, for fal_client.run with FAL_RUN_HOST=<host>:<port>/run --

    @app.post("/run/{owner}/{app_name}", include_in_schema=False)
    @app.post("/run/{owner}/{app_name}/{sub_path:path}", include_in_schema=False)
    async def run_app(request: Request, owner: str, app_name: str, sub_path: str = ""):
        endpoint = ENDPOINT_BY_SUB_PATH.get(sub_path.strip("/"))
        if endpoint is None:
            return error_response(404, f"Path {request.url.path} not found")
        return await run_sync(request, endpoint, parse_input(endpoint, await request.body()))

    # -- fal queue --

    def queue_urls(request: Request, owner: str, app_name: str, request_id: str) -> dict[str, str]:
        base = f"{request.base_url}{owner}/{app_name}/requests/{request_id}"
        return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}

    def find(request: Request, request_id: str) -> Job | None:
        return store.get(request_id, owner=owner_of(request))

    def not_found(request_id: str) -> JSONResponse:
        return error_response(404, f"Request {request_id} not found", "request_not_found")

    @app.post("/{owner}/{app_name}", include_in_schema=False)
    @app.post("/{owner}/{app_name}/{sub_path:path}", include_in_schema=False)
    async def queue_submit(request: Request, owner: str, app_name: str, sub_path: str = ""):
        endpoint = ENDPOINT_BY_SUB_PATH.get(sub_path.strip("/"))
        if endpoint is None:
            return error_response(404, f"Path {request.url.path} not found")
        job = submit(request, endpoint, parse_input(endpoint, await request.body()))
        return JSONResponse({
            "status": "IN_QUEUE",
            "request_id": job.request_id,
            **queue_urls(request, owner, app_name, job.request_id),
            "queue_position": store.queue_position(job),
        }, headers={"x-fal-request-id": job.request_id})

    @app.get("/{owner}/{app_name}/requests/{request_id}/status", include_in_schema=False)
    async def queue_status(request: Request, owner: str, app_name: str, request_id: str, logs: bool = False):
        job = find(request, request_id)
        if job is None:
            return not_found(request_id)
        body: dict[str, Any] = {"status": job.status.value, "request_id": job.request_id,
                                **queue_urls(request, owner, app_name, request_id),
                                "logs": job.logs if logs else None}
        if job.status is JobStatus.IN_QUEUE:
            body.update(status="IN_QUEUE", queue_position=store.queue_position(job))
        elif job.status is JobStatus.IN_PROGRESS:
            body.update(status="IN_PROGRESS")
        else:
            # fal's protocol has one terminal status; failures and cancellations carry error fields.
            body.update(status="COMPLETED", metrics=_metrics(job))
            if job.status is not JobStatus.COMPLETED:
                body.update(error=_error_text(job.error), error_type=job.error_type)
        return JSONResponse(body, status_code=200 if body["status"] == "COMPLETED" else 202)

    @app.get("/{owner}/{app_name}/requests/{request_id}", include_in_schema=False)
    async def queue_result(request: Request, owner: str, app_name: str, request_id: str):
        job = find(request, request_id)
        if job is None:
            return not_found(request_id)
        if not job.status.is_terminal:
            return error_response(400, "Request is still in progress", "request_in_progress",
                                  **{"x-fal-request-id": job.request_id})
        return job_response(request, job)

    @app.put("/{owner}/{app_name}/requests/{request_id}/cancel", include_in_schema=False)
    async def queue_cancel(request: Request, owner: str, app_name: str, request_id: str):
        job = find(request, request_id)
        if job is None:
            return JSONResponse({"status": "NOT_FOUND"}, status_code=404, headers={billing.BILLING_HEADER: "0"})
        status = store.request_cancel(request_id)
        if status is JobStatus.CANCELLED and not job.status.is_terminal:
            worker.notify_finished(store.get(request_id))
        if status in (JobStatus.CANCELLED, JobStatus.IN_PROGRESS) and not job.status.is_terminal:
            return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)

    app.add_middleware(Gate, keys=keys, max_body_bytes=max_body_bytes)
    return app


def _metrics(job: Job) -> dict[str, float]:
    return {} if job.inference_time is None else {"inference_time": round(job.inference_time, 3)}


def _error_text(error: Any) -> str:
    if isinstance(error, list):  # validation detail
        return "; ".join(f"{'.'.join(map(str, item.get('loc', [])))}: {item.get('msg')}" for item in error)
    return str(error)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("acestep-app")
    except Exception:
        return "0+unknown"
