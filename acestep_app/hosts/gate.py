"""The ASGI middleware in front of every route of the local and Modal hosts.

In order, before any route runs:

* the ``Host`` header must be one the server answers to (``allowed_hosts``; a page on another site
  that resolves its own name to this server, DNS rebinding, gets a 400);
* a request with a body (``POST``, ``PUT``, ``PATCH``) must carry a valid API key (when keys are
  set) before a byte of its body is read: 401;
* that body must be ``application/json``: 415 (the content types a web page can send cross-site
  without asking are all refused);
* it must fit its endpoint's limit, declared or as it streams in: 413.

``x-fal-billable-units: 0`` goes on every response that did not set it, and on every 4xx/5xx.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from acestep_app.serving import billing, protocol
from acestep_app.serving.auth import UNAUTHORIZED, Keys
from acestep_app.serving.endpoints import DEFAULT_MAX_BODY_BYTES, EndpointRegistry
from acestep_app.settings import Settings

BODY_METHODS = ("POST", "PUT", "PATCH")


class Gate:
    """Host check, auth before body, JSON only, body limits, and the zero billing header (module docstring).

    Args:
        max_body_bytes: per-endpoint overrides of the body limit (endpoint name -> bytes).
        allowed_hosts: the ``Host`` values served (without port; ``"*"`` = any); None: no check.
    """

    def __init__(self, app, settings: Settings, registry: EndpointRegistry, keys: Keys | None = None,
                 max_body_bytes: Mapping[str, int] | None = None, allowed_hosts: Sequence[str] | None = None):
        self.app = app
        self.settings = settings
        self.registry = registry
        self.keys = keys or Keys(None)
        self.max_body_bytes = dict(max_body_bytes or {})
        self.allowed_hosts = None if allowed_hosts is None or "*" in allowed_hosts else {
            host.lower() for host in allowed_hosts}

    def limit_for(self, path: str) -> int:
        endpoint = self.registry.for_request_path(path)
        if endpoint is None:
            return DEFAULT_MAX_BODY_BYTES
        return self.max_body_bytes.get(endpoint.name) or endpoint.body_limit(self.settings)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = billing_send(send)
        refusal = self.refusal(scope)
        if refusal is None and scope["method"] in BODY_METHODS:
            limit = self.limit_for(scope["path"])
            body = await read_body(scope, receive, limit)
            if body is None:
                refusal = protocol.error_response(413, f"Request body is larger than {limit} bytes.",
                                                  "request_too_large")
            else:
                receive = replay(body, receive)
        if refusal is not None:
            return await refusal(scope, receive, send)
        await self.app(scope, receive, send)

    def refusal(self, scope):
        """The answer to a request refused on its headers alone, or None."""
        headers = dict(scope["headers"])
        if self.allowed_hosts is not None:
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed_hosts:
                return protocol.error_response(
                    400, f"This server does not answer to the host name {host!r}; add it to [server].allowed_hosts "
                         "in infra.toml to serve it.", "invalid_host")
        if scope["method"] not in BODY_METHODS:
            return None
        if self.keys.authenticate(headers.get(b"authorization", b"").decode("latin-1")) is None:
            return protocol.error_response(401, UNAUTHORIZED, "unauthorized", headers={"www-authenticate": "Key"})
        media_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        if (scope["method"] == "POST" or has_body or media_type) and not is_json(media_type):
            return protocol.error_response(
                415, f"The request body must be JSON, sent with 'Content-Type: application/json' "
                     f"(got {media_type or 'no Content-Type'!r}).", "unsupported_media_type")
        return None


def is_json(media_type: str) -> bool:
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8000`` -> ``::1``), lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


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


def replay(body: bytes, receive):
    """``receive`` that hands the app the body already read, then the connection's own messages
    (so a route can still notice the client hanging up)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
