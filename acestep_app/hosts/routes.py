"""fal's routes over a :class:`QueueService`, shared by the local server and the Modal app.

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

A synchronous call waits on the event loop (no thread is held), at most ``[server].max_sync_waiters``
at once (more get 429 with ``Retry-After``), and stops waiting when its client hangs up (the job runs
on). A submit past the queue's caps gets 429 with ``Retry-After``, and creates nothing.
"""

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ValidationError

from acestep_app.errors import InputError
from acestep_app.serving import auth, failures, protocol
from acestep_app.serving.auth import file_url
from acestep_app.serving.endpoints import Endpoint, EndpointRegistry
from acestep_app.serving.jobs import Job
from acestep_app.serving.metrics import Metrics
from acestep_app.serving.queue import QueueFull, QueueService
from acestep_app.serving.storage import AudioStore, StoredFile
from acestep_app.settings import Settings

WEBHOOK_PARAM = "fal_webhook"
PUBLISHED_OWNER = "fal-ai"  # the owner in the published paths of non-primary families (any owner is served)
RETRY_AFTER_SECONDS = 5  # what a 429 asks a client to wait


@dataclass
class Host:
    """What a host plugs into the shared routes.

    ``registry``: the endpoints of the families served. ``sync_wait``: seconds a synchronous call waits before answering 303 to ``/requests/{id}/wait``
    (None: until done). ``open_file(name)``: a stored file, or None. ``health()``: the health body.
    ``on_submitted(job, base_url)`` runs after a queue submit;
    ``accepts_webhooks``: False refuses ``?fal_webhook=`` with a 422 (the host cannot deliver them).
    ``max_body_bytes``: per-endpoint body limits (endpoint name -> bytes) over the endpoints' own.
    ``allowed_hosts``: the ``Host`` header values served (None: any; see :mod:`acestep_app.hosts.gate`).
    ``cors_origins``: browser origins allowed cross-site (none by default).
    ``metrics``: the app's Prometheus metrics, fed by the host's queue hooks.
    """

    queue: QueueService
    keys: auth.Keys
    settings: Settings
    registry: EndpointRegistry
    open_file: Callable[[str], StoredFile | None]
    health: Callable[[], dict[str, Any]]
    sync_wait: float | None = None
    max_body_bytes: Mapping[str, int] | None = None  # serve --max-body-bytes ENDPOINT=N
    on_submitted: Callable[[Job, str], None] | None = None  # (job, base URL) after every queue submit
    routers: list[APIRouter] = field(default_factory=list)  # the host's own routes (e.g. a JWKS)
    accepts_webhooks: bool = False
    allowed_hosts: Sequence[str] | None = None
    cors_origins: Sequence[str] = ()
    metrics: Metrics | None = None  # served at /metrics when [metrics].enabled


class WaitSlots:
    """The synchronous calls waiting at once (on the event loop's thread only), at most ``limit``."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self.used >= self.limit:
            raise RequestRejected(too_many(f"{self.limit} synchronous calls are already waiting; retry later, "
                                           "or submit to the queue and poll.", "too_many_waiting"))
        self.used += 1
        try:
            yield
        finally:
            self.used -= 1


def too_many(message: str, error_type: str) -> JSONResponse:
    return protocol.error_response(429, message, error_type, headers={"retry-after": str(RETRY_AFTER_SECONDS)})


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


def endpoint_at(request: Request, app_name: str | None, sub_path: str) -> Endpoint:
    endpoint = host_of(request).registry.find(app_name, sub_path)
    if endpoint is None:
        raise RequestRejected(protocol.error_response(404, f"Path {request.url.path} not found"))
    return endpoint


async def webhook_url(request: Request, host: Host) -> str | None:
    """``?fal_webhook=`` checked by the outbound-request guard; a refused URL is a 422 naming it.

    Its name is resolved off the event loop, within ``[security].dns_timeout_seconds``.
    """
    url = request.query_params.get(WEBHOOK_PARAM)
    if url is None:
        return None
    if not host.accepts_webhooks:
        raise RequestRejected(protocol.field_error(
            ["query", WEBHOOK_PARAM], "Webhooks are not delivered by this host; poll the status URL instead."))
    from acestep_app.audio.netguard import FetchError, check_url_async

    security = host.settings.security
    try:
        await check_url_async(url, allow_private=security.allow_private_urls, timeout=security.dns_timeout_seconds)
    except (ValueError, FetchError) as error:
        raise RequestRejected(protocol.field_error(["query", WEBHOOK_PARAM], str(error)))
    return url


async def submit(request: Request, endpoint: Endpoint, parsed: BaseModel, owner: str,
                 webhook: str | None = None) -> Job:
    """A new job for ``parsed``; 429 past the queue's caps, 422 for an unusable inline file."""
    queue = host_of(request).queue
    # The fields the client sent: the others get their defaults again when the job runs, so an endpoint
    # can still tell a sent value from a default (the 1.5 planner forces only the metadata a client sent).
    sent = parsed.model_dump(mode="json", exclude_unset=True)
    try:
        return await asyncio.to_thread(queue.submit, endpoint.name, owner, sent, webhook, base_url=str(request.base_url))
    except QueueFull as error:
        raise RequestRejected(too_many(str(error), "queue_full")) from None
    except InputError as error:
        raise RequestRejected(protocol.failure_response(failures.failure_for(error))) from None


