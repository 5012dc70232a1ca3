"""The SQLite job store and worker: FIFO, transitions, cancellation, recovery, usage records."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from acestep_app.serving import failures
from acestep_app.errors import InputError
from acestep_app.serving.jobs import CancelResult, JobStatus, Outcome
from acestep_app.serving.stores.sqlite import MAX_ATTEMPTS, JobWorker
from acestep_app.serving.stores.sqlite import SqliteJobStore as JobStore
from conftest import wait_until as wait_for


def completed(result: dict, seconds: float, price_usd: float) -> Outcome:
    return Outcome.completed(result, seconds, price_usd)


@pytest.fixture()
def store(tmp_path):
    store = JobStore(tmp_path)
    yield store
    store.close()


def test_store_uses_wal_and_persists(tmp_path):
    store = JobStore(tmp_path)
    job = store.create("prompt-to-audio", "owner-a", {"prompt": "x"})
    store.close()
    reopened = JobStore(tmp_path)
    assert reopened.get(job.request_id).input == {"prompt": "x"}
    (mode,) = sqlite3.connect(tmp_path / "jobs.sqlite3").execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"
    reopened.close()


def test_queue_positions_and_fifo_claims(store):
    jobs = [store.create("prompt-to-audio", "o", {"i": i}) for i in range(3)]
    assert [store.queue_position(job) for job in jobs] == [0, 1, 2]
    first = store.claim_next()
    assert first.request_id == jobs[0].request_id and first.status is JobStatus.IN_PROGRESS
    assert first.attempts == 1 and first.started_at is not None
    assert [store.queue_position(store.get(job.request_id)) for job in jobs[1:]] == [0, 1]
    assert store.claim_next().request_id == jobs[1].request_id


def test_owner_isolation(store):
    job = store.create("prompt-to-audio", "owner-a", {})
    assert store.get(job.request_id, owner="owner-a") is not None
    assert store.get(job.request_id, owner="owner-b") is None
    assert store.get("no-such-id") is None


def test_terminal_transitions_write_one_usage_row(store):
    done, failed, cancelled = (store.create("prompt-to-audio", "o", {}) for _ in range(3))
    for job in (done, failed):
        store.claim_next()
    assert store.finish(done, completed({"seed": 1}, seconds=12.5, price_usd=0.0025))
    assert store.finish(failed, Outcome.failed(failures.failure_for(RuntimeError("boom"))))
    assert store.request_cancel(cancelled.request_id) is CancelResult.CANCELLED
    assert not store.finish(done, completed({"seed": 2}, seconds=99, price_usd=1))  # terminal is final
    rows = {record.request_id: vars(record) for record in store.usage_records()}
    assert len(rows) == 3
    assert rows[done.request_id]["seconds"] == 12.5 and rows[done.request_id]["price_usd"] == 0.0025
    assert rows[failed.request_id]["seconds"] == 0 and rows[failed.request_id]["price_usd"] == 0
    assert rows[cancelled.request_id]["status"] == "CANCELLED" and rows[cancelled.request_id]["seconds"] == 0
    from acestep_app.serving.jobs import usage_totals

    totals = usage_totals(store.usage_records())
    assert totals["all"].jobs == 3 and totals["all"].completed == 1 and totals["all"].seconds == 12.5


def test_recover_requeues_once_then_fails(store):
    job = store.create("prompt-to-audio", "o", {})
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claimed = store.claim_next()
        assert claimed.request_id == job.request_id and claimed.attempts == attempt
        requeued, failed = store.recover()  # as after a crash mid-run
        if attempt < MAX_ATTEMPTS:
            assert (requeued, failed) == (1, 0)
            assert store.get(job.request_id).status is JobStatus.IN_QUEUE
    final = store.get(job.request_id)
    assert (requeued, failed) == (0, 1)
    assert final.status is JobStatus.FAILED and final.error_type == "server_restarted"
    assert "stopped while this request was running" in final.error


def test_recover_keeps_queue_order(store):
    running = store.create("prompt-to-audio", "o", {})
    queued = store.create("prompt-to-audio", "o", {})
    store.claim_next()
    store.recover()
    assert store.claim_next().request_id == running.request_id
    assert store.queue_position(store.get(queued.request_id)) == 0


def test_unwritable_data_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(RuntimeError, match="cannot open the job database"):
        JobStore(blocker / "data")


class ScriptedHandler:
    """Runs ``steps`` checked steps; the test can hold it at a step or make it fail."""

    def __init__(self, steps: int = 3):
        self.steps = steps
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.error: Exception | None = None

    def __call__(self, job, context):
        self.entered.set()
        try:
            for step in range(self.steps):
                self.release.wait(10)
                context.check()
                context.log(f"step {step}")
            if self.error is not None:
                raise self.error
        except failures.JobInterrupted:
            raise
        except Exception as error:  # what service.execute does: the failure policy
            return Outcome.failed(failures.failure_for(error))
        return completed({"n": job.input["n"]}, seconds=5.0, price_usd=0.001)


@pytest.fixture()
def worker(store):
    handler = ScriptedHandler()
    finished = []

    def finish(job, outcome):
        done = store.finish(job, outcome)
        finished.append(store.get(job.request_id))
        return done

    worker = JobWorker(store, handler, finish)
    worker.handler_script = handler
    worker.finished_jobs = finished
    worker.start()
    yield worker
    handler.release.set()
    worker.stop(5)


def test_worker_runs_jobs_in_order(store, worker):
    jobs = [store.create("prompt-to-audio", "o", {"n": n}) for n in range(4)]
    worker.notify()
    wait_for(lambda: len(worker.finished_jobs) == 4)
    assert [job.request_id for job in worker.finished_jobs] == [job.request_id for job in jobs]
    for n, job in enumerate(jobs):
        stored = store.get(job.request_id)
        assert stored.status is JobStatus.COMPLETED and stored.result == {"n": n}
        assert stored.billable_seconds == 5.0
        assert [entry["message"] for entry in stored.logs][-2:] == ["step 2", "Request completed."]
        assert all(set(entry) == {"message", "level", "source", "timestamp"} for entry in stored.logs)


def test_cancel_queued_and_running(store, worker):
    script = worker.handler_script
    script.release.clear()
    running = store.create("prompt-to-audio", "o", {"n": 0})
    queued = store.create("prompt-to-audio", "o", {"n": 1})
    worker.notify()
    assert script.entered.wait(5)
    wait_for(lambda: store.get(running.request_id).status is JobStatus.IN_PROGRESS)

    assert store.request_cancel(queued.request_id) is CancelResult.CANCELLED
    assert store.request_cancel(running.request_id) is CancelResult.REQUESTED  # flagged
    script.release.set()
    wait_for(lambda: store.get(running.request_id).status is JobStatus.CANCELLED)
    assert store.get(queued.request_id).status is JobStatus.CANCELLED
    assert all(record.seconds == 0 and record.price_usd == 0 for record in store.usage_records())
    assert store.request_cancel(running.request_id) is CancelResult.ALREADY_COMPLETED  # terminal is final
    assert store.get(running.request_id).error_type == "request_cancelled"


def test_failures_are_reported_and_the_worker_keeps_going(store, worker):
    script = worker.handler_script
    script.error = RuntimeError("CUDA fell over")
    failed = store.create("prompt-to-audio", "o", {"n": 0})
    worker.notify()
    wait_for(lambda: store.get(failed.request_id).status is JobStatus.FAILED)
    job = store.get(failed.request_id)
    assert "RuntimeError: CUDA fell over" in job.error and job.error_status == 500
    assert job.error_type == "generation_failed"
    script.error = InputError("seed", "bad")
    invalid = store.create("prompt-to-audio", "o", {"n": 1})
    worker.notify()
    wait_for(lambda: store.get(invalid.request_id).status is JobStatus.FAILED)
    assert store.get(invalid.request_id).error_status == 422
    assert store.get(invalid.request_id).error == [{"loc": ["body", "seed"], "msg": "bad", "type": "validation_error"}]
    script.error = None
    ok = store.create("prompt-to-audio", "o", {"n": 2})
    worker.notify()
    wait_for(lambda: store.get(ok.request_id).status is JobStatus.COMPLETED)
    seconds = {record.request_id: record.seconds for record in store.usage_records()}
    assert seconds == {failed.request_id: 0, invalid.request_id: 0, ok.request_id: 5.0}


def test_stop_puts_the_running_job_back_without_spending_an_attempt(store, worker):
    script = worker.handler_script
    script.release.clear()
    job = store.create("prompt-to-audio", "o", {"n": 0})
    worker.notify()
    assert script.entered.wait(5)
    threading.Timer(0.2, script.release.set).start()
    worker.stop(5)
    stopped = store.get(job.request_id)
    assert stopped.status is JobStatus.IN_QUEUE and stopped.attempts == 0
    assert store.usage_records() == []


def test_usage_command_prints_totals_per_endpoint(tmp_path, capsys):
    import argparse

    from acestep_app.cli import usage

    store = JobStore(tmp_path)
    for endpoint, seconds in (("prompt-to-audio", 30.0), ("prompt-to-audio", 12.5), ("text-to-audio", 60.0)):
        job = store.create(endpoint, "o", {})
        store.claim_next()
        store.finish(job, completed({}, seconds=seconds, price_usd=seconds * 0.0002))
    store.finish(store.create("text-to-audio", "o", {}), Outcome.failed(failures.failure_for(RuntimeError("boom"))))
    store.close()

    assert usage.run(argparse.Namespace(data_dir=tmp_path, usage_dir=None)) == 0
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["prompt-to-audio"] == ["2", "2", "42.500", "0.008500"]
    assert lines["text-to-audio"] == ["2", "1", "60.000", "0.012000"]
    assert lines["all"] == ["4", "3", "102.500", "0.020500"]
    assert usage.run(argparse.Namespace(data_dir=tmp_path / "empty", usage_dir=None)) == 1
