# ---
# deploy: true
# ---

# # ACE-Step v1 text-to-music on Modal, API-identical to fal's `fal-ai/ace-step/prompt-to-audio`
#
# `modal deploy deploy/modal_app.py` publishes one web endpoint with the same paths, schema and
# billing header as the fal app and the local server, so one client (e.g. `fal_client` with
# `FAL_QUEUE_RUN_HOST` pointed at the Modal URL) works against all three:
#
# - `POST /prompt-to-audio`, `POST /`: synchronous calls (prompt, or tags + lyrics).
# - `POST /{owner}/{app}[/prompt-to-audio]`: fal queue submit; then `GET .../requests/{id}/status`,
#   `GET .../requests/{id}`, `PUT .../requests/{id}/cancel`. Each request is one `.spawn()` of
#   `AceStep.generate`; a `modal.Dict` maps fal request ids to Modal function calls.
# - `GET /files/{id}.wav` (or `[output].format`): the generated audio, kept on a `modal.Volume`, linked from `File.url`.
#
# Everything that decides what is generated, validated, billed or named lives in `acestep_app`
# (Engine, schema, service, billing, storage); this file only wires it to Modal. Settings (GPU,
# timeouts, scale-down window, concurrency, volume and secret names) come from `infra.toml`.

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, MutableMapping
from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Protocol

import modal
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

from acestep_app import billing
from acestep_app.jobs import JobError, log_entry
from acestep_app.server import (
    DEFAULT_MAX_BODY_BYTES, Gate, Keys, RequestRejected, _error_text, add_error_handlers, error_response, parse_input,
)
from acestep_app.schema import PromptToAudioInput, PromptToAudioOutput, TextToAudioInput, TextToAudioOutput
from acestep_app.service import ENDPOINT_BY_SUB_PATH, ENDPOINTS, FILES_PREFIX, Endpoint, generate_output
from acestep_app.settings import INFRA_ENV, REPO_INFRA_PATH, Settings
from acestep_app.storage import AudioStore

logger = logging.getLogger(__name__)

# ## Settings and image
#
# Modal imports this file again inside every container, so `infra.toml` and the weights manifest
# ship in the image at the paths `acestep_app` looks for them (`/root/infra.toml`,
# `/root/weights/manifest.toml`, next to `/root/acestep_app`).

SETTINGS = Settings.load()
REPO_ROOT = Path(__file__).resolve().parents[1]
CONTAINER_ROOT = Path("/root")
WEIGHTS_DIR = "/weights"  # weights volume mount; pulled checkpoint in /weights/acestep
FILES_DIR = "/files"  # files volume mount: audio/<request id>.wav and usage/<request id>.json
API_KEY_ENV = "ACESTEP_API_KEY"  # comma-separated keys, from the [modal].api_key_secret Secret
FILES_DIR_ENV = "ACESTEP_FILES_DIR"

image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install_from_pyproject(str(REPO_ROOT / "pyproject.toml"), optional_dependencies=["modal"])
    .env({
        INFRA_ENV: str(CONTAINER_ROOT / "infra.toml"),
        "ACESTEP_WEIGHTS_DIR": f"{WEIGHTS_DIR}/acestep",
        "HF_HOME": f"{WEIGHTS_DIR}/hf",
        FILES_DIR_ENV: FILES_DIR,
    })
    .add_local_python_source("acestep_app", ignore=["**/__pycache__/**"])  # keeps data/manifest.toml
    .add_local_file(os.environ.get(INFRA_ENV) or REPO_INFRA_PATH, str(CONTAINER_ROOT / "infra.toml"))
    .add_local_file(REPO_ROOT / "weights" / "manifest.toml", str(CONTAINER_ROOT / "weights" / "manifest.toml"))
)

app = modal.App(SETTINGS.app.name, image=image)

weights_volume = modal.Volume.from_name(SETTINGS.modal.volume, create_if_missing=True)
files_volume = modal.Volume.from_name(SETTINGS.modal.files_volume, create_if_missing=True)
hf_secrets = [modal.Secret.from_name(SETTINGS.modal.secret)] if SETTINGS.modal.secret else []
api_key_secret = modal.Secret.from_name(SETTINGS.modal.api_key_secret)
REQUESTS_DICT = f"{SETTINGS.app.name}-requests"


def request_registry() -> MutableMapping[str, dict]:
    """fal request id -> {call_id, owner, endpoint, status, logs, outcome}, shared by all containers."""
    return modal.Dict.from_name(REQUESTS_DICT, create_if_missing=True)


