"""The queue, once, over a job store and a runner: submit, look up, wait, cancel, finish.

The store (:class:`acestep_app.serving.jobs.JobStore`) keeps jobs; the runner starts and follows their work
(the local worker thread, or Modal function calls). ``on_finished(job)`` is called on every
terminal transition, exactly once per job, by whichever process made it (webhook deliveries hook in
there); ``on_submitted(job)`` after every accepted submit (metrics). The HTTP shapes of fal's queue protocol are in :mod:`acestep_app.serving.protocol`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from acestep_app.serving import failures
from acestep_app.serving.jobs import CancelResult, Job, JobStore, Outcome

logger = logging.getLogger(__name__)

FinishedHook = Callable[[Job], None]


class CallFailed(Exception):
    """The work behind a job was lost (its container died) without recording an outcome."""


class Runner(Protocol):
    def dispatch(self, job: Job) -> None:
        """Start (or queue) the work for a new job."""

    def wait(self, job: Job, timeout: float) -> None:
        """Block until the job's work ended or ``timeout`` passed; raise CallFailed if the work was lost."""

    def cancel(self, job: Job) -> None:
        """Stop the work of a job that was just cancelled."""


def finish_job(store: JobStore, job: Job, outcome: Outcome, on_finished: FinishedHook | None = None) -> bool:
    """Record ``outcome`` (first writer wins) and, when this call ended the job, run the hook once."""
    if not store.finish(job, outcome):
        return False
    if on_finished is not None:
        finished = store.get(job.request_id)
        try:
            on_finished(finished)
        except Exception:  # a hook never undoes or blocks the transition
            logger.exception("on_finished hook failed for %s", job.request_id)
    return True


class QueueService:
    def __init__(self, store: JobStore, runner: Runner, on_finished: FinishedHook | None = None,
                 on_submitted: Callable[[Job], None] | None = None):
        self.store = store
        self.runner = runner
        self.on_finished = on_finished
        self.on_submitted = on_submitted

    def submit(self, endpoint: str, owner: str, input: dict[str, Any], webhook_url: str | None = None) -> Job:
        job = self.store.create(endpoint, owner, input, webhook_url)
        self.runner.dispatch(job)
        if self.on_submitted is not None:
            self.on_submitted(job)
        return job

    def recent(self, owner: str, limit: int) -> list[Job]:
        """The owner's latest jobs, newest first."""
        return self.store.recent(owner, limit)

    def find(self, request_id: str, owner: str) -> Job | None:
        """The owner's job, settled first when its work was lost."""
        job = self.store.get(request_id, owner=owner)
        if job is not None and not job.status.is_terminal:
            job = self._settle(job, 0)
        return job

    def wait(self, job: Job, timeout: float | None) -> Job:
        """The job once terminal, or as it is after ``timeout`` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.store.get(job.request_id) or job
        while not job.status.is_terminal:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                break
            job = self._settle(job, left)
        return job

    def cancel(self, job: Job) -> CancelResult:
        result = self.store.request_cancel(job.request_id)
        if result is CancelResult.CANCELLED:
            self.runner.cancel(job)
            self._finished(job.request_id)
        return result or CancelResult.ALREADY_COMPLETED

    def finish(self, job: Job, outcome: Outcome) -> bool:
        return finish_job(self.store, job, outcome, self.on_finished)

    def queue_position(self, job: Job) -> int:
        return self.store.queue_position(job)

    def _settle(self, job: Job, timeout: float) -> Job:
        try:
            self.runner.wait(job, timeout)
        except CallFailed:
            logger.exception("request %s: its generation call failed", job.request_id)
            self.finish(job, Outcome.failed(failures.call_failed()))
        return self.store.get(job.request_id) or job

    def _finished(self, request_id: str) -> None:
        if self.on_finished is not None:
            try:
                self.on_finished(self.store.get(request_id))
            except Exception:
                logger.exception("on_finished hook failed for %s", request_id)
