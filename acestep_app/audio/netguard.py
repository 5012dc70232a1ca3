"""The one guard for outbound requests: source-audio and LoRA downloads, webhook deliveries.

A URL a client hands us must not turn the server into a proxy into its own network. Every request
made through this module:

* uses ``http`` or ``https`` only;
* resolves the host itself and refuses it when **any** address in the DNS answer is loopback,
  private, link-local, CGNAT (100.64/10), multicast, reserved, unspecified or otherwise not global
  (IPv4-mapped, 6to4 and NAT64 IPv6 addresses are judged by the IPv4 address inside them);
* connects to the address it checked (the socket is opened to the IP; ``Host`` and TLS SNI keep the
  name), so a second DNS answer cannot swap in another address (DNS rebinding);
* follows redirects by hand, checking every hop the same way;
* runs under one deadline: DNS (on a small resolver pool of its own, never the event loop's or
  asyncio's default pool), connect, TLS, every redirect hop and every read of the body each get
  only what is left of it, so ``timeout`` bounds the whole call.

:func:`fetch` / :func:`stream` (downloads: source audio, adapters) and :func:`post` (webhooks)
are the calls; :func:`check_url` / :func:`check_url_async` vet a URL before it is accepted.

``allow_private=True`` (``[security].allow_private_urls``, ``serve --allow-private-urls``) lifts the
address rule for local use, except for cloud metadata endpoints, which are always refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import httpcore
import httpx

ALLOWED_SCHEMES = ("http", "https")
METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
    "metadata.azure.com",
})
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(address) for address in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
    "169.254.170.2",  # AWS ECS task metadata
    "169.254.169.123",  # AWS time sync
    "100.100.100.200",  # Alibaba Cloud
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "fd00:ec2::23",
))
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
USER_AGENT = "acestep-app"
MAX_POST_RESPONSE_BYTES = 1024 * 1024
DEFAULT_DNS_TIMEOUT = 5.0  # seconds, where a caller gives no deadline
RESOLVER_THREADS = 8  # a resolver that hangs holds one of these, never a thread anyone else needs

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURLError(ValueError):
    """The URL is refused: not http(s), or its host resolves to an address we never contact."""


class FetchError(RuntimeError):
    """The download failed: unreachable, timed out, an HTTP error status, too many redirects."""


class ResolveTimeout(FetchError):
    """The host's name did not resolve in the time left (a slow or dead resolver; worth retrying)."""


