"""The Modal app's job store: one ``modal.Dict`` shared by the web and GPU containers, and a files Volume.

No key is ever read-modified-written by two containers, so no update can lose another's fields:

=====================  ==============================  =========================================
key                    written by                      holds
=====================  ==============================  =========================================
``<id>:job``           web, once (submit)              endpoint, owner, input, webhook, created
``<id>:call``          web, once (dispatch)            the Modal function call id
``<id>:run``           the GPU container running it    started_at, attempts, logs
``<id>:outcome``       first writer wins               the terminal outcome (``put(skip_if_exists)``)
``<owner>:history:<n>``  web, once (submit)            the owner's n-th request id (``put(skip_if_exists)``)
``<owner>:history``    web (submit)                    a hint: a slot at or before the owner's next free one
=====================  ==============================  =========================================

A cancel and a finished generation race for ``<id>:outcome``; whichever is first is the outcome, and
only it writes the usage record (``usage/<id>.json`` on the files Volume). So a cancelled request is
never billed, whichever container finishes last. The usage record cannot be lost to a crash between
the two writes: each writer puts its record on the Volume first (``usage/<id>.<token>.pending``) and
names the token in its outcome; the winner renames its file, a loser deletes its own, and
:meth:`ModalJobStore.repair_usage` settles files a crash left pending (the usage record is the
ledger; the Dict's entries expire after a week idle, the Volume's files do not).

Queue positions come from the function's backlog (``backlog()``: inputs waiting for a container):
a request's position is at most what the backlog was when it was submitted, and at most the
backlog now, less itself. ``[queue].max_pending`` caps that backlog; the per-key cap needs counts
per key, which the Dict cannot keep without read-modify-writes, so it is not applied on Modal.
Inline input files (:mod:`acestep_app.serving.inputs`) go to ``inputs/`` on the files Volume.
This module does not import ``modal``: the Modal app hands it the Dict and the Volume's
commit/reload (tests hand it in-memory ones).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from acestep_app.serving import failures
from acestep_app.serving.endpoints import EndpointRegistry
from acestep_app.serving.inputs import InputFiles
from acestep_app.serving.jobs import (
    CancelResult,
    Job,
    JobStatus,
    Outcome,
    UsageRecord,
    log_entry,
    read_usage_dir,
)
from acestep_app.serving.metrics import Metrics
from acestep_app.serving.queue import FinishedHook, finish_job
from acestep_app.serving.service import execute, file_saver
from acestep_app.serving.storage import AudioStore, StoredFile

logger = logging.getLogger(__name__)

USAGE_DIR = "usage"
AUDIO_DIR = "audio"
INPUTS_DIR = "inputs"
OWNER_SECRET_KEY = "secrets:owner"  # the key owner ids are hashed with (acestep_app.serving.auth)
STALE_PENDING_SECONDS = 86_400.0  # a pending usage file with no outcome this old was a writer that died


class ModalJobStore:
    """:class:`acestep_app.serving.jobs.JobStore` over a ``modal.Dict`` (``get``, ``put(..., skip_if_exists)``).

    ``commit``/``reload``: the files Volume's; ``backlog()``: the GPU function's waiting inputs.
    """

    def __init__(self, registry, files_root: str | Path, commit: Callable[[], None] = lambda: None,
                 reload: Callable[[], None] = lambda: None, backlog: Callable[[], int] = lambda: 0):
        self.registry = registry
        self.files_root = Path(files_root)
        self.commit = commit
        self.reload = reload
        self.backlog = backlog

    def create(self, endpoint: str, owner: str, input: dict[str, Any], webhook_url: str | None = None, *,
               base_url: str | None = None, input_files: list[dict[str, Any]] | None = None) -> Job:
        request_id = str(uuid.uuid4())
        if input_files:
            self.commit()  # the GPU container reads them from the Volume
        submission = {"endpoint": endpoint, "owner": owner, "input": input, "webhook_url": webhook_url,
                      "created_at": time.time(), "logs": [log_entry("Request queued.")],
                      "input_files": list(input_files or []), "ahead": self.backlog()}
        self.registry.put(f"{request_id}:job", submission, skip_if_exists=True)
        self._add_to_history(owner, request_id)
        return self._job(request_id, submission, None, None)

    def inputs(self, max_bytes: int) -> InputFiles:
        return InputFiles(self.files_root / INPUTS_DIR, max_bytes)

    def owner_secret(self) -> bytes:
        """The secret owner ids are keyed with: one for every container, made by the first to ask."""
        self.registry.put(OWNER_SECRET_KEY, secrets.token_hex(32), skip_if_exists=True)
        return bytes.fromhex(self.registry.get(OWNER_SECRET_KEY))

    def pending_count(self, owner: str | None = None) -> int:
        """Requests waiting for a GPU container (all keys: the backlog has no owners; per key: not counted)."""
        return self.backlog() if owner is None else 0
    def _add_to_history(self, owner: str, request_id: str) -> None:
        """Claim the owner's next history slot; two containers submitting at once each claim their own."""
        slot = self.registry.get(f"{owner}:history") or 0
        while not self.registry.put(f"{owner}:history:{slot}", request_id, skip_if_exists=True):
            slot += 1
        self.registry.put(f"{owner}:history", slot + 1)  # may fall behind under a race: readers scan forward

    def recent(self, owner: str, limit: int) -> list[Job]:
        end = self.registry.get(f"{owner}:history") or 0
        while self.registry.get(f"{owner}:history:{end}") is not None:
            end += 1
        jobs = []
        for slot in range(end - 1, max(-1, end - 1 - limit), -1):
            request_id = self.registry.get(f"{owner}:history:{slot}")
            job = self.get(request_id, owner) if request_id else None
            if job is not None:
                jobs.append(job)
        return jobs

    def set_call(self, request_id: str, call_id: str) -> None:
        self.registry.put(f"{request_id}:call", call_id, skip_if_exists=True)

    def call_id(self, request_id: str) -> str | None:
        return self.registry.get(f"{request_id}:call")

    def get(self, request_id: str, owner: str | None = None) -> Job | None:
        submission = self.registry.get(f"{request_id}:job")
        if submission is None or (owner is not None and submission["owner"] != owner):
            return None
        return self._job(request_id, submission, self.registry.get(f"{request_id}:run"),
                         self.registry.get(f"{request_id}:outcome"))

    def queue_position(self, job: Job) -> int:
        """At most the backlog ahead of it at submit, and at most the backlog now less itself."""
        if job.status is not JobStatus.IN_QUEUE:
            return 0
        submission = self.registry.get(f"{job.request_id}:job") or {}
        return max(0, min(int(submission.get("ahead", 0)), self.backlog() - 1))

    def start(self, request_id: str) -> Job | None:
        job = self.get(request_id)
        if job is None or job.status.is_terminal:
            return None
        run = {"started_at": time.time(), "attempts": job.attempts + 1,
               "logs": [*self._run_logs(request_id), log_entry("Request started.")]}
        self.registry.put(f"{request_id}:run", run)
        return self.get(request_id)

    def append_log(self, request_id: str, entry: dict[str, str]) -> None:
        run = self.registry.get(f"{request_id}:run") or {"started_at": time.time(), "attempts": 1, "logs": []}
        self.registry.put(f"{request_id}:run", {**run, "logs": [*run["logs"], entry]})

    def is_cancel_requested(self, request_id: str) -> bool:
        return self.registry.get(f"{request_id}:outcome") is not None

    def request_cancel(self, request_id: str) -> CancelResult | None:
        job = self.get(request_id)
        if job is None:
            return None
        if job.status.is_terminal or not self.finish(job, Outcome.failed(failures.cancelled())):
            return CancelResult.ALREADY_COMPLETED
        return CancelResult.CANCELLED

    def finish(self, job: Job, outcome: Outcome) -> bool:
        """The outcome, first writer wins, with its usage record: on the Volume before the outcome names it."""
        now = time.time()
        failure = outcome.failure
        usage_dir = self.files_root / USAGE_DIR
        usage_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        pending = usage_dir / f"{job.request_id}.{token}.pending"
        pending.write_text(UsageRecord.of(job, outcome, now).to_json(), encoding="utf-8")
        self.commit()
        record = {"status": outcome.status.value, "result": outcome.result, "billable_seconds": outcome.billable_seconds,
                  "price_usd": outcome.price_usd, "finished_at": now, "log": outcome.log_entry(),
                  "error": failure.detail if failure else None, "error_type": failure.error_type if failure else None,
                  "error_status": failure.status_code if failure else None, "usage_token": token}
        won = self.registry.put(f"{job.request_id}:outcome", record, skip_if_exists=True)
        if won:
            pending.replace(usage_dir / f"{job.request_id}.json")
        else:
            pending.unlink(missing_ok=True)
        self.commit()
        return won

    def repair_usage(self, now: float | None = None) -> int:
        """Settle usage files a crash left pending: the outcome's own is kept, others deleted; how many kept."""
        now = time.time() if now is None else now
        kept = changed = 0
        for pending in sorted((self.files_root / USAGE_DIR).glob("*.pending")):
            request_id, token = pending.name.split(".")[:2]
            outcome = self.registry.get(f"{request_id}:outcome")
            if outcome is not None and outcome.get("usage_token") == token:
                pending.replace(pending.with_name(f"{request_id}.json"))
                kept += 1
            elif outcome is not None or now - pending.stat().st_mtime > STALE_PENDING_SECONDS:
                pending.unlink(missing_ok=True)
            else:
                continue
            changed += 1
        if changed:
            self.commit()
        return kept

    def usage_records(self) -> list[UsageRecord]:
        self.repair_usage()
        return read_usage_dir(self.files_root / USAGE_DIR)

    def _run_logs(self, request_id: str) -> list[dict[str, str]]:
        run = self.registry.get(f"{request_id}:run")
        return list(run["logs"]) if run else []

    def _job(self, request_id: str, submission: dict, run: dict | None, outcome: dict | None) -> Job:
        status = JobStatus(outcome["status"]) if outcome else JobStatus.IN_PROGRESS if run else JobStatus.IN_QUEUE
        logs = [*submission["logs"], *(run["logs"] if run else []), *([outcome["log"]] if outcome else [])]
        outcome = outcome or {}
        return Job(
            request_id=request_id, endpoint=submission["endpoint"], owner=submission["owner"], status=status,
            input=submission["input"], webhook_url=submission["webhook_url"], result=outcome.get("result"),
            error=outcome.get("error"), error_type=outcome.get("error_type"), error_status=outcome.get("error_status"),
            logs=logs, attempts=run["attempts"] if run else 0, billable_seconds=outcome.get("billable_seconds", 0.0),
            price_usd=outcome.get("price_usd", 0.0), created_at=submission["created_at"],
            started_at=run["started_at"] if run else None, finished_at=outcome.get("finished_at"),
            input_files=submission.get("input_files", []),
        )


