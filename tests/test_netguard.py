"""The outbound-URL guard: address rule, every redirect hop and DNS answer checked, caps, timeouts.

Every server here listens on a loopback address. To play "a public host", a test declares one
loopback address (127.0.0.2) public by wrapping the guard's rule; everything else keeps the real rule.
"""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest

from acestep_app.audio import netguard
from acestep_app.audio.netguard import FetchError, ResponseTooLarge, UnsafeURLError, check_url, fetch, post
from local_http import (
    LocalServer,
    body_route,
    declared_huge_route,
    drip_route,
    endless_route,
    redirect_route,
    send,
    slow_route,
)

LIMITS = dict(timeout=5.0, max_bytes=1 << 20, max_redirects=3)




@pytest.fixture
def fake_dns(monkeypatch):
    """``fake_dns["name"] = ["127.0.0.2", ...]`` makes ``name`` resolve to those addresses."""
    names: dict[str, list[str]] = {}
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (address, port)) for address in names[host]]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(netguard.socket, "getaddrinfo", getaddrinfo)
    return names


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "100.64.0.1", "100.127.255.254",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::1", "64:ff9b::a00:1",
])
def test_non_public_addresses_are_refused(address):
    assert netguard.refusal_reason(ipaddress.ip_address(address), allow_private=False) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert netguard.refusal_reason(ipaddress.ip_address(address), allow_private=False) is None


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "100.100.100.200"])
def test_metadata_addresses_are_refused_even_when_private_urls_are_allowed(address):
    assert "metadata" in netguard.refusal_reason(ipaddress.ip_address(address), allow_private=True)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/a.wav", "http://localhost/a.wav", "https://[::1]/a.wav", "http://[::ffff:127.0.0.1]/",
    "http://169.254.169.254/latest/meta-data/", "http://metadata.google.internal/computeMetadata/v1/",
    "http://10.0.0.1:8080/x", "http://2130706433/",  # 127.0.0.1 as one integer
])
def test_check_url_refuses_internal_targets(url):
    with pytest.raises(UnsafeURLError):
        check_url(url, allow_private=False)


@pytest.mark.parametrize("url", ["ftp://example.com/a.wav", "file:///etc/passwd", "gopher://x/", "/relative.wav",
                                 "data:audio/wav;base64,AAAA", "http://", "not a url"])
def test_only_http_and_https_are_accepted(url):
    with pytest.raises(UnsafeURLError):
        check_url(url, allow_private=True)


def test_check_url_allows_loopback_only_when_private_urls_are_allowed():
    check_url("http://127.0.0.1:9/x", allow_private=True)
    with pytest.raises(UnsafeURLError, match="loopback"):
        check_url("http://127.0.0.1:9/x", allow_private=False)
    with pytest.raises(UnsafeURLError, match="metadata"):
        check_url("http://169.254.169.254/", allow_private=True)


def test_fetch_from_a_local_server_needs_allow_private():
    with LocalServer({"/a.wav": body_route(b"RIFF-bytes")}) as server:
        assert fetch(server.url("/a.wav"), allow_private=True, **LIMITS) == b"RIFF-bytes"
        with pytest.raises(UnsafeURLError):
            fetch(server.url("/a.wav"), allow_private=False, **LIMITS)
    assert len(server.requests) == 1  # the refused fetch never connected


def test_a_redirect_to_loopback_is_refused(public_loopback):
    with LocalServer({"/secret": body_route(b"internal")}) as internal, \
            LocalServer({"/a.wav": redirect_route(internal.url("/secret"))}, host="127.0.0.2") as public:
        assert fetch(public.url("/a.wav"), allow_private=True, **LIMITS) == b"internal"  # the redirect works
        with pytest.raises(UnsafeURLError, match="127.0.0.1"):
            fetch(public.url("/a.wav"), allow_private=False, **LIMITS)
    assert len(internal.requests) == 1  # only the allowed fetch reached it


def test_a_redirect_to_metadata_is_refused_even_when_private_urls_are_allowed():
    with LocalServer({"/a.wav": redirect_route("http://169.254.169.254/latest/meta-data/")}) as server:
        with pytest.raises(UnsafeURLError, match="metadata"):
            fetch(server.url("/a.wav"), allow_private=True, **LIMITS)


def test_redirects_are_followed_up_to_the_limit_and_may_be_relative():
    routes = {"/0": redirect_route("/1"), "/1": redirect_route("/2", status=307), "/2": body_route(b"end")}
    with LocalServer(routes) as server:
        assert fetch(server.url("/0"), allow_private=True, timeout=5.0, max_bytes=100, max_redirects=2) == b"end"
        with pytest.raises(FetchError, match="redirects"):
            fetch(server.url("/0"), allow_private=True, timeout=5.0, max_bytes=100, max_redirects=1)


def test_a_redirect_to_another_scheme_is_refused():
    with LocalServer({"/a.wav": redirect_route("file:///etc/passwd")}) as server:
        with pytest.raises(UnsafeURLError, match="http"):
            fetch(server.url("/a.wav"), allow_private=True, **LIMITS)


