# ---
# deploy: true
# ---

# # ACE-Step on Modal, API-identical to fal's `fal-ai/ace-step` and `fal-ai/ace-step-1.5` endpoints
#
# `modal deploy deploy/modal_app.py` publishes one web endpoint with the routes, schema, queue protocol,
# errors and billing header of the fal apps and the local server (`acestep_app.hosts.web`): one client
# (e.g. `fal_client` with `FAL_QUEUE_RUN_HOST` at the Modal URL) works against all three. One GPU class
# per family of `[app].families` (infra.toml chooses what is deployed): `AceStep` (v1), `AceStep15` (1.5);
# a request is one `.spawn()` of its family's `run_job`. Jobs live in a `modal.Dict`, audio and usage
# records on a `modal.Volume`. Modal cuts a web request off at 150 s: a synchronous call waits
# `SYNC_WAIT_SECONDS`, then answers `303` to `/requests/{id}/wait` (`curl -L` and `fal_client` follow it).
# This file only wires `acestep_app` (`/playground`, `/metrics`: docs/metrics.md) to Modal; settings: `infra.toml`.

from __future__ import annotations

import os
import time
from pathlib import Path

import modal

from acestep_app.engine.family import get_family, served_families
from acestep_app.hosts.modal_calls import FunctionCalls
from acestep_app.hosts.routes import Host
from acestep_app.hosts.web import create_web_app
from acestep_app.serving.auth import Keys
from acestep_app.serving.endpoints import EndpointRegistry
from acestep_app.serving.jobs import Job
from acestep_app.serving.stores.modal import ModalJobStore, VolumeFiles, finished_event, run_job, web_metrics
from acestep_app.settings import INFRA_ENV, REPO_INFRA_PATH, Settings

SETTINGS = Settings.load()
FAMILIES = served_families(SETTINGS)  # [app].families: the families this app deploys, the primary first
REGISTRY = EndpointRegistry(FAMILIES, SETTINGS)
REPO_ROOT = Path(__file__).resolve().parents[1]
CONTAINER_ROOT = Path("/root")
WEIGHTS_DIR = "/weights"  # weights volume mount; pulled checkpoint in /weights/acestep
FILES_DIR = "/files"  # files volume mount: audio/<request id>.wav and usage/<request id>.json
API_KEY_ENV = "ACESTEP_API_KEY"  # comma-separated keys, from the [modal].api_key_secret Secret
FILES_DIR_ENV = "ACESTEP_FILES_DIR"
SYNC_WAIT_SECONDS = 120.0  # under Modal's 150 s web limit, with room for the upload and the answer

# ## Image, volumes, secrets: Modal imports this file again in every container, so `infra.toml` and the
# weights manifest ship in the image at the paths `acestep_app` looks for them.

image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install_from_pyproject(str(REPO_ROOT / "pyproject.toml"), optional_dependencies=["modal"])
    .env({INFRA_ENV: str(CONTAINER_ROOT / "infra.toml"), "ACESTEP_WEIGHTS_DIR": f"{WEIGHTS_DIR}/acestep",
          "HF_HOME": f"{WEIGHTS_DIR}/hf", FILES_DIR_ENV: FILES_DIR})
    .add_local_python_source("acestep_app", ignore=["**/__pycache__/**"])  # keeps data/manifest.toml
    .add_local_file(os.environ.get(INFRA_ENV) or REPO_INFRA_PATH, str(CONTAINER_ROOT / "infra.toml"))
    .add_local_file(REPO_ROOT / "weights" / "manifest.toml", str(CONTAINER_ROOT / "weights" / "manifest.toml"))
)

app = modal.App(SETTINGS.app.name, image=image)
weights_volume = modal.Volume.from_name(SETTINGS.modal.volume, create_if_missing=True)
files_volume = modal.Volume.from_name(SETTINGS.modal.files_volume, create_if_missing=True)
hf_secrets = [modal.Secret.from_name(SETTINGS.modal.secret)] if SETTINGS.modal.secret else []
api_key_secret = modal.Secret.from_name(SETTINGS.modal.api_key_secret)


def files_dir() -> Path:
    return Path(os.environ.get(FILES_DIR_ENV, FILES_DIR))


def commit_files() -> None:
    if not modal.is_local():
        files_volume.commit()


def reload_files() -> None:
    if not modal.is_local():
        files_volume.reload()


def backlog() -> int:
    """Inputs waiting for a GPU container (queue positions and `[queue].max_pending` count them)."""
    try:
        return sum(family_class(family.name)().run_job.get_current_stats().backlog for family in FAMILIES)
    except Exception:  # stats are advisory: no number is not a reason to refuse or fail a request
        return 0


def job_store() -> ModalJobStore:
    """The shared job registry (one `modal.Dict`), as seen from any container."""
    registry = modal.Dict.from_name(f"{SETTINGS.app.name}-jobs", create_if_missing=True)
    return ModalJobStore(registry, files_dir(), commit=commit_files, reload=reload_files, backlog=backlog)


def metrics_events() -> modal.Queue:  # jobs GPU containers finished, taken in by `/metrics` at each scrape
    return modal.Queue.from_name(f"{SETTINGS.app.name}-metrics", create_if_missing=True)


