"""The queue, once, over a job store and a runner: submit, look up, wait, cancel, finish.

The store (:class:`acestep_app.serving.jobs.JobStore`) keeps jobs; the runner starts and follows their work
(the local worker thread, or Modal function calls). ``on_finished(job)`` is called on every
terminal transition, exactly once per job, by whichever process made it (webhook deliveries hook in
there); ``on_submitted(job)`` after every accepted submit (metrics). The HTTP shapes of fal's queue
protocol are in :mod:`acestep_app.serving.protocol`.

Submits are capped (``[queue].max_pending`` jobs queued or running in all, ``max_pending_per_key``
per key): past a cap :meth:`QueueService.submit` raises :class:`QueueFull`, and nothing is created.
Waiting for a job from the event loop (:meth:`QueueService.wait_async`) holds no thread: a waiter
sleeps on an asyncio event that the job's terminal transition sets, and checks the store about
once a second (a transition made in another process, or a lost call).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from acestep_app.serving import failures
from acestep_app.serving.jobs import CancelResult, Job, JobStore, Outcome

logger = logging.getLogger(__name__)

FinishedHook = Callable[[Job], None]
POLL_SECONDS = 1.0  # a waiter looks at the store at least this often


class CallFailed(Exception):
    """The work behind a job was lost (its container died) without recording an outcome."""


class QueueFull(Exception):
    """Too many jobs queued or running, in all (``scope`` "server") or for the caller's key ("key")."""

    def __init__(self, scope: str, limit: int):
        super().__init__(f"{limit} requests are already queued or running "
                         f"{'for this API key' if scope == 'key' else 'on this server'}; retry later.")
        self.scope = scope
        self.limit = limit


class Runner(Protocol):
    def dispatch(self, job: Job) -> None:
        """Start (or queue) the work for a new job."""

    def wait(self, job: Job, timeout: float) -> None:
        """Block until the job's work ended or ``timeout`` passed; raise CallFailed if the work was lost."""

    def cancel(self, job: Job) -> None:
        """Stop the work of a job that was just cancelled."""


class InputStash(Protocol):
    """Keeps inline input files out of the job record (:class:`acestep_app.serving.inputs.InputFiles`)."""

    def stash(self, payload: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]: ...

    def discard(self, files: list[dict[str, Any]]) -> None: ...


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


class Waiters:
    """Asyncio events of the requests being waited for, set (thread-safely) when a request ends."""

    def __init__(self):
        self._lock = threading.Lock()
        self._events: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def add(self, request_id: str) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._events.setdefault(request_id, []).append((asyncio.get_running_loop(), event))
        return event

    def remove(self, request_id: str, event: asyncio.Event) -> None:
        with self._lock:
            left = [pair for pair in self._events.get(request_id, []) if pair[1] is not event]
            if left:
                self._events[request_id] = left
            else:
                self._events.pop(request_id, None)

    def wake(self, request_id: str) -> None:
        with self._lock:
            pairs = list(self._events.get(request_id, []))
        for loop, event in pairs:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed
                pass