def test_every_dns_answer_is_checked(public_loopback, fake_dns):
    fake_dns["mixed.test"] = ["127.0.0.2", "127.0.0.1"]  # one public answer, one loopback: refused
    fake_dns["songs.test"] = ["127.0.0.2"]
    with LocalServer({"/a.wav": body_route(b"ok")}, host="127.0.0.2") as server:
        with pytest.raises(UnsafeURLError, match="127.0.0.1"):
            fetch(server.url("/a.wav", host="mixed.test"), allow_private=False, **LIMITS)
        assert fetch(server.url("/a.wav", host="songs.test"), allow_private=False, **LIMITS) == b"ok"
    # The socket went to the checked address; the request still names the host.
    assert [request[2]["Host"] for request in server.requests] == [f"songs.test:{server.port}"]


def test_the_connection_goes_to_the_address_that_was_checked(public_loopback, fake_dns):
    """DNS rebinding: the name is resolved once per connection, and that answer is the one dialled."""
    answers = iter([["127.0.0.2"], ["127.0.0.1"]])  # a second lookup would say loopback
    real_getaddrinfo = netguard.socket.getaddrinfo
    lookups = []

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.test":
            lookups.append(host)
            fake_dns[host] = next(answers)
        return real_getaddrinfo(host, port, *args, **kwargs)

    netguard.socket.getaddrinfo = rebinding
    try:
        with LocalServer({"/a.wav": body_route(b"public")}, host="127.0.0.2") as server:
            assert fetch(server.url("/a.wav", host="rebind.test"), allow_private=False, **LIMITS) == b"public"
    finally:
        netguard.socket.getaddrinfo = real_getaddrinfo
    assert lookups == ["rebind.test"]


def test_a_huge_declared_length_is_refused_before_reading():
    with LocalServer({"/a.wav": declared_huge_route()}) as server:
        with pytest.raises(ResponseTooLarge) as caught:
            fetch(server.url("/a.wav"), allow_private=True, **LIMITS)
    assert caught.value.max_bytes == LIMITS["max_bytes"]


def test_an_endless_body_stops_at_the_cap():
    with LocalServer({"/a.wav": endless_route()}) as server:
        with pytest.raises(ResponseTooLarge):
            fetch(server.url("/a.wav"), allow_private=True, timeout=10.0, max_bytes=300_000, max_redirects=0)


def test_the_cap_is_inclusive():
    with LocalServer({"/a.wav": body_route(b"x" * 100)}) as server:
        assert len(fetch(server.url("/a.wav"), allow_private=True, timeout=5.0, max_bytes=100, max_redirects=0)) == 100
        with pytest.raises(ResponseTooLarge):
            fetch(server.url("/a.wav"), allow_private=True, timeout=5.0, max_bytes=99, max_redirects=0)


def test_a_slow_server_times_out():
    with LocalServer({"/late": slow_route(3.0), "/drip": drip_route(0.05, count=40)}) as server:
        with pytest.raises(FetchError, match="timed out"):
            fetch(server.url("/late"), allow_private=True, timeout=0.5, max_bytes=100, max_redirects=0)
        # Each byte arrives well within the timeout; the whole body does not.
        with pytest.raises(FetchError, match="timed out"):
            fetch(server.url("/drip"), allow_private=True, timeout=0.5, max_bytes=100, max_redirects=0)


def test_error_statuses_and_refused_connections_are_fetch_errors():
    with LocalServer({"/gone": lambda handler: send(handler, 404, b"no")}) as server:
        with pytest.raises(FetchError, match="404"):
            fetch(server.url("/gone"), allow_private=True, **LIMITS)
        closed_port = server.port
    with pytest.raises(FetchError):
        fetch(f"http://127.0.0.1:{closed_port}/a.wav", allow_private=True, **LIMITS)


def test_post_sends_once_and_does_not_follow_redirects():
    received = []

    def receiver(handler):
        received.append(handler.path)
        send(handler, 200, b'{"ok": true}', {"Content-Type": "application/json"})

    routes = {"/hook": receiver, "/moved": redirect_route("/hook", status=307)}
    with LocalServer(routes) as server:
        response = post(server.url("/hook"), content=b'{"a": 1}', headers={"Content-Type": "application/json"},
                        allow_private=True, timeout=5.0)
        assert isinstance(response, httpx.Response) and response.status_code == 200
        assert response.json() == {"ok": True}
        moved = post(server.url("/moved"), content=b"{}", headers={}, allow_private=True, timeout=5.0)
        assert moved.status_code == 307
        with pytest.raises(UnsafeURLError):
            post(server.url("/hook"), content=b"{}", headers={}, allow_private=False, timeout=5.0)
    assert received == ["/hook"]
    method, _, headers, body = server.requests[0]
    assert (method, body, headers["Content-Type"]) == ("POST", b'{"a": 1}', "application/json")


def test_post_timeouts_are_httpx_timeouts():
    with LocalServer({"/hook": slow_route(3.0)}) as server:
        with pytest.raises(httpx.TimeoutException):
            post(server.url("/hook"), content=b"{}", headers={}, allow_private=True, timeout=0.5)
