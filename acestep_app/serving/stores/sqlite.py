"""The local server's job store: SQLite jobs and usage tables, and the one worker thread that runs jobs.

Every transition is a single guarded ``UPDATE`` so two threads can never both claim or finish a job.
The database (WAL mode, under the data dir) is the queue itself: the worker always takes the oldest
``IN_QUEUE`` job, so a restart simply resumes where the previous process stopped. A job found
``IN_PROGRESS`` at startup was running when the process died: it is re-queued once, then failed.

Disk stays bounded: log lines are rows of their own (appending one writes one small row), a job
row never holds input audio (:mod:`acestep_app.serving.inputs` keeps it aside), and :meth:`prune`
deletes finished jobs past their retention; usage rows, the billing ledger, are never deleted.
A job with a webhook carries it (URL and base URL) in its own row, written in the same
transaction as the job, with ``webhook_pending`` set until the delivery is queued.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from acestep_app.serving import failures
from acestep_app.serving.jobs import (
    CancelResult,
    Job,
    JobStatus,
    Outcome,
    UsageRecord,
    log_entry,
)
from acestep_app.serving.stores.sqlite_db import SQLiteBacked

logger = logging.getLogger(__name__)

DATABASE_NAME = "jobs.sqlite3"
MAX_ATTEMPTS = 2  # the first run plus one re-run after a crash mid-job
POLL_INTERVAL = 1.0  # an idle worker looks at the queue this often even without a wake-up

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('IN_QUEUE','IN_PROGRESS','COMPLETED','FAILED','CANCELLED')),
    input TEXT NOT NULL,
    input_files TEXT NOT NULL DEFAULT '[]',
    webhook_url TEXT,
    webhook_pending INTEGER NOT NULL DEFAULT 0,
    base_url TEXT,
    result TEXT,
    error TEXT,
    error_type TEXT,
    error_status INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    billable_seconds REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_owner_status ON jobs (owner, status);
CREATE TABLE IF NOT EXISTS job_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_request ON job_logs (request_id, id);
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
# columns added since the first release, with their definitions (an older database gains them on open)
ADDED_COLUMNS = {"webhook_url": "TEXT", "input_files": "TEXT NOT NULL DEFAULT '[]'",
                 "webhook_pending": "INTEGER NOT NULL DEFAULT 0", "base_url": "TEXT"}
TERMINAL = "('COMPLETED', 'FAILED', 'CANCELLED')"


def job_from_row(row: sqlite3.Row, logs: list[dict[str, str]] | None = None) -> Job:
    return Job(
        request_id=row["request_id"], endpoint=row["endpoint"], owner=row["owner"], status=JobStatus(row["status"]),
        input=json.loads(row["input"]), webhook_url=row["webhook_url"],
        result=json.loads(row["result"]) if row["result"] else None,
        error=json.loads(row["error"]) if row["error"] else None,
        error_type=row["error_type"], error_status=row["error_status"], logs=logs or [],
        attempts=row["attempts"], cancel_requested=bool(row["cancel_requested"]),
        billable_seconds=row["billable_seconds"], created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], seq=row["seq"], base_url=row["base_url"],
        input_files=json.loads(row["input_files"]),
    )


class SqliteJobStore(SQLiteBacked):
    """SQLite persistence for jobs and usage. Thread-safe: one connection guarded by a lock."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self._open(self.data_dir / DATABASE_NAME, SCHEMA, "job database")
        self._upgrade()

    def _upgrade(self) -> None:
        """Bring a database an earlier version wrote up to this schema (log lines move to their own rows)."""
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        with self._transaction() as db:
            for name, definition in ADDED_COLUMNS.items():
                if name not in columns:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")
            if "logs" in columns:
                db.execute("INSERT INTO job_logs (request_id, entry) SELECT jobs.request_id, value FROM jobs, "
                           "json_each(jobs.logs) WHERE jobs.logs != '[]' ORDER BY jobs.seq, json_each.key")
                db.execute("UPDATE jobs SET logs = '[]' WHERE logs != '[]'")

    # -- reads -----------------------------------------------------------------------------------

    def get(self, request_id: str, owner: str | None = None) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
            if row is None or (owner is not None and row["owner"] != owner):
                return None
            return job_from_row(row, self._logs(request_id))

    def _logs(self, request_id: str) -> list[dict[str, str]]:
        rows = self._db.execute("SELECT entry FROM job_logs WHERE request_id = ? ORDER BY id", (request_id,))
        return [json.loads(entry) for (entry,) in rows]

    def pending_count(self, owner: str | None = None) -> int:
        query = "SELECT COUNT(*) FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS')"
        with self._lock:
            if owner is None:
                (n,) = self._db.execute(query).fetchone()
            else:
                (n,) = self._db.execute(query + " AND owner = ?", (owner,)).fetchone()
        return int(n)

    def queue_position(self, job: Job) -> int:
        """How many queued jobs run before this one (0 = next)."""
        with self._lock:
            (ahead,) = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'IN_QUEUE' AND seq < ?", (job.seq,)).fetchone()
        return int(ahead)

    def recent(self, owner: str, limit: int) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE owner = ? ORDER BY seq DESC LIMIT ?",
                                    (owner, limit)).fetchall()
        return [job_from_row(row) for row in rows]

    def count(self, status: JobStatus) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status.value,)).fetchone()
        return int(n)

    def usage_records(self) -> list[UsageRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM usage ORDER BY finished_at").fetchall()
        return [UsageRecord(**dict(row)) for row in rows]

    def is_cancel_requested(self, request_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT cancel_requested FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
        return bool(row and row[0])

    # -- transitions -----------------------------------------------------------------------------

    def create(self, endpoint: str, owner: str, input: dict[str, Any], webhook_url: str | None = None, *,
               base_url: str | None = None, input_files: list[dict[str, Any]] | None = None) -> Job:
        """A new queued job; its webhook (if any) is registered in the same transaction."""
        request_id = str(uuid.uuid4())
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (request_id, endpoint, owner, status, input, input_files, webhook_url, "
                "webhook_pending, base_url, created_at) VALUES (?, ?, ?, 'IN_QUEUE', ?, ?, ?, ?, ?, ?)",
                (request_id, endpoint, owner, json.dumps(input), json.dumps(input_files or []), webhook_url,
                 int(bool(webhook_url)), base_url, time.time()),
            )
            self._append_logs(db, request_id, [log_entry("Request queued.")])
        job = self.get(request_id)
        assert job is not None
        return job

    def claim_next(self) -> Job | None:
        """Atomically move the oldest queued job to IN_PROGRESS and return it."""
        with self._lock:
            row = self._db.execute("SELECT request_id FROM jobs WHERE status = 'IN_QUEUE' ORDER BY seq LIMIT 1").fetchone()
        return self.start(row["request_id"]) if row else None

    def start(self, request_id: str) -> Job | None:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = 'IN_PROGRESS', attempts = attempts + 1, started_at = ? "
                "WHERE request_id = ? AND status = 'IN_QUEUE'", (time.time(), request_id))
        return self.get(request_id) if cursor.rowcount == 1 else None

    def append_log(self, request_id: str, entry: dict[str, str]) -> None:
        with self._transaction() as db:
            self._append_logs(db, request_id, [entry])

    def request_cancel(self, request_id: str) -> CancelResult | None:
        """Cancel a queued job now, or flag a running one (the worker stops it at its next step)."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
            if row is None:
                return None
            status = JobStatus(row["status"])
            if status is JobStatus.IN_QUEUE:
                self._finish(db, job_from_row(row), Outcome.failed(failures.cancelled()))
                return CancelResult.CANCELLED
            if status is JobStatus.IN_PROGRESS:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE request_id = ?", (request_id,))
                return CancelResult.REQUESTED
        return CancelResult.ALREADY_COMPLETED

    def finish(self, job: Job, outcome: Outcome) -> bool:
        with self._transaction() as db:
            return self._finish(db, job, outcome)

    def requeue(self, job: Job, reason: str, *, count_attempt: bool = True) -> bool:
        """Put a job that was IN_PROGRESS back at its place in the queue."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = 'IN_QUEUE', started_at = NULL, attempts = attempts - ? "
                "WHERE request_id = ? AND status = 'IN_PROGRESS'", (0 if count_attempt else 1, job.request_id))
            if cursor.rowcount == 1:
                self._append_logs(db, job.request_id, [log_entry(reason, "WARNING")])
        return cursor.rowcount == 1

    def recover(self, finish: Callable[[Job, Outcome], bool] | None = None) -> tuple[int, int]:
        """Startup repair of jobs that were running when the last process died.

        Each is re-queued once (keeping its place); one that already had its re-run is failed with a
        reason, through ``finish`` (default: this store's). Returns (requeued, failed).
        """
        finish = finish or self.finish
        requeued = failed = 0
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE status = 'IN_PROGRESS' ORDER BY seq").fetchall()
        for job in map(job_from_row, rows):
            if job.cancel_requested:
                finish(job, Outcome.failed(failures.cancelled()))
            elif job.attempts < MAX_ATTEMPTS:
                requeued += self.requeue(job, "The server stopped while this request was running; re-queued.")
            else:
                failed += finish(job, Outcome.failed(failures.server_restarted(job.attempts)))
        return requeued, failed

    # -- webhooks and retention ----------------------------------------------------------------------

    def webhooks_to_queue(self) -> list[Job]:
        """Finished jobs whose webhook delivery was not queued yet (e.g. the process died in between)."""
        with self._lock:
            rows = self._db.execute(f"SELECT request_id FROM jobs WHERE webhook_pending = 1 AND status IN {TERMINAL}"
                                    " ORDER BY seq").fetchall()
        return [job for job in (self.get(row["request_id"]) for row in rows) if job is not None]

    def webhook_queued(self, request_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET webhook_pending = 0 WHERE request_id = ?", (request_id,))

    def prune(self, finished_before: float) -> list[Job]:
        """Delete the jobs (and their log lines) that finished before ``finished_before``; the deleted jobs.

        Jobs still queued or running, jobs whose webhook was not queued yet, and usage rows are kept.
        """
        with self._transaction() as db:
            rows = db.execute(f"SELECT * FROM jobs WHERE status IN {TERMINAL} AND finished_at < ? "
                              "AND webhook_pending = 0", (finished_before,)).fetchall()
            ids = [(row["request_id"],) for row in rows]
            db.executemany("DELETE FROM job_logs WHERE request_id = ?", ids)
            db.executemany("DELETE FROM jobs WHERE request_id = ?", ids)
        if rows:
            self.compact()
        return [job_from_row(row) for row in rows]

    def _append_logs(self, db: sqlite3.Connection, request_id: str, entries: list[dict[str, str]]) -> None:
        db.executemany("INSERT INTO job_logs (request_id, entry) VALUES (?, ?)",
                       [(request_id, json.dumps(entry)) for entry in entries])

    def _finish(self, db: sqlite3.Connection, job: Job, outcome: Outcome) -> bool:
        """Terminal transition + its single usage row, inside the caller's transaction.

        A job whose cancel was acknowledged ends CANCELLED, billed nothing, whatever ``outcome`` says.
        """
        now = time.time()
        row = db.execute("SELECT cancel_requested FROM jobs WHERE request_id = ?", (job.request_id,)).fetchone()
        if row is not None and row[0] and outcome.status is not JobStatus.CANCELLED:
            outcome = Outcome.failed(failures.cancelled())
        failure = outcome.failure
        cursor = db.execute(
            "UPDATE jobs SET status = ?, result = ?, error = ?, error_type = ?, error_status = ?, "
            "billable_seconds = ?, finished_at = ? WHERE request_id = ? AND status IN ('IN_QUEUE', 'IN_PROGRESS')",
            (outcome.status.value, json.dumps(outcome.result) if outcome.result is not None else None,
             json.dumps(failure.detail) if failure else None, failure.error_type if failure else None,
             failure.status_code if failure else None, outcome.billable_seconds, now, job.request_id),
        )
        if cursor.rowcount != 1:
            return False
        self._append_logs(db, job.request_id, [outcome.log_entry()])
        record = UsageRecord.of(job, outcome, now)
        db.execute("INSERT INTO usage (request_id, endpoint, owner, status, seconds, price_usd, created_at, finished_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (record.request_id, record.endpoint, record.owner, record.status, record.seconds,
                    record.price_usd, record.created_at, record.finished_at))
        return True


