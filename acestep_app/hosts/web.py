"""The HTTP face shared by the local server and the Modal app: fal's routes over a :class:`QueueService`.

Routes (``{owner}/{app}`` is any app id, e.g. ``fal-ai/ace-step``; the sub-path picks the endpoint
from :data:`acestep_app.serving.endpoints.ENDPOINTS`):

* ``POST /<sub-path>`` for every endpoint (``/`` for the base one): synchronous calls, in OpenAPI.
* ``POST /run/{owner}/{app}[/<sub-path>]``: the same, for ``fal_client.run`` (``FAL_RUN_HOST=<host>/run``).
* ``POST /{owner}/{app}[/<sub-path>][?fal_webhook=<url>]``: queue submit (``FAL_QUEUE_RUN_HOST=<host>``);
  the webhook gets fal's signed POST when the request finishes, on hosts that ``accepts_webhooks``.
* ``GET /{owner}/{app}/requests/{id}/status[?logs=true]``, ``GET /{owner}/{app}/requests/{id}``,
  ``PUT /{owner}/{app}/requests/{id}/cancel``: fal's queue.
* ``GET /requests/{id}/wait``: where a synchronous call that outlived the host's wait limit is
  redirected (303); it waits again and answers the result, or redirects to itself.
* ``GET /files/{request id}.{wav,flac,mp3,ogg}``: generated audio (``[output].format``), linked (signed) from ``File.url``.
* ``GET /health``: open without a key (as is a host router's ``GET /.well-known/jwks.json``).

Every job, synchronous or queued, goes through the queue. Inputs are validated before a job is
accepted. Successful results carry ``x-fal-billable-units``; every other response carries ``0``.
"""

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from acestep_app.serving import auth

from acestep_app.serving import billing

from acestep_app.serving import protocol
from acestep_app.serving.endpoints import DEFAULT_MAX_BODY_BYTES, ENDPOINTS, Endpoint, by_sub_path, for_request_path
from acestep_app.serving.jobs import Job
from acestep_app.serving.queue import QueueService
from acestep_app.serving.service import FILES_PREFIX
from acestep_app.settings import Settings
from acestep_app.serving.storage import AudioStore, StoredFile

logger = logging.getLogger(__name__)

WEBHOOK_PARAM = "fal_webhook"
DESCRIPTION = "ACE-Step v1 text-to-music; API-compatible with fal-ai/ace-step and its sub-endpoints."


@dataclass
class Host:
    """What a host plugs into the shared routes.

    ``sync_wait``: seconds a synchronous call waits before answering 303 to ``/requests/{id}/wait``
    (None: until done). ``open_file(name)``: a stored file, or None. ``health()``: the health body.
    ``on_submitted(job, base_url)`` runs after a queue submit (webhook registration hooks in there);
    ``accepts_webhooks``: False refuses ``?fal_webhook=`` with a 422 (the host cannot deliver them).
    """

    queue: QueueService
    keys: auth.Keys
    settings: Settings
    open_file: Callable[[str], StoredFile | None]
    health: Callable[[], dict[str, Any]]
    sync_wait: float | None = None
    max_body_bytes: int | None = None  # overrides the endpoints' own limits (serve --max-body-bytes)
    on_submitted: Callable[[Job, str], None] | None = None  # (job, base URL) after every queue submit
    routers: list[APIRouter] = field(default_factory=list)  # the host's own routes (e.g. a JWKS)
    accepts_webhooks: bool = False


class RequestRejected(Exception):
    """Raised by a route to answer ``response`` at once (bad body, refused webhook, unknown endpoint)."""

    def __init__(self, response: JSONResponse):
        self.response = response


def host_of(request: Request) -> Host:
    return request.app.state.host


def parse_input(endpoint: Endpoint, body: bytes) -> BaseModel:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestRejected(protocol.field_error(["body"], f"Invalid JSON body: {error}", "json_invalid"))
    try:
        return endpoint.input_model.model_validate(payload)
    except ValidationError as error:
        raise RequestRejected(protocol.error_response(422, protocol.validation_detail(error.errors())))