def files_dir() -> Path:
    return Path(os.environ.get(FILES_DIR_ENV, FILES_DIR))


# ## Weights: pulled once into a Volume
#
# `modal run deploy/modal_app.py::pull_weights` downloads the pinned, sha256-checked checkpoint
# (`weights/manifest.toml`) into the weights Volume. A container that finds it missing pulls it on
# its first start instead (slower), so the step is an optimisation, not a requirement.


@app.function(volumes={WEIGHTS_DIR: weights_volume}, secrets=hf_secrets, timeout=3 * 3600)
def pull_weights() -> str:
    from acestep_app.engine import needed_weight_entries
    from acestep_app.weights import ensure_weights

    settings = Settings.load()
    root = ensure_weights(settings, only=needed_weight_entries(settings))
    if not modal.is_local():
        weights_volume.commit()
    return str(root)


# ## Inference: the Engine, loaded once per container
#
# A CPU memory snapshot is taken after the heavy imports (torch, diffusers, transformers: ~10 s of
# a cold start); the Engine itself loads onto the GPU after restore, because plain memory snapshots
# cannot hold CUDA state. `AceStep.generate` is the only per-request work: one request in, one
# outcome record out (never an exception, so the web tier always has something to report).


def usage_record(request_id: str, endpoint: str, owner: str, outcome: dict) -> dict:
    return {"request_id": request_id, "endpoint": endpoint, "owner": owner, "status": outcome["status"],
            "seconds": outcome.get("billable_seconds", 0.0), "price_usd": outcome.get("price_usd", 0.0),
            "finished_at": time.time()}