class JobContext:
    """Handed to a running job: logging and the cancellation check (call it at every step)."""

    def __init__(self, store, job: Job, stopping: threading.Event):
        self.store = store
        self.job = job
        self._stopping = stopping

    def log(self, message: str, level: str = "INFO") -> None:
        self.store.append_log(self.job.request_id, log_entry(message, level))

    def check(self) -> None:
        if self.store.is_cancel_requested(self.job.request_id):
            raise failures.JobCancelled(self.job.request_id)
        if self._stopping.is_set():
            raise failures.JobInterrupted(self.job.request_id)


JobHandler = Callable[[Job, JobContext], Outcome]


class JobWorker:
    """One thread running queued jobs in submission order (one GPU, one job at a time).

    ``handler(job, context)`` returns the job's :class:`Outcome` (failures included); ``finish``
    records it (the queue's, so its ``on_finished`` hook runs). ``finished`` is notified after each.
    """

    def __init__(self, store: SqliteJobStore, handler: JobHandler, finish: Callable[[Job, Outcome], bool] | None = None):
        self.store = store
        self.handler = handler
        self.finish = finish or store.finish
        self.finished = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

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
        with self.finished:
            self.finished.notify_all()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self.store.claim_next()
                if job is not None:
                    self.run_one(job)
                    continue
            except Exception:  # e.g. a full disk: keep the thread alive, retry after the interval
                logger.exception("job worker error")
            with self.finished:
                self.finished.wait(POLL_INTERVAL)

    def run_one(self, job: Job) -> None:
        context = JobContext(self.store, job, self._stopping)
        try:
            context.log("Request started.")
            outcome = self.handler(job, context)
        except failures.JobInterrupted:
            self.store.requeue(job, "The server shut down while this request was running; re-queued.",
                               count_attempt=False)
            return
        self._record(job, outcome)
        self.notify()

    def _record(self, job: Job, outcome: Outcome) -> None:
        """The terminal transition; if the database cannot take it (full disk), fail the job with the reason.

        When even that write fails the job stays IN_PROGRESS and the next start's ``recover`` settles it.
        """
        try:
            self.finish(job, outcome)
        except (OSError, sqlite3.Error) as error:
            logger.exception("request %s: could not record its outcome", job.request_id)
            try:
                self.finish(job, Outcome.failed(failures.failure_for(failures.StorageError(
                    f"{type(error).__name__}: {error}"))))
            except (OSError, sqlite3.Error):
                logger.exception("request %s: could not record the failure either", job.request_id)