def endpoint_at(request: Request, sub_path: str) -> Endpoint:
    endpoint = by_sub_path(sub_path)
    if endpoint is None:
        raise RequestRejected(protocol.error_response(404, f"Path {request.url.path} not found"))
    return endpoint


def webhook_url(request: Request, host: Host) -> str | None:
    """``?fal_webhook=`` checked by the outbound-request guard; a refused URL is a 422 naming it."""
    url = request.query_params.get(WEBHOOK_PARAM)
    if url is None:
        return None
    if not host.accepts_webhooks:
        raise RequestRejected(protocol.field_error(
            ["query", WEBHOOK_PARAM], "Webhooks are not delivered by this host; poll the status URL instead."))
    from acestep_app.audio.netguard import check_url

    try:
        check_url(url, allow_private=host.settings.security.allow_private_urls)
    except ValueError as error:
        raise RequestRejected(protocol.field_error(["query", WEBHOOK_PARAM], str(error)))
    return url


def file_url(base_url: str, keys: auth.Keys) -> Callable[[Job, str], str]:
    """Makes a stored ``files/<name>`` URL absolute under ``base_url``, signed for the job's owner when keys are in use."""

    def absolute(job: Job, url: str) -> str:
        if not url.startswith(FILES_PREFIX):
            return url
        signature = keys.sign(job.owner, url[len(FILES_PREFIX):])
        return base_url.rstrip("/") + "/" + url + (f"?sig={signature}" if signature else "")

    return absolute


async def submit(request: Request, endpoint: Endpoint, parsed: BaseModel, owner: str,
                 webhook: str | None = None) -> Job:
    queue = host_of(request).queue
    return await asyncio.to_thread(queue.submit, endpoint.name, owner, parsed.model_dump(mode="json"), webhook)


async def answer_when_done(request: Request, job: Job):
    """The result once the job ends; past the host's ``sync_wait``, a 303 to ``/requests/{id}/wait``."""
    host = host_of(request)
    job = await asyncio.to_thread(host.queue.wait, job, host.sync_wait)
    if not job.status.is_terminal:
        return protocol.still_running(job, f"{request.base_url}requests/{job.request_id}/wait")
    return protocol.result(job, file_url(str(request.base_url), host.keys))


# -- routers ---------------------------------------------------------------------------------------


def sync_router() -> APIRouter:
    """``POST /<sub-path>`` per endpoint, published in OpenAPI with the schema models."""
    router = APIRouter()
    for endpoint in ENDPOINTS:
        router.add_api_route(endpoint.path, sync_handler(endpoint), methods=["POST"], name=endpoint.name,
                             response_model=endpoint.output_model, summary=endpoint.summary,
                             description=endpoint.description,
                             responses={422: {"description": "Invalid input (names the field)"}})
    return router


def sync_handler(endpoint: Endpoint):
    async def handler(request: Request, body: BaseModel, owner: str = Depends(auth.owner)):
        return await answer_when_done(request, await submit(request, endpoint, body, owner))

    handler.__annotations__["body"] = endpoint.input_model
    return handler


