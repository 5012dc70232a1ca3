"""The three hosts in-process, each with an engine double, for tests that run the same case on all of them.

* ``local_host``: ``acestep_app.hosts.local.create_app`` (SQLite store, worker thread).
* ``fal_host``: ``deploy/fal_app.py``'s App served as on a fal runner (tests/fal_harness.py); ``setup()``
  loads the tiny checkpoint, then the engine is swapped for the double.
* ``modal_host``: ``deploy/modal_app.py``'s web app over an in-memory Dict and a thread-pool runner.

Import the fixtures into a test module to use them (``from hosts import fal_host, ...``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from acestep_app.engine.family import get_family
from acestep_app.serving.endpoints import EndpointRegistry
from acestep_app.serving.jobs import UsageRecord
from acestep_app.settings import INFRA_ENV, Settings
from engine_double import EngineDouble

KEY = "host-key"
AUTH = {"Authorization": f"Key {KEY}"}
V1_ENDPOINTS = EndpointRegistry([get_family("acestep-v1")])
DOUBLE_SAMPLE_RATE = 100  # a 240 s song is 24k samples: tests measure the HTTP layer, not the WAV writer


@dataclass
class HostUnderTest:
    name: str
    client: TestClient
    engine: EngineDouble
    headers: dict[str, str]
    usage: Callable[[], list[UsageRecord]] | None  # None: fal keeps no ledger (the billing header is the record)
    queue: bool  # serves fal's queue routes (fal's platform does that for a fal App)


@pytest.fixture(scope="module")
def local_host(tmp_path_factory):
    from acestep_app.hosts.local import create_app

    engine = EngineDouble(steps=1, sample_rate=DOUBLE_SAMPLE_RATE)
    app = create_app(engine, Settings(), tmp_path_factory.mktemp("local-host"), api_key=[KEY])
    with TestClient(app) as client:
        yield HostUnderTest("local", client, engine, AUTH, client.app.state.store.usage_records, True)


@pytest.fixture(scope="module")
def fal_host(tiny_infra, tmp_path_factory):
    from fal_harness import PROJECT_ROOT, load_module, serve

    root = tmp_path_factory.mktemp("fal-host")
    module = load_module(PROJECT_ROOT / "deploy" / "fal_app.py", "acestep_fal_app_hosts", {INFRA_ENV: str(tiny_infra)})
    with serve(module.AceStep, {module.FILE_REPOSITORY_ENV: "in_memory"}, home=root / "home") as (app, client):
        app.engine = EngineDouble(steps=1, sample_rate=DOUBLE_SAMPLE_RATE)
        yield HostUnderTest("fal", client, app.engine, {}, None, False)


@pytest.fixture(scope="module")
def modal_host(tmp_path_factory):
    from acestep_app.serving.stores.modal import ModalJobStore, VolumeFiles, run_job
    from modal_harness import InMemoryDict, ThreadCalls, load_modal_app

    modal_app = load_modal_app()
    store = ModalJobStore(InMemoryDict(), tmp_path_factory.mktemp("modal-host") / "files")
    engine = EngineDouble(steps=1, sample_rate=DOUBLE_SAMPLE_RATE)
    calls = ThreadCalls(lambda request_id: run_job(store, engine, V1_ENDPOINTS, Settings(), request_id))
    files = VolumeFiles(store.files_root, reload=lambda: None)
    web = modal_app.build_web(store, calls, [KEY], files, Settings())
    with TestClient(web) as client:
        yield HostUnderTest("modal", client, engine, AUTH, store.usage_records, True)
    calls.shutdown()
