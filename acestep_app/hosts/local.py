"""The local fal-compatible server: the shared routes (:mod:`acestep_app.hosts.web`) over SQLite and one worker.

Jobs live in ``<data dir>/jobs.sqlite3`` (:mod:`acestep_app.serving.stores.sqlite`), their audio in
``<data dir>/files``, inline input audio in ``<data dir>/inputs`` (:mod:`acestep_app.serving.inputs`).
One worker thread runs them in submission order on the Engine. Synchronous calls wait for their job
without a limit (there is no proxy in front to cut them off), on the event loop. Queue submits
with ``?fal_webhook=`` get fal's signed webhook (:mod:`acestep_app.serving.webhooks.queue_hooks`), delivered from
``<data dir>/webhooks.sqlite3`` by a thread that starts and stops with the app. ``/metrics``
counts every job, webhook attempt and response of this process (:mod:`acestep_app.serving.metrics`).
A retention thread prunes what is older than ``[storage].retention_days``
(:mod:`acestep_app.serving.retention`). The data dir is private to the server's user (docs/security.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from acestep_app.engine.family import get_family
from acestep_app.hosts.web import Host, create_web_app
from acestep_app.serving.auth import Keys
from acestep_app.serving.endpoints import EndpointRegistry
from acestep_app.serving.failures import failure_for
from acestep_app.serving.inputs import InputFiles
from acestep_app.serving.jobs import Job, JobStatus, Outcome
from acestep_app.serving.metrics import Metrics
from acestep_app.serving.queue import FinishedHook, QueueService
from acestep_app.serving.retention import Retention
from acestep_app.serving.service import execute, file_saver
from acestep_app.serving.storage import AUDIO_DIR, INPUTS_DIR, OWNER_SECRET_FILE, AudioStore, secret_in
from acestep_app.serving.stores.sqlite import JobContext, JobWorker, SqliteJobStore
from acestep_app.serving.webhooks.outbox import Webhooks
from acestep_app.serving.webhooks.queue_hooks import QueueWebhooks

logger = logging.getLogger(__name__)


class EngineJobHandler:
    """A stored job -> its endpoint's call on its family's engine -> a stored audio file -> its outcome."""

    def __init__(self, engines: Mapping[str, Any], registry: EndpointRegistry, audio: AudioStore, settings,
                 inputs: InputFiles | None = None):
        self.engines = engines
        self.registry = registry
        self.audio = audio
        self.settings = settings
        self.inputs = inputs

    def __call__(self, job: Job, context: JobContext) -> Outcome:
        endpoint = self.registry.by_name(job.endpoint)
        if endpoint is None:  # a job of a family this server no longer serves
            return Outcome.failed(failure_for(RuntimeError(f"endpoint {job.endpoint!r} is not served here")))
        try:
            payload = self.inputs.restore(job.input, job.input_files) if self.inputs else job.input
        except (OSError, RuntimeError) as error:  # its input file was deleted or altered meanwhile
            return Outcome.failed(failure_for(RuntimeError(f"the request's input file is gone: {error}")))

        def on_progress(progress) -> None:
            context.check()
            context.log(progress.message or f"step {progress.step}/{progress.total}")

        return execute(endpoint, self.engines[endpoint.family], endpoint.input_model.model_validate(payload), self.settings,
                       file_saver(self.audio, job.request_id), on_progress=on_progress, log=context.log,
                       check=context.check)


class WorkerRunner:
    """The local runner: jobs wait in SQLite until the worker thread takes them."""

    def __init__(self, worker: JobWorker):
        self.worker = worker

    def dispatch(self, job: Job) -> None:
        self.worker.notify()

    def wait(self, job: Job, timeout: float) -> None:
        with self.worker.finished:  # checked under the lock the worker notifies with: no lost wake-up
            current = self.worker.store.get(job.request_id)
            if timeout > 0 and current is not None and not current.status.is_terminal:
                self.worker.finished.wait(timeout)

    def cancel(self, job: Job) -> None:
        self.worker.notify()


def engines_by_family(engines) -> dict[str, Any]:
    """One engine (its ``family`` names it) or a mapping family name -> engine, as a dict."""
    if isinstance(engines, Mapping):
        return dict(engines)
    return {engines.family: engines}


def create_app(engines, settings, data_dir: str | Path, api_key: str | Sequence[str] | None = None, *,
               max_body_bytes: Mapping[str, int] | None = None, on_finished: FinishedHook | None = None,
               on_submitted=None, routers=(), allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The local server as an ASGI app (serve it with uvicorn, or test it in-process).

    ``engines`` is one loaded engine, or a mapping family name -> engine; the server serves those
    families' endpoints, the first family being the primary one (its endpoints at ``/<sub-path>``).

    The job database, files and webhook outbox live under ``data_dir``; an unusable data dir fails
    here, not later. The worker and webhook threads start and stop with the app's lifespan; queued
    jobs of an earlier process resume then, jobs it was running are re-queued once (then failed with
    a reason), and its undelivered webhooks are sent. ``on_finished(job)`` runs once per job when it
    ends (after its webhook is queued), ``on_submitted(job, base_url)`` after each queue submit (after
    its webhook is registered), and ``routers`` are extra routes. ``max_body_bytes`` overrides
    endpoints' body limits (name -> bytes); ``allowed_hosts`` are the ``Host`` names served (None:
    any, as in-process; ``acestep-app serve`` passes the bound address plus localhost by default).
    """
    data_dir = Path(data_dir)
    store = SqliteJobStore(data_dir)
    try:
        audio = AudioStore(data_dir / AUDIO_DIR)
        inputs = InputFiles(data_dir / INPUTS_DIR, settings.audio_input.max_download_bytes)
        secret = secret_in(data_dir / OWNER_SECRET_FILE)
    except OSError as error:
        raise RuntimeError(f"cannot write generated audio under {data_dir}: {error}") from error
    keys = Keys(api_key, secret=secret, url_ttl_s=settings.storage.url_ttl_s)
    engines = engines_by_family(engines)
    registry = EndpointRegistry([get_family(name) for name in engines], settings)
    metrics = Metrics([endpoint.name for endpoint in registry.endpoints],
                      queue_depth=lambda: {"queued": store.count(JobStatus.IN_QUEUE),
                                           "running": store.count(JobStatus.IN_PROGRESS)})
    outbox = Webhooks(data_dir, settings.webhooks, allow_private=settings.security.allow_private_urls,
                      on_attempt=metrics.webhook_attempt)
    webhooks = QueueWebhooks(outbox, store, keys)

    def finished(job: Job) -> None:
        metrics.job_finished(job)
        webhooks.on_finished(job)
        if on_finished is not None:
            on_finished(job)

    worker = JobWorker(store, EngineJobHandler(engines, registry, audio, settings, inputs))
    queue = QueueService(store, WorkerRunner(worker), finished, on_submitted=metrics.job_submitted,
                         max_pending=settings.queue.max_pending,
                         max_pending_per_key=settings.queue.max_pending_per_key, inputs=inputs)
    worker.finish = queue.finish
    retention = Retention(store, audio, inputs, outbox.outbox, settings.storage.retention_days,
                          settings.storage.prune_interval_s)

    def health() -> dict:
        described = {name: engine.describe() for name, engine in engines.items()}
        return {"status": "ok", "engine": described[registry.primary.name], "engines": described,
                "queue": {"in_queue": store.count(JobStatus.IN_QUEUE), "in_progress": store.count(JobStatus.IN_PROGRESS)}}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        requeued, failed = store.recover(queue.finish)
        if requeued or failed:
            logger.warning("recovered interrupted jobs: %d re-queued, %d failed", requeued, failed)
        await asyncio.to_thread(webhooks.start)
        worker.start()
        retention.start()
        try:
            yield
        finally:
            retention.stop()
            await asyncio.to_thread(worker.stop)
            await asyncio.to_thread(webhooks.stop)

    host = Host(queue, keys, settings, registry, audio.open, health, sync_wait=None, max_body_bytes=max_body_bytes,
                on_submitted=on_submitted, routers=[webhooks.router(), *routers], accepts_webhooks=True,
                allowed_hosts=allowed_hosts, cors_origins=settings.server.cors_origins, metrics=metrics)
    app = create_web_app(host, version=_version(), lifespan=lifespan)
    app.state.store = store
    app.state.worker = worker
    app.state.engines = engines
    app.state.webhooks = webhooks
    app.state.retention = retention
    app.state.queue = queue
    app.state.metrics = metrics
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("acestep-app")
    except Exception:
        return "0+unknown"
