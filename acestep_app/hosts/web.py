"""The local server's and the Modal app's ASGI app: fal's routes, fal-shaped errors, the gate.

:func:`create_web_app` puts the routers of :mod:`acestep_app.hosts.routes` behind
:class:`~acestep_app.hosts.gate.Gate` for one :class:`~acestep_app.hosts.routes.Host`, with the
playground (:mod:`acestep_app.hosts.playground`) and ``/metrics`` (:mod:`acestep_app.hosts.metrics`);
CORS only for the origins the host names (none by default).
"""

from __future__ import annotations

import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from acestep_app.hosts.gate import Gate
from acestep_app.hosts.metrics import CountResponses, metrics_router
from acestep_app.hosts.playground import playground_router
from acestep_app.hosts.routes import (
    Host,
    RequestRejected,
    WaitSlots,
    files_router,
    meta_router,
    queue_router,
    sync_router,
)
from acestep_app.serving import protocol

logger = logging.getLogger(__name__)


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


def create_web_app(host: Host, *, title: str = "ACE-Step (acestep-app)", version: str = "0+unknown",
                   lifespan=None) -> FastAPI:
    """fal's routes as an ASGI app for ``host``."""
    description = " ".join(family.title for family in host.registry.families)
    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.host = host
    app.state.keys = host.keys
    app.state.wait_slots = WaitSlots(host.settings.server.max_sync_waiters)
    add_error_handlers(app)
    app.include_router(meta_router())
    app.include_router(sync_router(host.registry))
    app.include_router(files_router())
    app.include_router(playground_router(host.registry))
    metrics = host.metrics if host.settings.metrics.enabled else None
    if metrics is not None:
        app.include_router(metrics_router(metrics, host.settings.metrics))
    for router in host.routers:  # before the queue's catch-all /{owner}/{app} routes
        app.include_router(router)
    app.include_router(queue_router())
    app.add_middleware(Gate, settings=host.settings, registry=host.registry, keys=host.keys,
                       max_body_bytes=host.max_body_bytes, allowed_hosts=host.allowed_hosts)
    if host.cors_origins:  # outside the gate: a preflight carries no key, and refusals get CORS headers too
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(host.cors_origins), allow_methods=["GET", "POST", "PUT"],
                           allow_headers=["authorization", "content-type"], expose_headers=["x-fal-billable-units",
                                                                                           "x-fal-request-id"])
    if metrics is not None:
        app.add_middleware(CountResponses, metrics=metrics)  # outermost: sees the Gate's answers too
    return app