class QueueService:
    """fal's queue over ``store`` and ``runner``.

    Args:
        on_finished: runs once per job on its terminal transition.
        on_submitted: runs after every accepted submit (metrics).
        max_pending, max_pending_per_key: the submit caps (None: none).
        inputs: where inline input files go (None: they stay in the job's input).
    """

    def __init__(self, store: JobStore, runner: Runner, on_finished: FinishedHook | None = None,
                 on_submitted: Callable[[Job], None] | None = None, *, max_pending: int | None = None,
                 max_pending_per_key: int | None = None, inputs: InputStash | None = None):
        self.store = store
        self.runner = runner
        self.on_finished = on_finished
        self.on_submitted = on_submitted
        self.max_pending = max_pending
        self.max_pending_per_key = max_pending_per_key
        self.inputs = inputs
        self.waiters = Waiters()
        self._submitting = threading.Lock()  # a cap check and its insert are one step

    def submit(self, endpoint: str, owner: str, input: dict[str, Any], webhook_url: str | None = None, *,
               base_url: str | None = None) -> Job:
        """Create and dispatch a job; :class:`QueueFull` past a cap; input errors for bad inline files."""
        self.check_room(owner)  # before the work of stashing a big input; checked again below
        files: list[dict[str, Any]] = []
        if self.inputs is not None:
            input, files = self.inputs.stash(input)
        try:
            with self._submitting:
                self.check_room(owner)
                job = self.store.create(endpoint, owner, input, webhook_url, base_url=base_url, input_files=files)
        except BaseException:
            if files:
                self.inputs.discard(files)
            raise
        self.runner.dispatch(job)
        if self.on_submitted is not None:
            self.on_submitted(job)
        return job

    def check_room(self, owner: str) -> None:
        """:class:`QueueFull` when a submit from ``owner`` would pass a cap."""
        if self.max_pending is not None and self.store.pending_count() >= self.max_pending:
            raise QueueFull("server", self.max_pending)
        if self.max_pending_per_key is not None and self.store.pending_count(owner) >= self.max_pending_per_key:
            raise QueueFull("key", self.max_pending_per_key)

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
        """The job once terminal, or as it is after ``timeout`` seconds (None: no limit). Blocks a thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.store.get(job.request_id) or job
        while not job.status.is_terminal:
            left = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
            if left <= 0:
                break
            job = self._settle(job, left)
        return job

    async def wait_async(self, job: Job, timeout: float | None,
                         gone: Callable[[], Awaitable[bool]] | None = None) -> Job:
        """:meth:`wait` for the event loop, holding no thread while it waits.

        Returns the job once terminal, after ``timeout`` seconds (None: no limit), or as soon as
        ``gone()`` says the caller left (a closed connection). Runners with an async
        ``wait_async(job, timeout)`` (Modal's) are awaited; others are woken by the job's transition.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        event = self.waiters.add(job.request_id)
        runner_wait = getattr(self.runner, "wait_async", None)
        try:
            while True:
                job = await asyncio.to_thread(self._current, job)
                left = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
                if job.status.is_terminal or left <= 0 or (gone is not None and await gone()):
                    return job
                if runner_wait is not None:
                    try:
                        await runner_wait(job, left)
                    except CallFailed as error:
                        await asyncio.to_thread(self._lost, job, error)
                    continue
                try:
                    await asyncio.wait_for(event.wait(), left)
                except TimeoutError:
                    pass
        finally:
            self.waiters.remove(job.request_id, event)

    def cancel(self, job: Job) -> CancelResult:
        result = self.store.request_cancel(job.request_id)
        if result is CancelResult.CANCELLED:
            self.runner.cancel(job)
            self._finished(self.store.get(job.request_id))
        return result or CancelResult.ALREADY_COMPLETED

    def finish(self, job: Job, outcome: Outcome) -> bool:
        if not finish_job(self.store, job, outcome, self.on_finished):
            return False
        self._ended(job)
        return True

    def queue_position(self, job: Job) -> int:
        return self.store.queue_position(job)

    def _current(self, job: Job) -> Job:
        return self.store.get(job.request_id) or job

    def _settle(self, job: Job, timeout: float) -> Job:
        try:
            self.runner.wait(job, timeout)
        except CallFailed as error:
            self._lost(job, error)
        return self.store.get(job.request_id) or job

    def _lost(self, job: Job, error: CallFailed) -> None:
        logger.error("request %s: its generation call failed", job.request_id, exc_info=error)
        self.finish(job, Outcome.failed(failures.call_failed()))

    def _ended(self, job: Job) -> None:
        """After a terminal transition made here: wake the request's waiters, drop its inline files."""
        self.waiters.wake(job.request_id)
        if self.inputs is not None and job.input_files:
            try:
                self.inputs.discard(job.input_files)
            except OSError:  # the retention pruning removes what is left
                logger.exception("could not delete the input files of %s", job.request_id)

    def _finished(self, job: Job | None) -> None:
        if job is None:
            return
        self._ended(job)
        if self.on_finished is not None:
            try:
                self.on_finished(job)
            except Exception:
                logger.exception("on_finished hook failed for %s", job.request_id)
