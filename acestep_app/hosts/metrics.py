"""``GET /metrics`` (Prometheus' text format) and the middleware counting HTTP responses.

Who may scrape (``[metrics]`` in infra.toml): with a key in the environment variable named by
``key_env``, whoever sends ``Authorization: Bearer <key>``; without one, loopback clients only (a
Prometheus on the same machine, or an SSH tunnel). The API keys of the endpoints never grant it:
the metrics are the operator's, not a customer's.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from fastapi import APIRouter, Request
from fastapi.responses import Response

from acestep_app.serving import protocol
from acestep_app.serving.metrics import CONTENT_TYPE, Metrics
from acestep_app.settings import MetricsSection

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # others count as OTHER


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def metrics_router(metrics: Metrics, settings: MetricsSection) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    key = os.environ.get(settings.key_env, "").encode()

    @router.get("/metrics")
    async def scrape(request: Request):
        if key:
            scheme, _, presented = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), key):
                return protocol.error_response(401, "Send the metrics key: 'Authorization: Bearer <key>'.",
                                               "unauthorized", headers={"www-authenticate": "Bearer"})
        elif not is_loopback(request.client.host if request.client else None):
            return protocol.error_response(
                403, f"/metrics answers loopback clients only; set {settings.key_env} to scrape from elsewhere.",
                "forbidden")
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return router


class CountResponses:
    """ASGI middleware: every HTTP response's method and status into ``metrics`` (an exception counts as 500)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def counting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "OTHER"  # label values stay bounded
            self.metrics.http_response(method, status)
