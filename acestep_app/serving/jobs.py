"""The typed job record, the usage record and the job-store interface every queue backend implements.

A job moves ``IN_QUEUE -> IN_PROGRESS -> COMPLETED | FAILED | CANCELLED``. A store makes each
terminal transition at most once (the first writer wins), and the winning transition writes the
job's single usage record; only ``COMPLETED`` bills seconds. Backends: SQLite for the local server
(:mod:`acestep_app.serving.stores.sqlite`), Modal primitives for the Modal app (:mod:`acestep_app.serving.stores.modal`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from acestep_app.serving.failures import Failure, message_of


class JobStatus(str, enum.Enum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class CancelResult(str, enum.Enum):
    CANCELLED = "CANCELLED"  # now terminal: nothing runs, nothing bills
    REQUESTED = "REQUESTED"  # running: it stops at its next step
    ALREADY_COMPLETED = "ALREADY_COMPLETED"


@dataclass
class Job:
    request_id: str
    endpoint: str
    owner: str
    status: JobStatus
    input: dict[str, Any]
    webhook_url: str | None = None
    result: dict[str, Any] | None = None
    error: Any = None  # the failure's ``detail``
    error_type: str | None = None
    error_status: int | None = None
    logs: list[dict[str, str]] = field(default_factory=list)
    attempts: int = 0
    cancel_requested: bool = False
    billable_seconds: float = 0.0
    price_usd: float = 0.0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    seq: int = 0  # submission order, where the backend keeps one
    base_url: str | None = None  # the URL the request came in on (its webhook's file links use it)
    input_files: list[dict[str, Any]] = field(default_factory=list)  # data: URIs kept out of ``input`` (serving.inputs)

    @property
    def inference_time(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def failure(self) -> Failure | None:
        if self.status in (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS, JobStatus.COMPLETED):
            return None
        return Failure(self.error_status or 500, self.error_type or "generation_failed", self.error)

    @property
    def error_message(self) -> str | None:
        return None if self.error is None else message_of(self.error)


@dataclass(frozen=True)
class Outcome:
    """How a job ended: a result billed for ``billable_seconds``, or a failure (billed 0)."""

    status: JobStatus
    result: dict[str, Any] | None = None
    billable_seconds: float = 0.0
    price_usd: float = 0.0
    failure: Failure | None = None

    @classmethod
    def completed(cls, result: dict[str, Any], seconds: float, price_usd: float) -> Outcome:
        return cls(JobStatus.COMPLETED, result, seconds, price_usd)

    @classmethod
    def failed(cls, failure: Failure) -> Outcome:
        status = JobStatus.CANCELLED if failure.error_type == "request_cancelled" else JobStatus.FAILED
        return cls(status, failure=failure)

    def log_entry(self) -> dict[str, str]:
        if self.status is JobStatus.COMPLETED:
            return log_entry("Request completed.")
        if self.status is JobStatus.CANCELLED:
            return log_entry("Request cancelled.", "ERROR")
        return log_entry(f"Request failed: {self.failure.message}", "ERROR")


@dataclass(frozen=True)
class UsageRecord:
    """One per finished job, whatever the backend; ``acestep-app usage`` reads these."""

    request_id: str
    endpoint: str
    owner: str
    status: str
    seconds: float
    price_usd: float
    created_at: float
    finished_at: float

    @classmethod
    def of(cls, job: Job, outcome: Outcome, finished_at: float) -> UsageRecord:
        return cls(job.request_id, job.endpoint, job.owner, outcome.status.value, outcome.billable_seconds,
                   outcome.price_usd, job.created_at, finished_at)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> UsageRecord:
        return cls(**json.loads(text))


@dataclass
class UsageTotals:
    jobs: int = 0
    completed: int = 0
    seconds: float = 0.0
    price_usd: float = 0.0


def usage_totals(records: Iterable[UsageRecord]) -> dict[str, UsageTotals]:
    """Totals per endpoint (sorted), plus an ``"all"`` entry."""
    totals: dict[str, UsageTotals] = {}
    for record in records:
        for key in (record.endpoint, "all"):
            total = totals.setdefault(key, UsageTotals())
            total.jobs += 1
            total.completed += record.status == JobStatus.COMPLETED.value
            total.seconds += record.seconds
            total.price_usd += record.price_usd
    every = totals.pop("all", UsageTotals())
    return {**dict(sorted(totals.items())), "all": every}


def read_usage_dir(folder: Path) -> list[UsageRecord]:
    """The usage records in a folder of ``<request id>.json`` files (the Modal ledger, copied or mounted)."""
    return [UsageRecord.from_json(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))]


def log_entry(message: str, level: str = "INFO") -> dict[str, str]:
    """One log line in fal's queue format (``message``, ``level``, ``source``, ``timestamp``)."""
    timestamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"message": message, "level": level, "source": "USER", "timestamp": timestamp}


class JobStore(Protocol):
    """What the queue protocol needs from a backend. Terminal transitions are first-writer-wins; once a
    cancel was acknowledged, the job's outcome is CANCELLED whatever the run ends with."""

    def create(self, endpoint: str, owner: str, input: dict[str, Any], webhook_url: str | None = None, *,
               base_url: str | None = None, input_files: list[dict[str, Any]] | None = None) -> Job: ...

    def pending_count(self, owner: str | None = None) -> int:
        """Jobs queued or running (of ``owner``, or of everyone)."""

    def get(self, request_id: str, owner: str | None = None) -> Job | None:
        """The job, or None when unknown or (with ``owner``) submitted by another key."""

    def queue_position(self, job: Job) -> int: ...

    def recent(self, owner: str, limit: int) -> list[Job]:
        """The owner's latest ``limit`` jobs, newest first (the playground's history)."""

    def start(self, request_id: str) -> Job | None:
        """IN_QUEUE -> IN_PROGRESS; None when the job is not queued (e.g. cancelled meanwhile)."""

    def append_log(self, request_id: str, entry: dict[str, str]) -> None: ...

    def is_cancel_requested(self, request_id: str) -> bool: ...

    def request_cancel(self, request_id: str) -> CancelResult | None: ...

    def finish(self, job: Job, outcome: Outcome) -> bool:
        """The terminal transition and its usage record; False when the job had already ended."""

    def usage_records(self) -> list[UsageRecord]: ...
