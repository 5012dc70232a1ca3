"""The editing endpoints (audio-to-audio, audio-inpaint, audio-outpaint) on all three hosts (tests/hosts.py).

A song arrives as a ``data:`` URI or a URL; every unusable file is a 422 in fal's shape (or a 413 for an
oversized body), the same on every host, never a 5xx, and billed 0 — sync and queued alike. Downloads
only ever reach loopback test servers: one of them (127.0.0.2) plays a public host for the guard.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acestep_app.serving import billing
from conftest import wait_until
from hosts import fal_host, local_host, modal_host  # noqa: F401  (fixtures)
from local_http import LocalServer, body_route, declared_huge_route, redirect_route

pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally and will not have access:UserWarning")

HOSTS = ("local", "fal", "modal")
ENDPOINTS = {
    "audio-to-audio": {"original_tags": "sine", "tags": "jazz", "edit_mode": "remix"},
    "audio-inpaint": {"tags": "lofi", "start_time": 0.5, "end_time": 1.5},
    "audio-outpaint": {"tags": "lofi", "extend_after_duration": 1.0},
}
EXTENSION = {"audio-to-audio": 0.0, "audio-inpaint": 0.0, "audio-outpaint": 1.0}


def wav(seconds: float = 2.0, channels: int = 2, rate: int = 44100) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = np.stack([0.3 * np.sin(2 * np.pi * (440 + 10 * c) * t) for c in range(channels)], axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def data_uri(data: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(data).decode()


@pytest.fixture
def hosts(request):
    return [request.getfixturevalue(f"{name}_host") for name in HOSTS]




@pytest.fixture(scope="module")
def song_servers():
    """127.0.0.1 holds a song (private); 127.0.0.2 ("public") serves it, a huge one, and a redirect to 127.0.0.1."""
    with LocalServer({"/song.wav": body_route(wav())}) as private:
        routes = {"/song.wav": body_route(wav(), "audio/wav"), "/huge.wav": declared_huge_route(),
                  "/to-private": redirect_route(private.url("/song.wav"))}
        with LocalServer(routes, host="127.0.0.2") as public:
            yield public, private


def usage_ids(host) -> set[str]:
    return {record.request_id for record in host.usage()} if host.usage else set()


def post(host, endpoint: str, audio_url: str, **extra):
    return host.client.post(f"/{endpoint}", json={"audio_url": audio_url, **ENDPOINTS[endpoint], **extra},
                            headers=host.headers)


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_a_data_uri_song_is_edited_and_billed_for_the_returned_audio(hosts, endpoint):
    for host in hosts:
        before = len(host.engine.sources)
        response = post(host, endpoint, data_uri(wav(2.0)), seed=3)
        assert response.status_code == 200, (host.name, response.text)
        seconds = 2.0 + EXTENSION[endpoint]
        assert response.headers[billing.BILLING_HEADER] == billing.header_value(seconds), host.name
        body = response.json()
        assert set(body) == {"audio", "seed", "tags", "lyrics"} and body["seed"] == 3
        (source,) = host.engine.sources[before:]
        assert source.waveform.shape == (2, 88200) and source.sample_rate == 44100


def test_a_url_song_is_downloaded_through_the_guard(hosts, public_loopback, song_servers):
    public, _ = song_servers
    for host in hosts:
        response = post(host, "audio-inpaint", public.url("/song.wav"))
        assert response.status_code == 200, (host.name, response.text)


BAD_FILES = {
    "corrupt-bytes": (lambda public: data_uri(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 20),
                      422, "unsupported_audio_format"),
    "zero-length": (lambda public: "data:audio/wav;base64,", 422, "unsupported_audio_format"),
    "six-channels": (lambda public: data_uri(wav(2.0, channels=6)), 422, "unsupported_audio_format"),
    "invalid-base64": (lambda public: "data:audio/wav;base64,@@not base64@@", 422, "file_download_error"),
    "too-short": (lambda public: data_uri(wav(0.2)), 422, "audio_duration_too_short"),
    "huge-content-length": (lambda public: public.url("/huge.wav"), 422, "file_too_large"),
    "redirect-to-127.0.0.1": (lambda public: public.url("/to-private"), 422, "file_download_error"),
    "loopback-url": (lambda public: "http://127.0.0.1:9/song.wav", 422, "file_download_error"),
    "metadata-url": (lambda public: "http://169.254.169.254/latest/meta-data/", 422, "file_download_error"),
    "file-scheme": (lambda public: "file:///etc/passwd", 422, "file_download_error"),
}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_get_the_same_unbilled_422_on_every_host(hosts, public_loopback, song_servers, endpoint, case):
    public, private = song_servers
    make_url, status, error_type = BAD_FILES[case]
    answers = []
    for host in hosts:
        before = usage_ids(host)
        response = post(host, endpoint, make_url(public))
        assert response.headers[billing.BILLING_HEADER] == "0", (host.name, response.text)
        answers.append((response.status_code, response.json()))
        if host.usage:
            new = [record for record in host.usage() if record.request_id not in before]
            assert all(record.seconds == 0 and record.price_usd == 0 for record in new), (host.name, new)
    assert answers == [answers[0]] * len(HOSTS), answers
    (item,) = answers[0][1]["detail"]
    assert answers[0][0] == status and item["type"] == error_type and item["loc"] == ["body", "audio_url"]
    assert item["url"] == f"https://docs.fal.ai/errors#{error_type}"
    assert private.requests == []  # the private server was never reached


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_a_queued_bad_file_fails_unbilled(hosts, endpoint):
    for host in (host for host in hosts if host.queue):
        body = {"audio_url": data_uri(wav(2.0, channels=6)), **ENDPOINTS[endpoint]}
        handle = host.client.post(f"/fal-ai/ace-step/{endpoint}", json=body, headers=host.headers).json()
        status = wait_until(lambda: (answer := host.client.get(handle["status_url"], headers=host.headers).json())[
            "status"] == "COMPLETED" and answer)
        assert status["error_type"] == "unsupported_audio_format", (host.name, status)
        result = host.client.get(handle["response_url"], headers=host.headers)
        assert result.status_code == 422 and result.headers[billing.BILLING_HEADER] == "0", (host.name, result.text)
        assert result.json()["detail"][0]["type"] == "unsupported_audio_format"
        (record,) = [record for record in host.usage() if record.request_id == handle["request_id"]]
        assert (record.seconds, record.price_usd) == (0, 0)


def test_editing_bodies_have_their_own_limit(hosts):
    """A 6 s WAV as a data URI (~1.4 MB) passes the editing endpoints; the generic limit refuses it elsewhere."""
    big_song = data_uri(wav(6.0))
    for host in (host for host in hosts if host.name != "fal"):  # on fal, fal's gateway sets body limits
        assert post(host, "audio-outpaint", big_song).status_code == 200, host.name
        text = host.client.post("/", json={"tags": big_song}, headers=host.headers)
        assert text.status_code == 413 and text.headers[billing.BILLING_HEADER] == "0", host.name


def test_bodies_over_the_editing_limit_are_413(hosts):
    for host in (host for host in hosts if host.name != "fal"):
        limit = 20 * 1024 * 1024
        response = host.client.post("/audio-inpaint", content=b"{" + b" " * limit + b"}",
                                    headers={**host.headers, "Content-Type": "application/json"})
        assert response.status_code == 413 and response.headers[billing.BILLING_HEADER] == "0", host.name
        declared = host.client.post("/audio-inpaint", content=b"{}", headers={
            **host.headers, "Content-Type": "application/json", "Content-Length": str(10**12)})
        assert declared.status_code == 413, host.name


FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_fuzzed_songs_never_get_a_5xx(local_host, endpoint):
    header = wav(0.05)[:44]

    @FUZZ
    @given(st.one_of(st.binary(max_size=2000), st.binary(max_size=2000).map(lambda tail: header + tail)),
           st.sampled_from(["data:audio/wav;base64,", "data:;base64,", "data:audio/mpeg;base64,"]))
    def check(data, prefix):
        response = post(local_host, endpoint, prefix + base64.b64encode(data).decode())
        assert response.status_code in (200, 422), response.text
        if response.status_code == 422:
            assert response.headers[billing.BILLING_HEADER] == "0"
            assert response.json()["detail"][0]["loc"] == ["body", "audio_url"]

    check()


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_fuzzed_urls_never_get_a_5xx(local_host, loopback_only_dns, endpoint):
    @FUZZ
    @given(st.one_of(st.text(max_size=200), st.from_regex(r"\A(https?|ftp|data|file):[ -~]{0,80}\Z")))
    def check(url):
        response = post(local_host, endpoint, url)
        assert response.status_code in (200, 422), response.text

    check()
