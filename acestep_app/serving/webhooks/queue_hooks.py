"""The queue's side of webhooks: a submitted request's webhook is delivered when the request finishes.

A request's webhook is part of its job: the job store writes the URL (and the base URL its file
links use) in the same transaction that creates the job, marked pending until its delivery is
queued. ``on_finished`` queues the delivery; :meth:`QueueWebhooks.catch_up` does it at startup for
requests that finished while no process was there to see it (a kill -9 anywhere between submit and
the hook). Enqueueing is idempotent, so a request never gets two deliveries. (Registrations an
earlier version wrote to the outbox at submit, ``WAITING``, are honoured the same way.)
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from acestep_app.serving import protocol
from acestep_app.serving.auth import Keys, file_url
from acestep_app.serving.jobs import Job, JobStore
from acestep_app.serving.webhooks.outbox import Webhooks

logger = logging.getLogger(__name__)


class QueueWebhooks:
    def __init__(self, webhooks: Webhooks, store: JobStore, keys: Keys):
        self.webhooks = webhooks
        self.store = store
        self.keys = keys

    def jwks(self) -> dict:
        return self.webhooks.jwks()

    def router(self) -> APIRouter:
        """``GET /.well-known/jwks.json``: the public key that signs deliveries (open, no API key)."""
        router = APIRouter(include_in_schema=False)

        @router.get("/.well-known/jwks.json")
        async def jwks():
            return JSONResponse(self.jwks(), headers={"cache-control": "public, max-age=3600"})

        return router

    def on_finished(self, job: Job) -> None:
        """The queue's terminal-transition hook: queue the request's delivery."""
        if job.webhook_url:
            registration = self.webhooks.registration(job.request_id)
            self._enqueue(job, job.base_url or (registration.base_url if registration else None))

    def catch_up(self) -> int:
        """Queue the deliveries of requests that finished without it; how many there were."""
        caught = 0
        for registration in self.webhooks.waiting():
            job = self.store.get(registration.request_id)
            if job is not None and job.status.is_terminal:
                caught += self._enqueue(job, job.base_url or registration.base_url)
        pending = getattr(self.store, "webhooks_to_queue", None)
        for job in pending() if pending else ():
            caught += self._enqueue(job, job.base_url)
        if caught:
            logger.warning("%d webhook(s) of requests that finished while the server was down: queued now", caught)
        return caught

    def start(self) -> None:
        self.catch_up()
        self.webhooks.start()

    def stop(self) -> None:
        self.webhooks.stop()

    def _enqueue(self, job: Job, base_url: str | None) -> bool:
        payload, error_status = protocol.webhook_payload(job, file_url(base_url or "", self.keys))
        added = self.webhooks.enqueue(job.request_id, job.webhook_url, self.webhooks.key.user_id(job.owner), payload,
                                      error_status=error_status)
        queued = getattr(self.store, "webhook_queued", None)
        if queued is not None:
            queued(job.request_id)
        return added