def web_metrics(registry: EndpointRegistry, events=None, stats: Callable[[], Any] | None = None) -> Metrics:
    """The web container's metrics. The jobs GPU containers finished arrive on ``events`` (a ``modal.Queue``
    they put :func:`finished_event` on), taken in at each scrape; ``stats()`` is Modal's current stats of the
    generation function (its backlog and running inputs are the queue depth). No GPU in this container."""
    depth = None if stats is None else lambda: {"queued": (now := stats()).backlog, "running": now.num_running_inputs}
    metrics = Metrics([endpoint.name for endpoint in registry.endpoints], queue_depth=depth, gpu_memory=None,
                      before_scrape=None if events is None else lambda: drain_events(events, metrics.job_finished))
    return metrics


def finished_event(job: Job) -> Job:
    """A finished job as the GPU container reports it to the web container's metrics: no input, no logs
    (an input may carry a whole song as a ``data:`` URI)."""
    return replace(job, input={}, logs=[])


def drain_events(events, on_finished: FinishedHook, batch: int = 1000) -> int:
    """Hand every waiting event of a ``modal.Queue`` (``get_many(n, block=False)``) to ``on_finished``."""
    taken = 0
    while True:
        jobs = events.get_many(batch, block=False)
        for job in jobs:
            on_finished(job)
        taken += len(jobs)
        if len(jobs) < batch:
            return taken


