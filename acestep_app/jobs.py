"""Persistent job queue for the local server: SQLite jobs + usage tables and one GPU worker thread.

A job moves ``IN_QUEUE -> IN_PROGRESS -> COMPLETED | FAILED | CANCELLED``; every transition is a
single guarded ``UPDATE`` so two threads can never both claim or finish a job. The database (WAL
mode, under the data dir) is the queue itself: the worker always takes the oldest ``IN_QUEUE`` job,
so a restart simply resumes where the previous process stopped. A job found ``IN_PROGRESS`` at
startup was running when the process died: it is re-queued once, then failed with a reason.

Every job that reaches a terminal state gets exactly one usage row; only ``COMPLETED`` jobs bill
seconds, failures and cancellations bill 0.
"""

from __future__ import annotations

import enum
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DATABASE_NAME = "jobs.sqlite3"
MAX_ATTEMPTS = 2  # the first run plus one re-run after a crash mid-job

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('IN_QUEUE','IN_PROGRESS','COMPLETED','FAILED','CANCELLED')),
    input TEXT NOT NULL,
    result TEXT,
    error TEXT,
    error_type TEXT,
    error_status INTEGER,
    logs TEXT NOT NULL DEFAULT '[]',
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    billable_seconds REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS usage (
    request_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    seconds REAL NOT NULL,
    price_usd REAL NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL NOT NULL
);
"""


class JobStatus(str, enum.Enum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobCancelled(Exception):
    """Raised inside a running job (from its progress callback) once cancellation was requested."""


class JobInterrupted(Exception):
    """Raised inside a running job when the server shuts down; the job goes back to the queue."""


class JobError(Exception):
    """A failure with an HTTP status and type to report on the job (e.g. 422 for bad input)."""

    def __init__(self, message: str, *, status_code: int = 500, error_type: str = "internal_error",
                 detail: Any = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_type = error_type
        self.detail = detail if detail is not None else message


@dataclass
class Job:
    request_id: str
    endpoint: str
    owner: str
    status: JobStatus
    input: dict[str, Any]
    seq: int = 0
    result: dict[str, Any] | None = None
    error: Any = None
    error_type: str | None = None
    error_status: int | None = None
    logs: list[dict[str, str]] = field(default_factory=list)
    attempts: int = 0
    cancel_requested: bool = False
    billable_seconds: float = 0.0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            request_id=row["request_id"],
            endpoint=row["endpoint"],
            owner=row["owner"],
            status=JobStatus(row["status"]),
            input=json.loads(row["input"]),
            seq=row["seq"],
            result=json.loads(row["result"]) if row["result"] else None,
            error=json.loads(row["error"]) if row["error"] else None,
            error_type=row["error_type"],
            error_status=row["error_status"],
            logs=json.loads(row["logs"]),
            attempts=row["attempts"],
            cancel_requested=bool(row["cancel_requested"]),
            billable_seconds=row["billable_seconds"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    @property
    def inference_time(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass
class UsageTotals:
    jobs: int
    completed: int
    seconds: float
    price_usd: float


def log_entry(message: str, level: str = "INFO") -> dict[str, str]:
    """One log line in fal's queue format (``message``, ``level``, ``source``, ``timestamp``)."""
    timestamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"message": message, "level": level, "source": "USER", "timestamp": timestamp}


