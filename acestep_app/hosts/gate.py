"""The ASGI middleware in front of every route of the local and Modal hosts.

* A request body over its endpoint's limit gets a 413 before the app reads it.
* ``x-fal-billable-units: 0`` goes on every response that did not set it, and on every 4xx/5xx.
"""

from __future__ import annotations

from acestep_app.serving import billing, protocol
from acestep_app.serving.endpoints import DEFAULT_MAX_BODY_BYTES, EndpointRegistry
from acestep_app.settings import Settings


class Gate:
    """Body limits and the zero billing header, in front of every route (see the module docstring)."""

    def __init__(self, app, settings: Settings, registry: EndpointRegistry, max_body_bytes: int | None = None):
        self.app = app
        self.settings = settings
        self.registry = registry
        self.max_body_bytes = max_body_bytes

    def limit_for(self, path: str) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        endpoint = self.registry.for_request_path(path)
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