@contextmanager
def wait_slot(request: Request) -> Iterator[None]:
    with request.app.state.wait_slots.hold():
        yield


async def answer_when_done(request: Request, job: Job):
    """The result once the job ends; past the host's ``sync_wait``, a 303 to ``/requests/{id}/wait``."""
    host = host_of(request)
    job = await host.queue.wait_async(job, host.sync_wait, gone=request.is_disconnected)
    if not job.status.is_terminal:
        return protocol.still_running(job, f"{request.base_url}requests/{job.request_id}/wait")
    return protocol.result(job, file_url(str(request.base_url), host.keys))


# -- routers ---------------------------------------------------------------------------------------


def sync_router(registry: EndpointRegistry) -> APIRouter:
    """A synchronous ``POST`` per endpoint, published in OpenAPI with the schema models.

    The primary family's endpoints answer at ``/<sub-path>``; every other family's at
    ``/run/fal-ai/<app>/<sub-path>`` (as ``fal_client.run`` calls it; any owner works).
    """
    router = APIRouter()
    for family in registry.families:
        prefix = "" if family is registry.primary else f"/run/{PUBLISHED_OWNER}/{family.app_name}"
        for endpoint in registry.endpoints_of(family):
            path = (prefix + endpoint.path).rstrip("/") or "/"
            router.add_api_route(path, sync_handler(endpoint), methods=["POST"], name=endpoint.name,
                                 response_model=endpoint.output_model, summary=endpoint.summary,
                                 description=endpoint.description, tags=[family.name],
                                 responses={422: {"description": "Invalid input (names the field)"}})
    return router


def sync_handler(endpoint: Endpoint):
    async def handler(request: Request, body: BaseModel, owner: str = Depends(auth.owner)):
        with wait_slot(request):
            return await answer_when_done(request, await submit(request, endpoint, body, owner))

    handler.__annotations__["body"] = endpoint.input_model
    return handler


def queue_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.post("/run/{app_owner}/{app_name}")
    @router.post("/run/{app_owner}/{app_name}/{sub_path:path}")
    async def run(request: Request, app_owner: str, app_name: str, sub_path: str = "",
                  owner: str = Depends(auth.owner)):
        endpoint = endpoint_at(request, app_name, sub_path)
        parsed = parse_input(endpoint, await request.body())
        with wait_slot(request):
            return await answer_when_done(request, await submit(request, endpoint, parsed, owner))

    @router.get("/requests/{request_id}/wait")
    async def wait(request: Request, request_id: str, owner: str = Depends(auth.owner)):
        job = await asyncio.to_thread(host_of(request).queue.find, request_id, owner)
        if job is None:
            return not_found(request_id)
        with wait_slot(request):
            return await answer_when_done(request, job)

    @router.post("/{app_owner}/{app_name}")
    @router.post("/{app_owner}/{app_name}/{sub_path:path}")
    async def queue_submit(request: Request, app_owner: str, app_name: str, sub_path: str = "",
                           owner: str = Depends(auth.owner)):
        host = host_of(request)
        endpoint = endpoint_at(request, app_name, sub_path)
        parsed = parse_input(endpoint, await request.body())
        job = await submit(request, endpoint, parsed, owner, await webhook_url(request, host))
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
    async def get_file(request: Request, file_name: str, sig: str | None = None, exp: str | None = None,
                       owner: str | None = Depends(auth.optional_owner)):
        host = host_of(request)
        if owner is None and sig is None:
            raise auth.NotAuthenticated()
        request_id = AudioStore.request_id_of(file_name)
        job = await asyncio.to_thread(host.queue.store.get, request_id) if request_id else None
        allowed = job is not None and (not host.keys.required or job.owner == owner
                                       or (sig is not None and host.keys.verify(job.owner, file_name, sig, exp)))
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