class JobStore:
    """SQLite persistence for jobs and usage. Thread-safe: one connection guarded by a lock."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DATABASE_NAME
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise RuntimeError(f"cannot open the job database at {self.path}: {error}") from error
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- reads -----------------------------------------------------------------------------------

    def get(self, request_id: str, owner: str | None = None) -> Job | None:
        """The job, or None when unknown or (with ``owner``) submitted by another key."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            return None
        return Job.from_row(row)

    def queue_position(self, job: Job) -> int:
        """How many queued jobs run before this one (0 = next)."""
        with self._lock:
            (ahead,) = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'IN_QUEUE' AND seq < ?", (job.seq,)
            ).fetchone()
        return int(ahead)

    def count(self, status: JobStatus) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status.value,)).fetchone()
        return int(n)

    def usage_rows(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM usage ORDER BY finished_at").fetchall()
        return [dict(row) for row in rows]

    def usage_totals(self) -> dict[str, UsageTotals]:
        """Usage per endpoint, plus an ``"all"`` entry."""
        with self._lock:
            rows = self._db.execute(
                "SELECT endpoint, COUNT(*), SUM(status = 'COMPLETED'), SUM(seconds), SUM(price_usd) "
                "FROM usage GROUP BY endpoint ORDER BY endpoint"
            ).fetchall()
        totals = {row[0]: UsageTotals(row[1], row[2] or 0, row[3] or 0.0, row[4] or 0.0) for row in rows}
        totals["all"] = UsageTotals(
            sum(t.jobs for t in totals.values()),
            sum(t.completed for t in totals.values()),
            sum(t.seconds for t in totals.values()),
            sum(t.price_usd for t in totals.values()),
        )
        return totals

    # -- transitions -----------------------------------------------------------------------------

    def create(self, endpoint: str, owner: str, input: dict[str, Any]) -> Job:
        request_id = str(uuid.uuid4())
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (request_id, endpoint, owner, status, input, logs, created_at) "
                "VALUES (?, ?, ?, 'IN_QUEUE', ?, ?, ?)",
                (request_id, endpoint, owner, json.dumps(input),
                 json.dumps([log_entry("Request queued.")]), time.time()),
            )
        job = self.get(request_id)
        assert job is not None
        return job

    def claim_next(self) -> Job | None:
        """Atomically move the oldest queued job to IN_PROGRESS and return it."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT request_id FROM jobs WHERE status = 'IN_QUEUE' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = 'IN_PROGRESS', attempts = attempts + 1, started_at = ? "
                "WHERE request_id = ?",
                (time.time(), row["request_id"]),
            )
        return self.get(row["request_id"])

    def append_log(self, request_id: str, entry: dict[str, str]) -> None:
        with self._transaction() as db:
            (logs,) = db.execute("SELECT logs FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
            db.execute("UPDATE jobs SET logs = ? WHERE request_id = ?",
                       (json.dumps(json.loads(logs) + [entry]), request_id))

    def is_cancel_requested(self, request_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT cancel_requested FROM jobs WHERE request_id = ?",
                                   (request_id,)).fetchone()
        return bool(row and row[0])

    def request_cancel(self, request_id: str) -> JobStatus | None:
        """Cancel a queued job now, or flag a running one. Returns the status after the call."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
            if row is None:
                return None
            status = JobStatus(row["status"])
            if status is JobStatus.IN_QUEUE:
                self._finish(db, Job.from_row(row), JobStatus.CANCELLED, error="Request was cancelled.",
                             error_type="request_cancelled", error_status=400)
                return JobStatus.CANCELLED
            if status is JobStatus.IN_PROGRESS:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE request_id = ?", (request_id,))
        return status

    def complete(self, job: Job, result: dict[str, Any], seconds: float, price_usd: float) -> bool:
        with self._transaction() as db:
            return self._finish(db, job, JobStatus.COMPLETED, result=result, seconds=seconds, price_usd=price_usd)

    def fail(self, job: Job, error: Any, *, error_type: str = "internal_error", error_status: int = 500) -> bool:
        with self._transaction() as db:
            return self._finish(db, job, JobStatus.FAILED, error=error, error_type=error_type,
                                error_status=error_status)

    def cancel_running(self, job: Job) -> bool:
        with self._transaction() as db:
            return self._finish(db, job, JobStatus.CANCELLED, error="Request was cancelled.",
                                error_type="request_cancelled", error_status=400)

    def requeue(self, job: Job, reason: str, *, count_attempt: bool = True) -> bool:
        """Put a job that was IN_PROGRESS back at its place in the queue."""
        with self._transaction() as db:
            (logs,) = db.execute("SELECT logs FROM jobs WHERE request_id = ?", (job.request_id,)).fetchone()
            cursor = db.execute(
                "UPDATE jobs SET status = 'IN_QUEUE', started_at = NULL, attempts = attempts - ?, logs = ? "
                "WHERE request_id = ? AND status = 'IN_PROGRESS'",
                (0 if count_attempt else 1, json.dumps(json.loads(logs) + [log_entry(reason, "WARNING")]),
                 job.request_id),
            )
        return cursor.rowcount == 1

    def recover(self) -> tuple[int, int]:
        """Startup repair of jobs that were running when the last process died.

        Each is re-queued once (keeping its place); one that already had its re-run is failed with a
        reason. Returns (requeued, failed).
        """
        requeued = failed = 0
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE status = 'IN_PROGRESS' ORDER BY seq").fetchall()
        for row in rows:
            job = Job.from_row(row)
            if job.cancel_requested:
                self.cancel_running(job)
            elif job.attempts < MAX_ATTEMPTS:
                requeued += self.requeue(job, "The server stopped while this request was running; re-queued.")
            else:
                failed += self.fail(
                    job,
                    f"The server stopped while this request was running ({job.attempts} attempts); "
                    "not retried again.",
                    error_type="server_restarted",
                )
        return requeued, failed

    def _finish(self, db: sqlite3.Connection, job: Job, status: JobStatus, *, result: dict | None = None,
                error: Any = None, error_type: str | None = None, error_status: int | None = None,
                seconds: float = 0.0, price_usd: float = 0.0) -> bool:
        """Terminal transition + its single usage row, inside the caller's transaction."""
        now = time.time()
        message = {"COMPLETED": "Request completed.", "CANCELLED": "Request cancelled."}.get(
            status.value, f"Request failed: {error}")
        (logs,) = db.execute("SELECT logs FROM jobs WHERE request_id = ?", (job.request_id,)).fetchone()
        cursor = db.execute(
            "UPDATE jobs SET status = ?, result = ?, error = ?, error_type = ?, error_status = ?, "
            "billable_seconds = ?, finished_at = ?, logs = ? "
            "WHERE request_id = ? AND status IN ('IN_QUEUE', 'IN_PROGRESS')",
            (status.value, json.dumps(result) if result is not None else None,
             json.dumps(error) if error is not None else None, error_type, error_status, seconds, now,
             json.dumps(json.loads(logs) + [log_entry(message, "INFO" if status is JobStatus.COMPLETED else "ERROR")]),
             job.request_id),
        )
        if cursor.rowcount != 1:
            return False
        db.execute(
            "INSERT INTO usage (request_id, endpoint, owner, status, seconds, price_usd, created_at, finished_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (job.request_id, job.endpoint, job.owner, status.value, seconds, price_usd, job.created_at, now),
        )
        return True