def write_usage(root: Path, record: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f"{record['request_id']}.json.partial"
    partial.write_text(json.dumps(record))
    partial.replace(root / f"{record['request_id']}.json")


def update_request(requests: MutableMapping[str, dict], request_id: str, **changes: Any) -> dict:
    entry = {**requests.get(request_id, {}), **changes}
    requests[request_id] = entry
    return entry


def failure(error: JobError) -> dict:
    return {"status": "FAILED", "error": error.detail, "error_type": error.error_type,
            "error_status": error.status_code, "billable_seconds": 0.0, "price_usd": 0.0}


@app.cls(
    gpu=SETTINGS.modal.gpu,
    timeout=SETTINGS.modal.timeout,
    scaledown_window=SETTINGS.modal.scaledown_window,
    volumes={WEIGHTS_DIR: weights_volume, FILES_DIR: files_volume},
    secrets=hf_secrets,
    enable_memory_snapshot=True,
)
@modal.concurrent(max_inputs=SETTINGS.modal.max_inputs)
class AceStep:
    @modal.enter(snap=True)
    def import_libraries(self) -> None:
        import acestep_app.engine  # noqa: F401
        import acestep_app.pipeline  # noqa: F401  (torch, diffusers, transformers)
        import acestep_app.prompting  # noqa: F401

    @modal.enter(snap=False)
    def load(self) -> None:
        from acestep_app.engine import Engine

        self.settings = Settings.load()
        self.engine = Engine.load(self.settings)
        self.audio = AudioStore(files_dir() / "audio")
        if not modal.is_local():
            weights_volume.commit()  # keep weights a first start had to pull

    @modal.method()
    def generate(self, endpoint_name: str, payload: dict, request_id: str, owner: str,
                 requests: MutableMapping[str, dict] | None = None) -> dict:
        """Run one request; ``requests`` defaults to the shared registry (tests pass a dict)."""
        requests = request_registry() if requests is None else requests
        if requests.get(request_id, {}).get("status") == "CANCELLED":
            return {"status": "CANCELLED"}
        entry = update_request(requests, request_id, status="IN_PROGRESS", started_at=time.time())
        logs = list(entry.get("logs", []))

        def log(message: str) -> None:
            logs.append(log_entry(message))
            update_request(requests, request_id, logs=logs)

        endpoint = ENDPOINTS[endpoint_name]
        started = time.perf_counter()
        try:
            outcome = generate_output(self.engine, self.audio, self.settings, endpoint,
                                      endpoint.input_model.model_validate(payload), request_id,
                                      on_progress=lambda progress: log(progress.message), log=log)
            result = {"status": "COMPLETED", "result": outcome.result,
                      "billable_seconds": outcome.billable_seconds, "price_usd": outcome.price_usd}
        except JobError as error:
            result = failure(error)
        except Exception:  # e.g. CUDA OOM: report it on the request, keep the container serving
            logger.exception("request %s failed", request_id)
            result = failure(JobError("Internal error while generating audio."))
        result["inference_time"] = round(time.perf_counter() - started, 3)
        write_usage(files_dir() / "usage", usage_record(request_id, endpoint_name, owner, result))
        if not modal.is_local():
            files_volume.commit()
        return result


# ## Queue backends: Modal function calls, or an in-process pool
#
# The web app talks to a `Queue`. `ModalQueue` is the deployed one (`.spawn()`, `FunctionCall`);
# `InProcessQueue` runs `AceStep.generate.local` on a thread pool, for tests and offline runs.


class Queue(Protocol):
    requests: MutableMapping[str, dict]

    def spawn(self, endpoint_name: str, payload: dict, request_id: str, owner: str) -> str: ...

    def result(self, call_id: str, timeout: float) -> dict | None: ...  # None while still running

    def cancel(self, call_id: str) -> None: ...

    def refresh_files(self) -> None: ...


class ModalQueue:
    def __init__(self):
        self.requests = request_registry()

    def spawn(self, endpoint_name: str, payload: dict, request_id: str, owner: str) -> str:
        return AceStep().generate.spawn(endpoint_name, payload, request_id, owner).object_id

    def result(self, call_id: str, timeout: float) -> dict | None:
        try:
            return modal.FunctionCall.from_id(call_id).get(timeout=timeout)
        except TimeoutError:
            return None

    def cancel(self, call_id: str) -> None:
        modal.FunctionCall.from_id(call_id).cancel()

    def refresh_files(self) -> None:
        files_volume.reload()


class InProcessQueue:
    def __init__(self, run: Callable[..., dict] | None = None, workers: int = 1):
        self.requests: MutableMapping[str, dict] = {}
        self._run = run or AceStep().generate.local
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._calls: dict = {}

    def spawn(self, endpoint_name: str, payload: dict, request_id: str, owner: str) -> str:
        call_id = f"local-{uuid.uuid4().hex}"
        self._calls[call_id] = self._pool.submit(self._run, endpoint_name, payload, request_id, owner, self.requests)
        return call_id

    def result(self, call_id: str, timeout: float) -> dict | None:
        try:
            return self._calls[call_id].result(timeout=timeout)
        except FutureTimeout:
            return None
        except CancelledError:
            return {"status": "CANCELLED"}

    def cancel(self, call_id: str) -> None:
        self._calls[call_id].cancel()  # a running thread finishes; the request stays cancelled

    def refresh_files(self) -> None:
        pass

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# ## Web API: fal's paths, schema, queue shapes, billing header and key auth
#
# Auth, body limits, the default `x-fal-billable-units: 0` and fal-shaped errors are the local
# server's (`Gate`, `Keys`, `add_error_handlers`); `Authorization: Bearer <key>` is accepted too.


class BearerAsKey:
    """Rewrites ``Authorization: Bearer <key>`` to fal's ``Key <key>`` before the Gate checks it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            scope = {**scope, "headers": [
                (name, b"Key " + value[7:] if name.lower() == b"authorization" and value[:7].lower() == b"bearer "
                 else value) for name, value in scope["headers"]]}
        await self.app(scope, receive, send)


def create_web_app(queue: Queue, api_keys: list[str], files_root: Path, settings: Settings,
                   sync_timeout: float | None = None) -> FastAPI:
    if not api_keys:
        raise RuntimeError(f"no API key: put {API_KEY_ENV} in the modal.Secret '{settings.modal.api_key_secret}'")
    keys = Keys(api_keys)
    audio = AudioStore(files_root / "audio")
    sync_timeout = sync_timeout or float(settings.modal.timeout)
    web = FastAPI(title="ACE-Step (acestep-app on Modal)",
                  description="ACE-Step v1 text-to-music; API-compatible with fal-ai/ace-step and "
                              "fal-ai/ace-step/prompt-to-audio.")
    add_error_handlers(web)

    def submit(request: Request, endpoint: Endpoint, parsed) -> str:
        request_id = str(uuid.uuid4())
        owner = request.state.owner
        queue.requests[request_id] = {"owner": owner, "endpoint": endpoint.name, "status": "IN_QUEUE",
                                      "created_at": time.time(), "logs": [log_entry("Request queued.")]}
        payload = parsed.model_dump(mode="json")
        update_request(queue.requests, request_id, call_id=queue.spawn(endpoint.name, payload, request_id, owner))
        return request_id

    def find(request: Request, request_id: str) -> dict | None:
        entry = queue.requests.get(request_id)
        return entry if entry and entry.get("owner") == request.state.owner else None

    def settle(request_id: str, entry: dict, timeout: float = 0) -> dict:
        """The entry with its outcome once the call has one (cached in the registry)."""
        if "outcome" in entry or entry.get("status") == "CANCELLED":
            return entry
        try:
            outcome = queue.result(entry["call_id"], timeout)
        except Exception:  # the call itself crashed (container lost, timeout)
            logger.exception("request %s: function call failed", request_id)
            outcome = failure(JobError("The generation call failed."))
            write_usage(files_root / "usage", usage_record(request_id, entry["endpoint"], entry["owner"], outcome))
        if outcome is None:
            return entry
        return update_request(queue.requests, request_id, outcome=outcome, status=outcome["status"])

    def render(request: Request, entry: dict, request_id: str) -> JSONResponse:
        headers = {"x-fal-request-id": request_id}
        outcome = entry.get("outcome") or {"status": "CANCELLED"}
        if outcome["status"] != "COMPLETED":
            if outcome["status"] == "CANCELLED":
                return error_response(400, "Request was cancelled", "request_cancelled", **headers)
            return error_response(outcome["error_status"], outcome["error"], outcome["error_type"], **headers)
        result = json.loads(json.dumps(outcome["result"]))
        file_name = result["audio"]["url"].removeprefix(FILES_PREFIX)
        result["audio"]["url"] = f"{request.base_url}{FILES_PREFIX}{file_name}?sig={keys.sign(entry['owner'], file_name)}"
        headers[billing.BILLING_HEADER] = billing.header_value(outcome["billable_seconds"])
        return JSONResponse(result, headers=headers)

    async def run_sync(request: Request, endpoint: Endpoint, parsed) -> JSONResponse:
        request_id = submit(request, endpoint, parsed)
        entry = await asyncio.to_thread(settle, request_id, queue.requests[request_id], sync_timeout)
        if "outcome" not in entry:
            return error_response(504, f"Still running after {sync_timeout:.0f}s: poll the queue with "
                                  f"request id {request_id}", "timeout", **{"x-fal-request-id": request_id})
        return render(request, entry, request_id)

    @web.post("/prompt-to-audio", response_model=PromptToAudioOutput, summary="Prompt to audio")
    async def prompt_to_audio(request: Request, body: PromptToAudioInput):
        """Generate a song from a prompt (tags and lyrics are written from it)."""
        return await run_sync(request, ENDPOINTS["prompt-to-audio"], body)

    @web.post("/", response_model=TextToAudioOutput, summary="Text to audio")
    async def text_to_audio(request: Request, body: TextToAudioInput):
        """Generate a song from explicit tags and lyrics."""
        return await run_sync(request, ENDPOINTS["text-to-audio"], body)

    @web.get("/health")
    async def health():
        return {"status": "ok"}

    @web.get("/files/{file_name}", include_in_schema=False)
    async def get_file(request: Request, file_name: str, sig: str | None = None):
        request_id = AudioStore.request_id_of(file_name)
        entry = queue.requests.get(request_id) if request_id else None
        allowed = entry is not None and (entry["owner"] == request.state.owner
                                         or (sig is not None and keys.verify(entry["owner"], file_name, sig)))
        stored = audio.open(file_name) if allowed else None
        if allowed and stored is None:
            await asyncio.to_thread(queue.refresh_files)  # written by another container
            stored = audio.open(file_name)
        if stored is None:
            return error_response(404, "File not found")
        return FileResponse(stored.path, media_type=stored.content_type, filename=stored.file_name)

    def endpoint_at(request: Request, sub_path: str) -> Endpoint:
        endpoint = ENDPOINT_BY_SUB_PATH.get(sub_path.strip("/"))
        if endpoint is None:
            raise RequestRejected(error_response(404, f"Path {request.url.path} not found"))
        return endpoint

    @web.post("/run/{owner}/{app_name}", include_in_schema=False)
    @web.post("/run/{owner}/{app_name}/{sub_path:path}", include_in_schema=False)
    async def run_app(request: Request, owner: str, app_name: str, sub_path: str = ""):
        endpoint = endpoint_at(request, sub_path)
        return await run_sync(request, endpoint, parse_input(endpoint, await request.body()))

    def queue_urls(request: Request, owner: str, app_name: str, request_id: str) -> dict[str, str]:
        base = f"{request.base_url}{owner}/{app_name}/requests/{request_id}"
        return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}

    def not_found(request_id: str) -> JSONResponse:
        return error_response(404, f"Request {request_id} not found", "request_not_found")

    @web.post("/{owner}/{app_name}", include_in_schema=False)
    @web.post("/{owner}/{app_name}/{sub_path:path}", include_in_schema=False)
    async def queue_submit(request: Request, owner: str, app_name: str, sub_path: str = ""):
        endpoint = endpoint_at(request, sub_path)
        request_id = submit(request, endpoint, parse_input(endpoint, await request.body()))
        # Modal does not expose queue depth: every queued request reports position 0.
        return JSONResponse({"status": "IN_QUEUE", "request_id": request_id,
                             **queue_urls(request, owner, app_name, request_id), "queue_position": 0},
                            headers={"x-fal-request-id": request_id})

    @web.get("/{owner}/{app_name}/requests/{request_id}/status", include_in_schema=False)
    async def queue_status(request: Request, owner: str, app_name: str, request_id: str, logs: bool = False):
        entry = find(request, request_id)
        if entry is None:
            return not_found(request_id)
        entry = await asyncio.to_thread(settle, request_id, entry)
        body: dict[str, Any] = {"status": entry["status"], "request_id": request_id,
                                **queue_urls(request, owner, app_name, request_id),
                                "logs": entry.get("logs", []) if logs else None}
        if entry["status"] == "IN_QUEUE":
            body["queue_position"] = 0
        elif entry["status"] != "IN_PROGRESS":
            # fal's protocol has one terminal status; failures and cancellations carry error fields.
            outcome = entry.get("outcome") or {"status": "CANCELLED"}
            body.update(status="COMPLETED", metrics={"inference_time": outcome["inference_time"]}
                        if "inference_time" in outcome else {})
            if outcome["status"] == "FAILED":
                body.update(error=_error_text(outcome["error"]), error_type=outcome["error_type"])
            elif outcome["status"] == "CANCELLED":
                body.update(error="Request was cancelled", error_type="request_cancelled")
        return JSONResponse(body, status_code=200 if body["status"] == "COMPLETED" else 202)

    @web.get("/{owner}/{app_name}/requests/{request_id}", include_in_schema=False)
    async def queue_result(request: Request, owner: str, app_name: str, request_id: str):
        entry = find(request, request_id)
        if entry is None:
            return not_found(request_id)
        entry = await asyncio.to_thread(settle, request_id, entry)
        if entry["status"] in ("IN_QUEUE", "IN_PROGRESS"):
            return error_response(400, "Request is still in progress", "request_in_progress",
                                  **{"x-fal-request-id": request_id})
        return render(request, entry, request_id)

    @web.put("/{owner}/{app_name}/requests/{request_id}/cancel", include_in_schema=False)
    async def queue_cancel(request: Request, owner: str, app_name: str, request_id: str):
        entry = find(request, request_id)
        if entry is None:
            return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
        entry = await asyncio.to_thread(settle, request_id, entry)
        if entry["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        await asyncio.to_thread(queue.cancel, entry["call_id"])
        update_request(queue.requests, request_id, status="CANCELLED")
        write_usage(files_root / "usage", usage_record(request_id, entry["endpoint"], entry["owner"],
                                                       {"status": "CANCELLED"}))
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    web.add_middleware(Gate, keys=keys, max_body_bytes=DEFAULT_MAX_BODY_BYTES)
    web.add_middleware(BearerAsKey)
    return web


def api_keys_from_env() -> list[str]:
    return [key.strip() for key in os.environ.get(API_KEY_ENV, "").split(",") if key.strip()]


@app.function(volumes={FILES_DIR: files_volume}, secrets=[api_key_secret], timeout=SETTINGS.modal.timeout)
@modal.concurrent(max_inputs=100)
@modal.asgi_app()
def web():
    return create_web_app(ModalQueue(), api_keys_from_env(), files_dir(), Settings.load())


# ## Smoke test: `modal run deploy/modal_app.py`
#
# Times a cold and a warm call of the deployed class on a short instrumental prompt.


@app.local_entrypoint()
def main(prompt: str = "lofi hiphop, chill, mellow piano", duration: float = 10.0):
    for attempt in ("cold", "warm"):
        started = time.perf_counter()
        outcome = AceStep().generate.remote("prompt-to-audio", {"prompt": prompt, "duration": duration,
                                                                "instrumental": True},
                                            str(uuid.uuid4()), "smoke-test")
        print(f"{attempt}: {outcome['status']} in {time.perf_counter() - started:.1f}s "
              f"({outcome.get('billable_seconds', 0)} billable s)")
