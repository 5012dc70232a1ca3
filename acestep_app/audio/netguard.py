"""The one guard for outbound requests: source-audio and LoRA downloads, webhook deliveries.

A URL a client hands us must not turn the server into a proxy into its own network. Every request
made through this module:

* uses ``http`` or ``https`` only;
* resolves the host itself and refuses it when **any** address in the DNS answer is loopback,
  private, link-local, CGNAT (100.64/10), multicast, reserved, unspecified or otherwise not global
  (IPv4-mapped, 6to4 and NAT64 IPv6 addresses are judged by the IPv4 address inside them);
* connects to the address it checked (the socket is opened to the IP; ``Host`` and TLS SNI keep the
  name), so a second DNS answer cannot swap in another address (DNS rebinding);
* follows redirects by hand, checking every hop the same way.

``allow_private=True`` (``[security].allow_private_urls``, ``serve --allow-private-urls``) lifts the
address rule for local use, except for cloud metadata endpoints, which are always refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterator

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

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURLError(ValueError):
    """The URL is refused: not http(s), or its host resolves to an address we never contact."""


class FetchError(RuntimeError):
    """The download failed: unreachable, timed out, an HTTP error status, too many redirects."""


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


def resolve_checked(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """Every address ``host`` resolves to, once all of them passed the rule (one bad answer refuses all)."""
    name = host.lower().rstrip(".").strip("[]")
    if name in METADATA_HOSTS:
        raise UnsafeURLError(f"{host} is a cloud metadata host")
    try:
        answers = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeURLError(f"cannot resolve {host}: {error}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(answer[4][0].split("%")[0]) for answer in answers))
    for address in addresses:
        reason = refusal_reason(address, allow_private=allow_private)
        if reason is not None:
            raise UnsafeURLError(f"{host} resolves to {address}, {reason}; outbound requests there are refused")
    if not addresses:
        raise UnsafeURLError(f"cannot resolve {host}")
    return addresses


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise :class:`UnsafeURLError` unless ``url`` is http(s) and every address of its host is allowed."""
    _, host, port = split_url(url)
    resolve_checked(host, port, allow_private=allow_private)


# -- a transport that connects only to checked addresses ----------------------------------------------

class GuardedNetworkBackend(httpcore.NetworkBackend):
    """httpcore backend whose TCP connections go to the addresses :func:`resolve_checked` passed."""

    def __init__(self, *, allow_private: bool):
        self.allow_private = allow_private
        self.backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = resolve_checked(host, port, allow_private=self.allow_private)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return self.backend.connect_tcp(str(address), port, timeout, local_address, socket_options)
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

    def __init__(self, *, allow_private: bool):
        import certifi

        self.pool = httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            network_backend=GuardedNetworkBackend(allow_private=allow_private),
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


def guarded_client(*, allow_private: bool, timeout: float) -> httpx.Client:
    return httpx.Client(
        transport=GuardedTransport(allow_private=allow_private),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,  # no proxies from the environment: the guard must see the real target
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    )


# -- the two calls ------------------------------------------------------------------------------------

def copy_capped(response: httpx.Response, write: Callable[[bytes], object], max_bytes: int, deadline: float) -> int:
    """Hand the raw body to ``write`` chunk by chunk, refusing more than ``max_bytes`` (declared or received)
    and stopping at ``deadline``; returns the byte count."""
    declared = response.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(max_bytes)
    received = 0
    for chunk in response.iter_raw():
        received += len(chunk)
        if received > max_bytes:
            raise ResponseTooLarge(max_bytes)
        if time.monotonic() > deadline:
            raise FetchError("the download timed out")
        write(chunk)
    return received


def fetch(url: str, *, allow_private: bool, timeout: float, max_bytes: int, max_redirects: int) -> bytes:
    """GET ``url`` and return its body, following at most ``max_redirects`` redirects.

    Raises :class:`UnsafeURLError` (refused URL, at any hop), :class:`ResponseTooLarge` and
    :class:`FetchError` (network failure, ``timeout`` seconds passed in all, non-2xx status).
    """
    body = bytearray()
    stream(url, body.extend, allow_private=allow_private, timeout=timeout, max_bytes=max_bytes,
           max_redirects=max_redirects)
    return bytes(body)


def stream(url: str, write: Callable[[bytes], object], *, allow_private: bool, timeout: float, max_bytes: int,
           max_redirects: int, headers: dict[str, str] | None = None) -> int:
    """:func:`fetch`, handing the body to ``write`` as it arrives (large files go to disk, not memory).

    ``headers`` go with the first request only, never to a host a redirect points at (a Hub token
    stays with the Hub, not its CDN). Returns the number of bytes written.
    """
    deadline = time.monotonic() + timeout
    with guarded_client(allow_private=allow_private, timeout=timeout) as client:
        for hop in range(max_redirects + 1):
            split_url(url)
            try:
                with client.stream("GET", url, headers=headers if hop == 0 else None) as response:
                    if response.is_redirect:
                        url = str(response.url.join(response.headers["location"]))
                        continue
                    if not response.is_success:
                        raise FetchError(f"the server answered HTTP {response.status_code}")
                    return copy_capped(response, write, max_bytes, deadline)
            except httpx.TimeoutException:
                raise FetchError("the download timed out") from None
            except httpx.HTTPError as error:
                raise FetchError(f"the download failed: {error or type(error).__name__}") from None
    raise FetchError(f"more than {max_redirects} redirects")


def post(url: str, *, content: bytes, headers: dict, allow_private: bool, timeout: float) -> httpx.Response:
    """POST ``content`` once, without following redirects; the response body is read up to 1 MiB.

    Raises :class:`UnsafeURLError` for a refused target and httpx's errors for transport failures
    (``httpx.TimeoutException``, ``httpx.TransportError``); any HTTP status is returned, not raised.
    """
    split_url(url)
    deadline = time.monotonic() + timeout
    with guarded_client(allow_private=allow_private, timeout=timeout) as client:
        with client.stream("POST", url, content=content, headers=headers) as response:
            body = b""
            for chunk in response.iter_raw():
                body += chunk
                if len(body) >= MAX_POST_RESPONSE_BYTES or time.monotonic() > deadline:
                    break
            kept = [(name, value) for name, value in response.headers.multi_items()
                    if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
            return httpx.Response(response.status_code, headers=kept, content=body[:MAX_POST_RESPONSE_BYTES],
                                  request=response.request)
