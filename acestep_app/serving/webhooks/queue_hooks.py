"""The queue's side of webhooks: a submitted request's webhook is registered, and delivered when it finishes.

A request's webhook needs two things: its registration (written at submit, with the base URL its
file links use) and its terminal transition (``on_finished``). Whichever of the two comes second
enqueues the delivery; :meth:`QueueWebhooks.catch_up` does it at startup for requests that finished
while no process was there to see it (a kill -9 between the transition and the hook). Enqueueing
is idempotent, so a request never gets two deliveries.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from acestep_app.serving import protocol
from acestep_app.serving.auth import Keys, file_url
from acestep_app.serving.jobs import Job, JobStore
from acestep_app.serving.webhooks.outbox import DeliveryState, Webhooks

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

    def register(self, job: Job, base_url: str) -> None:
        """Called after each queue submit, before it is answered; notes the request's webhook if it has one."""
        if not job.webhook_url:
            return
        self.webhooks.register(job.request_id, job.webhook_url, self.webhooks.key.user_id(job.owner), base_url)
        current = self.store.get(job.request_id)
        if current is not None and current.status.is_terminal:  # it finished before it was registered
            self._enqueue(current, base_url)

    def on_finished(self, job: Job) -> None:
        """The queue's terminal-transition hook."""
        if not job.webhook_url:
            return
        registration = self.webhooks.registration(job.request_id)
        if registration is not None and registration.state is DeliveryState.WAITING:
            self._enqueue(job, registration.base_url)

    def catch_up(self) -> int:
        """Enqueue the registered webhooks of requests that already finished; how many there were."""
        caught = 0
        for registration in self.webhooks.waiting():
            job = self.store.get(registration.request_id)
            if job is not None and job.status.is_terminal:
                caught += self._enqueue(job, registration.base_url)
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
        return self.webhooks.enqueue(job.request_id, job.webhook_url, self.webhooks.key.user_id(job.owner), payload,
                                     error_status=error_status)
