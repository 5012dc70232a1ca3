"""A throwaway HTTP server on a loopback address for outbound-request tests (never any other address).

``LocalServer(routes)`` serves ``routes[path](handler)`` on 127.0.0.x in a thread; the handler is
the ``BaseHTTPRequestHandler``, so a route writes its own status, headers and body. It records every
request as ``(method, path, headers, body)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = Callable[[BaseHTTPRequestHandler], None]


class LocalServer:
    def __init__(self, routes: dict[str, Route], host: str = "127.0.0.1", port: int = 0):
        self.routes = routes
        self.requests: list[tuple[str, str, dict, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append((self.command, self.path, dict(self.headers), body))
                self.request_body = body  # for routes that answer according to what was sent
                route = server.routes.get(self.path.split("?")[0])
                if route is None:
                    send(self, 404, b"not here")
                else:
                    try:
                        route(self)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client hung up on purpose (size cap, timeout)

            do_GET = do_POST = handle_any

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False  # a route that outlives its client must not hold up the test
        self.host, self.port = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict | None = None) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    if "Content-Length" not in (headers or {}):
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def body_route(body: bytes, content_type: str = "application/octet-stream") -> Route:
    return lambda handler: send(handler, 200, body, {"Content-Type": content_type})


def redirect_route(location: str, status: int = 302) -> Route:
    return lambda handler: send(handler, status, b"", {"Location": location})


def declared_huge_route(declared: int = 10**12) -> Route:
    """Claims a huge Content-Length, then sends a few bytes and hangs up."""
    return lambda handler: send(handler, 200, b"RIFF", {"Content-Length": str(declared)})


def endless_route(chunk: bytes = b"\0" * 65536) -> Route:
    """A chunked body that never ends (stops when the client hangs up)."""

    def route(handler):
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(100_000):
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    return route


def slow_route(delay: float, body: bytes = b"late") -> Route:
    def route(handler):
        time.sleep(delay)
        send(handler, 200, body)

    return route


def drip_route(interval: float, count: int = 1000) -> Route:
    """One byte every ``interval`` seconds: each read is quick, the whole body is not."""

    def route(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(count))
        handler.end_headers()
        for _ in range(count):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(interval)

    return route