class ResponseTooLarge(FetchError):
    """The response is (or says it is) larger than the byte cap."""

    def __init__(self, max_bytes: int):
        super().__init__(f"the response is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


# -- the address rule ---------------------------------------------------------------------------------

def embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else ``address`` itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refusal_reason(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why ``address`` is refused, or None when it may be contacted."""
    inner = embedded_ipv4(address)
    if address in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if allow_private:
        return None
    for reason, hit in (
        ("loopback", inner.is_loopback),
        ("unspecified", inner.is_unspecified),
        ("link-local", inner.is_link_local),
        ("multicast", inner.is_multicast),
        ("CGNAT", inner.version == 4 and inner in CGNAT),
        ("private", inner.is_private),
        ("reserved", inner.is_reserved),
        ("not a public", not inner.is_global),
    ):
        if hit:
            return f"a {reason} address"
    return None


def split_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) URL; :class:`UnsafeURLError` for anything else."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise UnsafeURLError(f"not a valid URL: {error}") from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise UnsafeURLError(f"only http and https URLs are fetched, not {parsed.scheme or 'a relative URL'!r}")
    if not parsed.host:
        raise UnsafeURLError("the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.scheme, parsed.host, port


_resolver_lock = threading.Lock()
_resolver: ThreadPoolExecutor | None = None


def resolver_pool() -> ThreadPoolExecutor:
    """The threads ``getaddrinfo`` runs on (created on first use, shared by every caller)."""
    global _resolver
    with _resolver_lock:
        if _resolver is None:
            _resolver = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="netguard-dns")
        return _resolver


def _lookup(name: str, port: int) -> list:
    return socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)


def _literal(name: str) -> list[IPAddress] | None:
    try:
        return [ipaddress.ip_address(name.split("%")[0])]
    except ValueError:
        return None


def _metadata_name(host: str) -> str:
    name = host.lower().rstrip(".").strip("[]")
    if name in METADATA_HOSTS:
        raise UnsafeURLError(f"{host} is a cloud metadata host")
    return name


def _checked(host: str, answers: list, *, allow_private: bool) -> list[IPAddress]:
    addresses = list(dict.fromkeys(ipaddress.ip_address(answer[4][0].split("%")[0]) for answer in answers))
    return _passed(host, addresses, allow_private=allow_private)


def _passed(host: str, addresses: list[IPAddress], *, allow_private: bool) -> list[IPAddress]:
    for address in addresses:
        reason = refusal_reason(address, allow_private=allow_private)
        if reason is not None:
            raise UnsafeURLError(f"{host} resolves to {address}, {reason}; outbound requests there are refused")
    if not addresses:
        raise UnsafeURLError(f"cannot resolve {host}")
    return addresses


def resolve_checked(host: str, port: int, *, allow_private: bool, timeout: float = DEFAULT_DNS_TIMEOUT
                    ) -> list[IPAddress]:
    """Every address ``host`` resolves to, once all of them passed the rule (one bad answer refuses all).

    The lookup runs on :func:`resolver_pool`; :class:`ResolveTimeout` after ``timeout`` seconds.
    """
    name = _metadata_name(host)
    literal = _literal(name)
    if literal is not None:
        return _passed(host, literal, allow_private=allow_private)
    if timeout <= 0:
        raise ResolveTimeout(f"no time left to resolve {host}")
    future = resolver_pool().submit(_lookup, name, port)
    try:
        answers = future.result(timeout)
    except FutureTimeout:
        future.cancel()
        raise ResolveTimeout(f"{host} did not resolve within {timeout:g} s") from None
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeURLError(f"cannot resolve {host}: {error}") from None
    return _checked(host, answers, allow_private=allow_private)


async def resolve_checked_async(host: str, port: int, *, allow_private: bool,
                                timeout: float = DEFAULT_DNS_TIMEOUT) -> list[IPAddress]:
    """:func:`resolve_checked` for the event loop: it waits without blocking the loop or asyncio's pool."""
    name = _metadata_name(host)
    literal = _literal(name)
    if literal is not None:
        return _passed(host, literal, allow_private=allow_private)
    lookup = asyncio.get_running_loop().run_in_executor(resolver_pool(), _lookup, name, port)
    try:
        answers = await asyncio.wait_for(lookup, timeout)
    except TimeoutError:
        raise ResolveTimeout(f"{host} did not resolve within {timeout:g} s") from None
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeURLError(f"cannot resolve {host}: {error}") from None
    return _checked(host, answers, allow_private=allow_private)


def check_url(url: str, *, allow_private: bool, timeout: float = DEFAULT_DNS_TIMEOUT) -> None:
    """Raise :class:`UnsafeURLError` unless ``url`` is http(s) and every address of its host is allowed
    (:class:`ResolveTimeout` when its name does not resolve within ``timeout`` seconds)."""
    _, host, port = split_url(url)
    resolve_checked(host, port, allow_private=allow_private, timeout=timeout)


async def check_url_async(url: str, *, allow_private: bool, timeout: float = DEFAULT_DNS_TIMEOUT) -> None:
    """:func:`check_url` for async code (a request handler): the event loop keeps serving meanwhile."""
    _, host, port = split_url(url)
    await resolve_checked_async(host, port, allow_private=allow_private, timeout=timeout)


# -- a transport that connects only to checked addresses ----------------------------------------------

class Deadline:
    """What is left of one overall time budget (None: no budget, only the per-operation timeouts)."""

    def __init__(self, seconds: float | None):
        self.at = None if seconds is None else time.monotonic() + seconds

    def left(self, timeout: float | None = None, error: type[Exception] = httpcore.ReadTimeout) -> float | None:
        """``timeout`` clamped to the time left; ``error`` when none is left."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise error("the overall deadline passed")
        return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read, write and TLS handshake ends by the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline):
        self.stream = stream
        self.deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, self.deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, self.deadline.left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        left = self.deadline.left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self.stream.start_tls(ssl_context, server_hostname, left), self.deadline)

    def get_extra_info(self, info: str):
        return self.stream.get_extra_info(info)


class GuardedNetworkBackend(httpcore.NetworkBackend):
    """httpcore backend whose TCP connections go to the addresses :func:`resolve_checked` passed,
    with DNS, connect and every later socket operation bounded by ``deadline``."""

    def __init__(self, *, allow_private: bool, deadline: Deadline | None = None):
        self.allow_private = allow_private
        self.deadline = deadline or Deadline(None)
        self.backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        dns_time = self.deadline.left(DEFAULT_DNS_TIMEOUT, httpcore.ConnectTimeout)
        addresses = resolve_checked(host, port, allow_private=self.allow_private, timeout=dns_time)
        last_error: Exception | None = None
        for address in addresses:
            try:
                left = self.deadline.left(timeout, httpcore.ConnectTimeout)
                stream = self.backend.connect_tcp(str(address), port, left, local_address, socket_options)
                return DeadlineStream(stream, self.deadline)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last_error = error
        raise last_error

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise UnsafeURLError("unix sockets are not an outbound target")

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


class _CoreStream(httpx.SyncByteStream):
    def __init__(self, stream):
        self.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with map_transport_errors():
            yield from self.stream

    def close(self) -> None:
        self.stream.close()


@contextlib.contextmanager
def map_transport_errors() -> Iterator[None]:
    """httpcore's exceptions as the httpx exceptions of the same name (what httpx's own transport does)."""
    try:
        yield
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
            httpcore.UnsupportedProtocol) as error:
        raise getattr(httpx, type(error).__name__, httpx.TransportError)(str(error)) from error


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport over :class:`GuardedNetworkBackend`; no proxies, no connection reuse across calls."""

    def __init__(self, *, allow_private: bool, deadline: Deadline | None = None):
        import certifi

        self.pool = httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            network_backend=GuardedNetworkBackend(allow_private=allow_private, deadline=deadline),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                             target=request.url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with map_transport_errors():
            core_response = self.pool.handle_request(core_request)
        return httpx.Response(status_code=core_response.status, headers=core_response.headers,
                              stream=_CoreStream(core_response.stream), extensions=core_response.extensions)

    def close(self) -> None:
        self.pool.close()


def guarded_client(*, allow_private: bool, timeout: float, deadline: Deadline | None = None) -> httpx.Client:
    """An httpx client through the guard; ``deadline`` bounds everything it does, ``timeout`` each operation."""
    return httpx.Client(
        transport=GuardedTransport(allow_private=allow_private, deadline=deadline),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,  # no proxies from the environment: the guard must see the real target
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    )


# -- the two calls ------------------------------------------------------------------------------------

def copy_capped(response: httpx.Response, write: Callable[[bytes], object], max_bytes: int) -> int:
    """Hand the raw body to ``write`` chunk by chunk, refusing more than ``max_bytes`` (declared or
    received); returns the byte count. (Each read is bounded by the client's deadline.)"""
    declared = response.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(max_bytes)
    received = 0
    for chunk in response.iter_raw():
        received += len(chunk)
        if received > max_bytes:
            raise ResponseTooLarge(max_bytes)
        write(chunk)
    return received


def fetch(url: str, *, allow_private: bool, timeout: float, max_bytes: int, max_redirects: int) -> bytes:
    """GET ``url`` and return its body (see :func:`stream`)."""
    body = bytearray()
    stream(url, body.extend, allow_private=allow_private, timeout=timeout, max_bytes=max_bytes,
           max_redirects=max_redirects)
    return bytes(body)


def stream(url: str, write: Callable[[bytes], object], *, allow_private: bool, timeout: float, max_bytes: int,
           max_redirects: int, headers: dict[str, str] | None = None) -> int:
    """GET ``url``, handing the body to ``write`` as it arrives (large files go to disk, not memory),
    following at most ``max_redirects`` redirects; returns the number of bytes written.

    ``timeout`` is one deadline for the whole download: DNS, connect, TLS, every redirect hop and
    the last byte of the body. ``headers`` go with the first request only, never to a host a
    redirect points at (a Hub token stays with the Hub, not its CDN). Raises :class:`UnsafeURLError`
    (refused URL, at any hop), :class:`ResponseTooLarge` and :class:`FetchError` (network failure,
    the deadline passed, non-2xx status). The call for any outbound download (audio, adapters).
    """
    deadline = Deadline(timeout)
    with guarded_client(allow_private=allow_private, timeout=timeout, deadline=deadline) as client:
        for hop in range(max_redirects + 1):
            split_url(url)
            try:
                with client.stream("GET", url, headers=headers if hop == 0 else None) as response:
                    if response.is_redirect:
                        url = str(response.url.join(response.headers["location"]))
                        continue
                    if not response.is_success:
                        raise FetchError(f"the server answered HTTP {response.status_code}")
                    return copy_capped(response, write, max_bytes)
            except httpx.TimeoutException:
                raise FetchError(f"the download timed out (not finished within {timeout:g} s)") from None
            except httpx.HTTPError as error:
                raise FetchError(f"the download failed: {error or type(error).__name__}") from None
    raise FetchError(f"more than {max_redirects} redirects")


def post(url: str, *, content: bytes, headers: dict, allow_private: bool, timeout: float) -> httpx.Response:
    """POST ``content`` once, without following redirects; the response body is read up to 1 MiB.

    ``timeout`` bounds the whole attempt (DNS, connect, sending, the answer). Raises
    :class:`UnsafeURLError` for a refused target and httpx's errors for transport failures
    (``httpx.TimeoutException``, ``httpx.TransportError``) or :class:`ResolveTimeout`; any HTTP
    status is returned, not raised.
    """
    split_url(url)
    deadline = Deadline(timeout)
    with guarded_client(allow_private=allow_private, timeout=timeout, deadline=deadline) as client:
        with client.stream("POST", url, content=content, headers=headers) as response:
            body = b""
            try:
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) >= MAX_POST_RESPONSE_BYTES:
                        break
            except httpx.TimeoutException:
                pass  # the status is what counts; a body still trickling in at the deadline is cut
            kept = [(name, value) for name, value in response.headers.multi_items()
                    if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
            return httpx.Response(response.status_code, headers=kept, content=body[:MAX_POST_RESPONSE_BYTES],
                                  request=response.request)
