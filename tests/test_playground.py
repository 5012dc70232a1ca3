"""The playground's routes over HTTP: the page and its assets (open, same-origin only), the endpoint
catalog and the request history (behind the key, each key its own), on the local and Modal hosts."""

from __future__ import annotations

import re
import threading
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from acestep_app.engine.family import get_family
from acestep_app.hosts.local import create_app
from acestep_app.hosts.playground import catalog
from acestep_app.serving.endpoints import Endpoint, EndpointRegistry
from acestep_app.settings import LoraSection, Settings
from engine_double import EngineDouble
from hosts import modal_host  # noqa: F401  (fixture)

KEY_A, KEY_B = "key-a", "key-b"
V1 = get_family("acestep-v1")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Key {key}"}


@pytest.fixture
def client(tmp_path):
    engine = EngineDouble(steps=1, sample_rate=100)
    with TestClient(create_app(engine, Settings(), tmp_path, api_key=[KEY_A, KEY_B])) as client:
        client.engine = engine
        yield client


def test_the_page_and_its_assets_are_open_and_load_nothing_from_elsewhere(client):
    page = client.get("/playground")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["referrer-policy"] == "no-referrer"  # signed file links never leave in a Referer
    assert 'name="api_key"' in page.text and 'data-key-required="true"' in page.text
    texts = [page.text]
    for name, kind in (("playground.js", "text/javascript"), ("forms.js", "text/javascript"),
                       ("playground.css", "text/css")):
        asset = client.get(f"/playground/assets/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        texts.append(asset.text)
    for text in texts:  # no CDN, no build: every reference is to this server
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import|fetch\(\s*["'`]https?:""",
                             text)
    assert client.get("/playground/assets/playground.py").status_code == 404  # only the named assets


def test_the_page_says_when_the_server_needs_no_key(tmp_path):
    with TestClient(create_app(EngineDouble(), Settings(), tmp_path)) as open_client:
        assert 'data-key-required="false"' in open_client.get("/playground").text
        assert len(open_client.get("/playground/endpoints").json()["families"][0]["endpoints"]) == 5


def test_the_catalog_needs_the_key_and_lists_every_endpoint_with_its_input_schema(client):
    assert client.get("/playground/endpoints").status_code == 401
    families = client.get("/playground/endpoints", headers=auth(KEY_A)).json()["families"]
    assert [family["name"] for family in families] == ["acestep-v1"]
    endpoints = families[0]["endpoints"]
    assert [e["name"] for e in endpoints] == [e.name for e in V1.endpoints]
    by_name = {e["name"]: e for e in endpoints}
    assert by_name["prompt-to-audio"]["submit_path"] == "/fal-ai/ace-step/prompt-to-audio"
    assert by_name["text-to-audio"]["submit_path"] == "/fal-ai/ace-step"  # fal's base endpoint
    for endpoint in V1.endpoints:
        assert by_name[endpoint.name]["input_schema"] == endpoint.input_model.model_json_schema()


def test_a_family_that_lands_later_appears_with_no_playground_change():
    class LaterInput(BaseModel):
        prompt: str

    later = SimpleNamespace(name="later-family", app_name="later-app", title="A later family", endpoints=(
        Endpoint("later-endpoint", "make", LaterInput, LaterInput, run=lambda *args: None, summary="Make",
                 description="Makes.", family="later-family"),))
    families = catalog(EndpointRegistry([V1, later]))["families"]
    assert [family["app_id"] for family in families] == ["fal-ai/ace-step", "fal-ai/later-app"]
    (endpoint,) = families[1]["endpoints"]
    assert (endpoint["name"], endpoint["submit_path"]) == ("later-endpoint", "/fal-ai/later-app/make")
    assert endpoint["input_schema"]["required"] == ["prompt"]


def test_the_catalog_shows_the_endpoints_as_served_with_loras_when_per_request(tmp_path):
    settings = Settings(lora=LoraSection(per_request=True))
    with TestClient(create_app(EngineDouble(), settings, tmp_path, api_key=[KEY_A])) as client:
        endpoints = client.get("/playground/endpoints", headers=auth(KEY_A)).json()["families"][0]["endpoints"]
    loras = endpoints[0]["input_schema"]["properties"]["loras"]
    assert loras["type"] == "array" and loras["maxItems"] >= 1


def test_history_lists_the_keys_own_requests_newest_first(client):
    assert client.get("/requests").status_code == 401
    submitted = []
    for prompt in ("one", "two", "three"):
        submitted.append(client.post("/fal-ai/ace-step/prompt-to-audio", json={"prompt": prompt, "duration": 5},
                                     headers=auth(KEY_A)).json())
    other = client.post("/fal-ai/ace-step", json={"tags": "x", "duration": 5}, headers=auth(KEY_B)).json()
    mine = client.get("/requests", headers=auth(KEY_A)).json()["requests"]
    assert [item["request_id"] for item in mine] == [handle["request_id"] for handle in reversed(submitted)]
    first = mine[-1]
    assert first["endpoint"] == "prompt-to-audio" and first["app_id"] == "fal-ai/ace-step"
    assert first["status_url"] == submitted[0]["status_url"] and first["cancel_url"] == submitted[0]["cancel_url"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["created_at"])
    theirs = client.get("/requests", headers=auth(KEY_B)).json()["requests"]
    assert [item["request_id"] for item in theirs] == [other["request_id"]]
    assert len(client.get("/requests?limit=2", headers=auth(KEY_A)).json()["requests"]) == 2
    for limit in (0, 101, "x"):
        assert client.get(f"/requests?limit={limit}", headers=auth(KEY_A)).status_code == 422


def test_history_shows_how_requests_ended(client):
    client.engine.hold = threading.Event()
    running = client.post("/fal-ai/ace-step", json={"tags": "x", "duration": 5}, headers=auth(KEY_A)).json()
    assert client.engine.started.wait(10)
    waiting = client.post("/fal-ai/ace-step", json={"tags": "y", "duration": 5}, headers=auth(KEY_A)).json()
    assert client.put(waiting["cancel_url"], headers=auth(KEY_A)).status_code == 202
    items = {item["request_id"]: item for item in client.get("/requests", headers=auth(KEY_A)).json()["requests"]}
    assert items[running["request_id"]]["status"] == "IN_PROGRESS"
    cancelled = items[waiting["request_id"]]
    assert (cancelled["status"], cancelled["error_type"], cancelled["billable_seconds"]) == (
        "CANCELLED", "request_cancelled", 0)
    client.engine.hold.set()


def test_the_modal_app_serves_the_playground_and_history(modal_host):
    client = modal_host.client
    assert 'name="api_key"' in client.get("/playground").text
    names = [e["name"] for e in client.get("/playground/endpoints", headers=modal_host.headers).json()["families"][0][
        "endpoints"]]
    assert names == [e.name for e in V1.endpoints]
    handle = client.post("/fal-ai/ace-step", json={"tags": "x", "duration": 5}, headers=modal_host.headers).json()
    recent = client.get("/requests", headers=modal_host.headers).json()["requests"]
    assert recent[0]["request_id"] == handle["request_id"] and recent[0]["endpoint"] == "text-to-audio"