@dataclass
class JobOutcome:
    """What a job handler returns: the response body and what it bills."""

    result: dict[str, Any]
    billable_seconds: float
    price_usd: float


class JobContext:
    """Handed to a running job: logging and the cancellation check (call it at every step)."""

    def __init__(self, store: JobStore, job: Job, stopping: threading.Event):
        self.store = store
        self.job = job
        self._stopping = stopping

    def log(self, message: str, level: str = "INFO") -> None:
        self.store.append_log(self.job.request_id, log_entry(message, level))

    def check(self) -> None:
        if self.store.is_cancel_requested(self.job.request_id):
            raise JobCancelled(self.job.request_id)
        if self._stopping.is_set():
            raise JobInterrupted(self.job.request_id)


JobHandler = Callable[[Job, JobContext], JobOutcome]


class JobWorker:
    """One thread running queued jobs in submission order (one GPU, one job at a time)."""

    def __init__(self, store: JobStore, handler: JobHandler, poll_interval: float = 1.0):
        self.store = store
        self.handler = handler
        self.poll_interval = poll_interval
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[Job], None]] = []

    def add_listener(self, listener: Callable[[Job], None]) -> None:
        """Called (from the worker thread) with every job that reached a terminal state."""
        self._listeners.append(listener)

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="acestep-job-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current step; a job interrupted this way goes back to the queue."""
        self._stopping.set()
        self.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def notify_finished(self, job: Job) -> None:
        for listener in self._listeners:
            try:
                listener(job)
            except Exception:  # a listener must never kill the worker
                logger.exception("job listener failed")

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self.store.claim_next()
                if job is not None:
                    self.run_one(job)
                    continue
            except Exception:  # e.g. a full disk: keep the thread alive, retry after the interval
                logger.exception("job worker error")
            with self._wake:
                self._wake.wait(self.poll_interval)

    def _record(self, job: Job, transition: Callable[..., bool], *args) -> None:
        """A terminal transition; if the database cannot take it (full disk), fail the job with the reason.

        When even that write fails the job stays IN_PROGRESS and the next start's ``recover`` settles it.
        """
        try:
            transition(*args)
        except (OSError, sqlite3.Error) as error:
            logger.exception("request %s: could not record its outcome", job.request_id)
            try:
                self.store.fail(job, f"Could not record the result: {type(error).__name__}: {error}",
                                error_type="storage_error")
            except (OSError, sqlite3.Error):
                logger.exception("request %s: could not record the failure either", job.request_id)

    def run_one(self, job: Job) -> None:
        context = JobContext(self.store, job, self._stopping)
        try:
            context.log("Request started.")
            outcome = self.handler(job, context)
            context.check()  # a cancel that arrived during the last (callback-free) stage still wins
        except JobCancelled:
            self.store.cancel_running(job)
        except JobInterrupted:
            self.store.requeue(job, "The server shut down while this request was running; re-queued.",
                               count_attempt=False)
            return
        except JobError as error:
            self.store.fail(job, error.detail, error_type=error.error_type, error_status=error.status_code)
        except Exception as error:  # the worker keeps serving whatever one job does
            logger.exception("request %s failed", job.request_id)
            self._record(job, self.store.fail, job, f"{type(error).__name__}: {error}")
        else:
            self._record(job, self.store.complete, job, outcome.result, outcome.billable_seconds, outcome.price_usd)
        finished = self.store.get(job.request_id)
        if finished is not None:
            self.notify_finished(finished)