@app.function(volumes={WEIGHTS_DIR: weights_volume}, secrets=hf_secrets, timeout=3 * 3600)
def pull_weights() -> str:  # into the Volume, once: `modal run deploy/modal_app.py::pull_weights`
    from acestep_app.weights.store import ensure_weights

    settings = Settings.load()
    root = ensure_weights(settings, only=sorted({entry for f in FAMILIES for entry in f.weight_entries(settings)}))
    if not modal.is_local():
        weights_volume.commit()
    return str(root)


# ## Inference: one engine per container, loaded on the GPU after a CPU memory snapshot of the imports.
class FamilyServer:
    """A family's engine in a GPU container; each family's class below names its family."""

    family_name: str

    @modal.enter(snap=True)
    def import_libraries(self) -> None:
        get_family(self.family_name).engine_class()  # imports torch, diffusers, transformers

    @modal.enter(snap=False)
    def load(self) -> None:
        self.settings = Settings.load()
        self.registry = EndpointRegistry([get_family(self.family_name)], self.settings)
        self.engine = self.registry.primary.load_engine(self.settings)
        self.store = job_store()
        self.store.repair_usage()  # usage records a container that died mid-finish left pending
        self.events = metrics_events()
        if not modal.is_local():
            weights_volume.commit()  # keep weights a first start had to pull

    @modal.method()
    def run_job(self, request_id: str) -> str:
        return run_job(self.store, self.engine, self.registry, self.settings, request_id,
                       on_finished=lambda job: self.events.put(finished_event(job)))


GPU_CLASS = {"gpu": SETTINGS.modal.gpu, "timeout": SETTINGS.modal.timeout, "secrets": hf_secrets,
             "scaledown_window": SETTINGS.modal.scaledown_window, "enable_memory_snapshot": True,
             "max_containers": SETTINGS.modal.max_containers,  # a flood of submits queues; it does not multiply GPUs
             "volumes": {WEIGHTS_DIR: weights_volume, FILES_DIR: files_volume}}
CLASS_NAMES = {"acestep-v1": "AceStep", "acestep-1.5": "AceStep15"}  # family -> its class (family_class)
if "acestep-v1" in {family.name for family in FAMILIES}:
    @app.cls(**GPU_CLASS)
    @modal.concurrent(max_inputs=SETTINGS.modal.max_inputs)
    class AceStep(FamilyServer):
        family_name = "acestep-v1"

if "acestep-1.5" in {family.name for family in FAMILIES}:
    @app.cls(**GPU_CLASS)
    @modal.concurrent(max_inputs=SETTINGS.modal.max_inputs)
    class AceStep15(FamilyServer):
        family_name = "acestep-1.5"


# ## Web: the shared fal routes over Modal function calls
def family_class(name: str):  # the deployed class serving the family called `name`
    return globals()[CLASS_NAMES[name]]


def spawn_run_job(job: Job):  # one call of the job's family class
    return family_class(REGISTRY.by_name(job.endpoint).family)().run_job.spawn(job.request_id)


def build_web(store: ModalJobStore, runner, api_keys: list[str], files: VolumeFiles, settings: Settings,
              on_finished=None, events=None, stats=None):
    if not api_keys:
        raise RuntimeError(f"no API key: put {API_KEY_ENV} in the modal.Secret '{settings.modal.api_key_secret}'")
    registry = EndpointRegistry(FAMILIES, settings)
    metrics = web_metrics(registry, events, stats)  # `/metrics`: see acestep_app.serving.stores.modal
    queue = metrics.queue(store, runner, on_finished, max_pending=settings.queue.max_pending,
                          inputs=store.inputs(settings.audio_input.max_download_bytes))
    keys = Keys(api_keys, schemes=("key", "bearer"), secret=store.owner_secret(), url_ttl_s=settings.storage.url_ttl_s)
    host = Host(queue, keys, settings, registry, files.open, health=lambda: {"status": "ok"}, sync_wait=SYNC_WAIT_SECONDS,
                metrics=metrics, allowed_hosts=settings.server.allowed_hosts or None,
                cors_origins=settings.server.cors_origins)
    return create_web_app(host, title="ACE-Step (acestep-app on Modal)")


@app.function(volumes={FILES_DIR: files_volume}, secrets=[api_key_secret], timeout=SETTINGS.modal.timeout)
@modal.concurrent(max_inputs=100)
@modal.asgi_app()
def web():
    store = job_store()
    files = VolumeFiles(files_dir(), reload=files_volume.reload)
    keys = [key.strip() for key in os.environ.get(API_KEY_ENV, "").split(",") if key.strip()]
    return build_web(store, FunctionCalls(store, spawn_run_job), keys, files, Settings.load(),
                     events=metrics_events(), stats=lambda: family_class(FAMILIES[0].name)().run_job.get_current_stats())


@app.local_entrypoint()  # the smoke test: `modal run deploy/modal_app.py` times a cold and a warm call
def main(prompt: str = "lofi hiphop, chill, mellow piano", duration: float = 10.0):
    store = job_store()
    base = next(endpoint for endpoint in FAMILIES[0].endpoints if endpoint.sub_path == "")
    for attempt in ("cold", "warm"):  # (v1's base endpoint reads tags, 1.5's the prompt)
        job = store.create(base.name, "smoke-test", {"prompt": prompt, "tags": prompt, "lyrics": "[instrumental]",
                                                     "duration": duration})
        started = time.perf_counter()
        status = family_class(FAMILIES[0].name)().run_job.remote(job.request_id)
        print(f"{attempt}: {status} in {time.perf_counter() - started:.1f}s "
              f"({store.get(job.request_id).billable_seconds} billable s)")