def queue_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.post("/run/{app_owner}/{app_name}")
    @router.post("/run/{app_owner}/{app_name}/{sub_path:path}")
    async def run(request: Request, app_owner: str, app_name: str, sub_path: str = "",
                  owner: str = Depends(auth.owner)):
        endpoint = endpoint_at(request, sub_path)
        parsed = parse_input(endpoint, await request.body())
        return await answer_when_done(request, await submit(request, endpoint, parsed, owner))

    @router.get("/requests/{request_id}/wait")
    async def wait(request: Request, request_id: str, owner: str = Depends(auth.owner)):
        job = await asyncio.to_thread(host_of(request).queue.find, request_id, owner)
        if job is None:
            return not_found(request_id)
        return await answer_when_done(request, job)

    @router.post("/{app_owner}/{app_name}")
    @router.post("/{app_owner}/{app_name}/{sub_path:path}")
    async def queue_submit(request: Request, app_owner: str, app_name: str, sub_path: str = "",
                           owner: str = Depends(auth.owner)):
        host = host_of(request)
        endpoint = endpoint_at(request, sub_path)
        parsed = parse_input(endpoint, await request.body())
        job = await submit(request, endpoint, parsed, owner, webhook_url(request, host))
        if host.on_submitted is not None:
            await asyncio.to_thread(host.on_submitted, job, str(request.base_url))
        position = await asyncio.to_thread(host.queue.queue_position, job)
        urls = protocol.queue_urls(str(request.base_url), f"{app_owner}/{app_name}", job.request_id)
        return protocol.submitted(job, urls, position)

    @router.get("/{app_owner}/{app_name}/requests/{request_id}/status")
    async def queue_status(request: Request, app_owner: str, app_name: str, request_id: str, logs: bool = False,
                           owner: str = Depends(auth.owner)):
        queue = host_of(request).queue
        job = await asyncio.to_thread(queue.find, request_id, owner)
        if job is None:
            return not_found(request_id)
        position = await asyncio.to_thread(queue.queue_position, job) if not job.status.is_terminal else None
        urls = protocol.queue_urls(str(request.base_url), f"{app_owner}/{app_name}", request_id)
        return protocol.status(job, urls, position, logs)

    @router.get("/{app_owner}/{app_name}/requests/{request_id}")
    async def queue_result(request: Request, app_owner: str, app_name: str, request_id: str,
                           owner: str = Depends(auth.owner)):
        host = host_of(request)
        job = await asyncio.to_thread(host.queue.find, request_id, owner)
        if job is None:
            return not_found(request_id)
        if not job.status.is_terminal:
            return protocol.in_progress(job)
        return protocol.result(job, file_url(str(request.base_url), host.keys))

    @router.put("/{app_owner}/{app_name}/requests/{request_id}/cancel")
    async def queue_cancel(request: Request, app_owner: str, app_name: str, request_id: str,
                           owner: str = Depends(auth.owner)):
        queue = host_of(request).queue
        job = await asyncio.to_thread(queue.find, request_id, owner)
        if job is None:
            return protocol.cancel_reply(None)
        return protocol.cancel_reply(await asyncio.to_thread(queue.cancel, job))

    return router


def files_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/files/{file_name}")
    async def get_file(request: Request, file_name: str, sig: str | None = None,
                       owner: str | None = Depends(auth.optional_owner)):
        host = host_of(request)
        if owner is None and sig is None:
            raise auth.NotAuthenticated()
        request_id = AudioStore.request_id_of(file_name)
        job = await asyncio.to_thread(host.queue.store.get, request_id) if request_id else None
        allowed = job is not None and (not host.keys.required or job.owner == owner
                                       or (sig is not None and host.keys.verify(job.owner, file_name, sig)))
        stored = await asyncio.to_thread(host.open_file, file_name) if allowed else None
        if stored is None:
            return protocol.error_response(404, "File not found")
        return FileResponse(stored.path, media_type=stored.content_type, filename=stored.file_name)

    return router


def meta_router() -> APIRouter:
    """``/health`` (open), and the OpenAPI document and docs page (behind the key like everything else)."""
    router = APIRouter()

    @router.get("/health")
    async def health(request: Request):
        return await asyncio.to_thread(host_of(request).health)

    @router.get("/openapi.json", dependencies=[Depends(auth.owner)], include_in_schema=False)
    async def openapi(request: Request):
        return JSONResponse(request.app.openapi())

    @router.get("/docs", dependencies=[Depends(auth.owner)], include_in_schema=False)
    async def docs(request: Request):
        return get_swagger_ui_html(openapi_url="/openapi.json", title=request.app.title)

    return router


