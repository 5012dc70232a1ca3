"""``/metrics``: the counters move with real traffic on the local server, each app keeps its own
registry, only loopback or the metrics key may scrape, and GPU memory appears only where CUDA is used."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from acestep_app.hosts.local import create_app
from acestep_app.serving.metrics import Metrics
from acestep_app.settings import MetricsSection, SecuritySection, Settings, WebhooksSection
from conftest import wait_until
from engine_double import EngineDouble
from local_http import LocalServer, send
from metrics_scrape import parse, value

KEY = "metrics-test-key"
AUTH = {"Authorization": f"Key {KEY}"}
LOOPBACK = ("127.0.0.1", 50000)  # the TestClient's peer address, as uvicorn reports it
SAMPLE_RATE = 100  # the engine double's: billed seconds are exact decimals


def scrape(client, headers: dict | None = None) -> dict[tuple, float]:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def app_with(engine, tmp_path, settings: Settings = Settings(), keys=(KEY,)):
    return create_app(engine, settings, tmp_path, api_key=list(keys) or None)


def wait_done(client, handle: dict) -> dict:
    return wait_until(lambda: (body := client.get(handle["status_url"], headers=AUTH).json())["status"] == "COMPLETED"
                      and body, timeout=30)


def test_counters_histograms_and_queue_depth_follow_real_traffic(tmp_path):
    engine = EngineDouble(steps=2, sample_rate=SAMPLE_RATE)
    with TestClient(app_with(engine, tmp_path), client=LOOPBACK) as client:
        before = scrape(client)
        assert value(before, "acestep_requests_total", endpoint="prompt-to-audio", status="COMPLETED") == 0
        assert value(before, "acestep_queue_depth", state="queued") == 0

        assert client.post("/prompt-to-audio", json={"prompt": "a", "duration": 5}, headers=AUTH).status_code == 200
        queued = client.post("/fal-ai/ace-step", json={"tags": "b", "duration": 6}, headers=AUTH).json()
        wait_done(client, queued)
        assert client.post("/prompt-to-audio", json={"prompt": "a", "duration": 1}, headers=AUTH).status_code == 422

        engine.hold = threading.Event()  # one job holds the worker, a second waits behind it
        running = client.post("/fal-ai/ace-step/prompt-to-audio", json={"prompt": "c", "duration": 5},
                              headers=AUTH).json()
        assert engine.started.wait(10)
        waiting = client.post("/fal-ai/ace-step/prompt-to-audio", json={"prompt": "d", "duration": 5},
                              headers=AUTH).json()
        busy = scrape(client)
        assert (value(busy, "acestep_queue_depth", state="running"), value(busy, "acestep_queue_depth", state="queued")) \
            == (1, 1)
        assert client.put(waiting["cancel_url"], headers=AUTH).status_code == 202
        engine.fail_with = RuntimeError("injected")
        engine.hold.set()
        wait_done(client, running)
        after = scrape(client)

    def moved(name, **labels):
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert moved("acestep_requests_submitted_total", endpoint="prompt-to-audio") == 3  # the 422 was never accepted
    assert moved("acestep_requests_submitted_total", endpoint="text-to-audio") == 1
    assert moved("acestep_requests_total", endpoint="prompt-to-audio", status="COMPLETED") == 1
    assert moved("acestep_requests_total", endpoint="text-to-audio", status="COMPLETED") == 1
    assert moved("acestep_requests_total", endpoint="prompt-to-audio", status="FAILED") == 1
    assert moved("acestep_requests_total", endpoint="prompt-to-audio", status="CANCELLED") == 1
    assert moved("acestep_failures_total", endpoint="prompt-to-audio", error_type="generation_failed") == 1
    assert moved("acestep_failures_total", endpoint="prompt-to-audio", error_type="request_cancelled") == 1
    assert moved("acestep_billed_audio_seconds_total", endpoint="prompt-to-audio") == 5.0  # failures bill 0
    assert moved("acestep_billed_audio_seconds_total", endpoint="text-to-audio") == 6.0
    # the cancelled job never started: it has no queue wait or run time
    assert moved("acestep_queue_wait_seconds_count", endpoint="prompt-to-audio") == 2
    assert moved("acestep_run_seconds_count", endpoint="prompt-to-audio") == 2
    assert moved("acestep_run_seconds_count", endpoint="text-to-audio") == 1
    assert moved("acestep_http_responses_total", method="POST", code="422") == 1
    assert moved("acestep_http_responses_total", method="PUT", code="202") == 1
    assert (value(after, "acestep_queue_depth", state="running"), value(after, "acestep_queue_depth", state="queued")) \
        == (0, 0)
    assert not any(name.startswith("acestep_gpu_") for name, _ in after)  # no CUDA in this process


def test_webhook_deliveries_and_retries_are_counted(tmp_path):
    answers = iter([500, 200])
    with LocalServer({"/hook": lambda handler: send(handler, next(answers))}) as receiver:
        settings = Settings(security=SecuritySection(allow_private_urls=True),
                            webhooks=WebhooksSection(max_attempts=3, retry_window_seconds=0.4))
        with TestClient(app_with(EngineDouble(steps=1, sample_rate=SAMPLE_RATE), tmp_path, settings),
                        client=LOOPBACK) as client:
            handle = client.post(f"/fal-ai/ace-step?fal_webhook={receiver.url('/hook')}",
                                 json={"tags": "x", "duration": 5}, headers=AUTH).json()
            wait_done(client, handle)
            samples = wait_until(lambda: (found := scrape(client)) and value(
                found, "acestep_webhook_deliveries_total", outcome="delivered") == 1 and found, timeout=30)
    assert value(samples, "acestep_webhook_attempts_total", result="failed") == 1
    assert value(samples, "acestep_webhook_attempts_total", result="delivered") == 1
    assert value(samples, "acestep_webhook_retries_total") == 1
    assert value(samples, "acestep_webhook_deliveries_total", outcome="failed") == 0
    assert len(receiver.requests) == 2


def test_each_app_has_its_own_registry(tmp_path):
    first = app_with(EngineDouble(steps=1, sample_rate=SAMPLE_RATE), tmp_path / "a")
    second = app_with(EngineDouble(steps=1, sample_rate=SAMPLE_RATE), tmp_path / "b")
    with TestClient(first, client=LOOPBACK) as one, TestClient(second, client=LOOPBACK) as two:
        assert one.post("/prompt-to-audio", json={"prompt": "a", "duration": 5}, headers=AUTH).status_code == 200
        assert value(scrape(one), "acestep_requests_submitted_total", endpoint="prompt-to-audio") == 1
        assert value(scrape(two), "acestep_requests_submitted_total", endpoint="prompt-to-audio") == 0


def test_only_loopback_scrapes_without_a_metrics_key(tmp_path):
    with TestClient(app_with(EngineDouble(), tmp_path)) as remote:  # the TestClient's peer is "testclient"
        refused = remote.get("/metrics", headers=AUTH)  # an API key is not a metrics key
        assert refused.status_code == 403 and "ACESTEP_METRICS_KEY" in refused.json()["detail"]


def test_a_metrics_key_is_required_of_everyone_once_set(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRAPE_KEY", "scrape-secret")
    settings = Settings(metrics=MetricsSection(key_env="SCRAPE_KEY"))
    with TestClient(app_with(EngineDouble(), tmp_path, settings), client=LOOPBACK) as client:
        for headers in ({}, AUTH, {"Authorization": "Bearer wrong"}, {"Authorization": "Key scrape-secret"}):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", headers
        assert "acestep_requests_total" in client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).text


def test_metrics_can_be_switched_off(tmp_path):
    settings = Settings(metrics=MetricsSection(enabled=False))
    with TestClient(app_with(EngineDouble(), tmp_path, settings), client=LOOPBACK) as client:
        assert client.get("/metrics").status_code == 404


def test_gpu_memory_gauges_and_a_failing_source(tmp_path):
    def broken_depth():
        raise OSError("database is locked")

    metrics = Metrics(["prompt-to-audio"], queue_depth=broken_depth,
                      gpu_memory=lambda: [("cuda:0", 3 * 2**30, 5 * 2**30)])
    text = metrics.exposition().decode()
    assert 'acestep_gpu_memory_in_use_bytes{device="cuda:0"} 3.221225472e+09' in text
    assert 'acestep_gpu_memory_peak_bytes{device="cuda:0"} 5.36870912e+09' in text
    assert "acestep_queue_depth" not in text  # skipped (and logged), the rest is still served
    assert 'acestep_requests_total{endpoint="prompt-to-audio",status="COMPLETED"} 0.0' in text


def test_unusual_methods_do_not_grow_the_label_set(tmp_path):
    with TestClient(app_with(EngineDouble(), tmp_path), client=LOOPBACK) as client:
        for method in ("BREW", "PROPFIND", "GET"):
            client.request(method, "/health")
        samples = scrape(client)
    methods = {dict(labels)["method"] for name, labels in samples if name == "acestep_http_responses_total"}
    assert methods == {"OTHER", "GET"}


def test_the_grafana_dashboard_queries_only_metrics_the_app_exports():
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[1] / "docs" / "grafana" / "acestep-dashboard.json")
                           .read_text(encoding="utf-8"))
    metrics = Metrics(["prompt-to-audio"], queue_depth=lambda: {"queued": 0}, gpu_memory=lambda: [("cuda:0", 1, 2)])
    metrics.queue_wait.labels("prompt-to-audio").observe(1.0)  # histograms show their series once observed
    metrics.run_time.labels("prompt-to-audio").observe(1.0)
    metrics.failures.labels("prompt-to-audio", "generation_failed").inc()
    metrics.http_response("GET", 200)
    exported = {name for name, _ in parse(metrics.exposition().decode())}
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"acestep_\w+", target["expr"])}
    assert queried and queried <= exported, queried - exported
    assert {"acestep_requests_total", "acestep_queue_depth", "acestep_queue_wait_seconds_bucket",
            "acestep_run_seconds_bucket", "acestep_billed_audio_seconds_total", "acestep_failures_total",
            "acestep_webhook_attempts_total", "acestep_webhook_retries_total", "acestep_gpu_memory_in_use_bytes",
            "acestep_gpu_memory_peak_bytes"} <= queried