def run_job(store: ModalJobStore, engine, registry: EndpointRegistry, settings, request_id: str,
            on_finished: FinishedHook | None = None) -> str:
    """The GPU container's work for one request: start it, run it, record the outcome (first writer wins).

    ``registry`` holds the endpoints ``engine`` serves (its family's).
    """
    job = store.start(request_id)
    if job is None:
        return "skipped"  # cancelled (or finished) before it started
    endpoint = registry.by_name(job.endpoint)
    if endpoint is None:
        outcome = Outcome.failed(failures.failure_for(RuntimeError(f"endpoint {job.endpoint!r} is not served here")))
        finish_job(store, job, outcome, on_finished)
        return outcome.status.value

    def log(message: str) -> None:
        store.append_log(request_id, log_entry(message))

    def check() -> None:
        if store.is_cancel_requested(request_id):
            raise failures.JobCancelled(request_id)

    def on_progress(progress) -> None:
        check()
        log(progress.message)

    inputs = store.inputs(settings.audio_input.max_download_bytes)
    try:
        if job.input_files:
            store.reload()  # the web container wrote them
        payload = inputs.restore(job.input, job.input_files)
    except Exception as error:  # its input file is gone or altered: the request fails, unbilled
        outcome = Outcome.failed(failures.failure_for(RuntimeError(f"the request's input file is gone: {error}")))
    else:
        audio = AudioStore(store.files_root / AUDIO_DIR)
        outcome = execute(endpoint, engine, endpoint.input_model.model_validate(payload), settings,
                          file_saver(audio, request_id), on_progress=on_progress, log=log, check=check)
        store.commit()  # the audio is on the Volume before the outcome says so
    finish_job(store, job, outcome, on_finished)
    inputs.discard(job.input_files)
    return outcome.status.value


class VolumeFiles:
    """Generated audio read from the files Volume in the web container.

    A file another container wrote appears after ``reload``; Modal refuses a reload while files of
    the Volume are open (a download in flight), so reloads are serialised and retried with backoff.
    """

    ATTEMPTS = 5
    FIRST_DELAY = 0.2  # seconds; doubled after each refused reload

    def __init__(self, root: str | Path, reload: Callable[[], None]):
        self.audio = AudioStore(Path(root) / AUDIO_DIR)
        self.reload = reload
        self._lock = threading.Lock()

    def open(self, file_name: str) -> StoredFile | None:
        stored = self.audio.open(file_name)
        if stored is None and self.refresh():
            stored = self.audio.open(file_name)
        return stored

    def refresh(self) -> bool:
        with self._lock:
            for attempt in range(self.ATTEMPTS):
                try:
                    self.reload()
                    return True
                except Exception as error:  # e.g. "there are open files preventing the operation"
                    logger.warning("files Volume reload failed (attempt %d): %s", attempt + 1, error)
                    time.sleep(self.FIRST_DELAY * 2**attempt)
        return False