def not_found(request_id: str) -> JSONResponse:
    return protocol.error_response(404, f"Request {request_id} not found", "request_not_found")


# -- errors and the gate ---------------------------------------------------------------------------


def add_error_handlers(app: FastAPI) -> None:
    """fal-shaped errors: 422 field detail, 404 ``Path ... not found``, 500 without internals; all bill 0."""

    async def on_validation_error(request: Request, error: RequestValidationError):
        return protocol.error_response(422, protocol.validation_detail(error.errors(), prefix=()))

    async def on_rejected(request: Request, error: RequestRejected):
        return error.response

    async def on_storage_error(request: Request, error: Exception):  # e.g. a full disk: say so, accept nothing
        logger.exception("storage error on %s", request.url.path)
        return protocol.error_response(
            503, f"The server cannot write to its data dir ({type(error).__name__}: {error}); the request was not "
                 "accepted and nothing was billed.", "storage_error")

    async def on_unhandled(request: Request, error: Exception):  # runs outside the Gate: bill 0 here
        logger.exception("unhandled error on %s", request.url.path)
        return protocol.error_response(500, "Internal Server Error", "internal_error")

    async def on_http_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 404:
            return protocol.error_response(404, f"Path {request.url.path} not found")
        if error.status_code == 400:  # FastAPI's "error parsing the body" (e.g. invalid UTF-8)
            return protocol.field_error(["body"], str(error.detail), "json_invalid")
        error_type = "unauthorized" if error.status_code == 401 else None
        return protocol.error_response(error.status_code, error.detail, error_type, headers=error.headers)

    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(RequestRejected, on_rejected)
    app.add_exception_handler(sqlite3.Error, on_storage_error)
    app.add_exception_handler(OSError, on_storage_error)
    app.add_exception_handler(Exception, on_unhandled)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


class Gate:
    """ASGI middleware in front of every route.

    * Request bodies over the target endpoint's limit -> 413 before the app reads them.
    * ``x-fal-billable-units: 0`` on every response that did not set it, and on all 4xx/5xx.
    """

    def __init__(self, app, settings: Settings, max_body_bytes: int | None = None):
        self.app = app
        self.settings = settings
        self.max_body_bytes = max_body_bytes

    def limit_for(self, path: str) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        endpoint = for_request_path(path)
        return endpoint.body_limit(self.settings) if endpoint else DEFAULT_MAX_BODY_BYTES

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = billing_send(send)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            limit = self.limit_for(scope["path"])
            body = await read_body(scope, receive, limit)
            if body is None:
                response = protocol.error_response(413, f"Request body is larger than {limit} bytes.",
                                                   "request_too_large")
                return await response(scope, receive, send)
            receive = replay(body)
        await self.app(scope, receive, send)


async def read_body(scope, receive, limit: int) -> bytes | None:
    headers = dict(scope["headers"])
    declared = headers.get(b"content-length", b"").decode("latin-1")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def billing_send(send):
    header = billing.BILLING_HEADER.encode()

    async def send_with_billing(message):
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if message["status"] < 400 or k.lower() != header]
            if not any(k.lower() == header for k, _ in headers):
                headers.append((header, b"0"))
            message = {**message, "headers": headers}
        await send(message)

    return send_with_billing


def replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def create_web_app(host: Host, *, title: str = "ACE-Step (acestep-app)", version: str = "0+unknown",
                   lifespan=None) -> FastAPI:
    """The routes above as an ASGI app for ``host``."""
    app = FastAPI(title=title, description=DESCRIPTION, version=version, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.host = host
    app.state.keys = host.keys
    add_error_handlers(app)
    app.include_router(meta_router())
    app.include_router(sync_router())
    app.include_router(files_router())
    for router in host.routers:  # before the queue's catch-all /{owner}/{app} routes
        app.include_router(router)
    app.include_router(queue_router())
    app.add_middleware(Gate, settings=host.settings, max_body_bytes=host.max_body_bytes)
    return app

