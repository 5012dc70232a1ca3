"""The Modal app's queue runner: each job is one spawned call of the GPU class's ``run_job``.

Waiting on a call tells three things apart: the call is still running (``TimeoutError``), the
client could not reach Modal this time (wait again), and the call itself ended without its outcome
(timed out, crashed, expired, unknown), which fails the job, unbilled. Only the last is a loss.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import modal

from acestep_app.serving.jobs import Job
from acestep_app.serving.queue import CallFailed
from acestep_app.serving.stores.modal import ModalJobStore

# Errors of ``FunctionCall.get`` that say nothing about the call (the client could not reach Modal):
# wait again. Any other error is the call's own result (timed out, crashed, expired, unknown): it is lost.
TRANSIENT_CALL_ERRORS = (modal.exception.ConnectionError, modal.exception.ServiceError, modal.exception.InternalError,
                         modal.exception.ResourceExhaustedError, modal.exception.ClientClosed, OSError)
TRANSIENT_RETRY_SECONDS = 1.0


class FunctionCalls:
    """The queue's runner on Modal: one ``spawn(job)`` (a ``run_job`` call of the job's family class) per job."""

    def __init__(self, store: ModalJobStore, spawn: Callable[[Job], Any]):
        self.store = store
        self.spawn = spawn

    def dispatch(self, job: Job) -> None:
        self.store.set_call(job.request_id, self.spawn(job).object_id)

    def wait(self, job: Job, timeout: float) -> None:
        call_id = self.store.call_id(job.request_id)
        if call_id is None:
            return time.sleep(min(timeout, 0.5))
        try:
            modal.FunctionCall.from_id(call_id).get(timeout=timeout)
        except TimeoutError:
            pass
        except TRANSIENT_CALL_ERRORS:
            time.sleep(min(timeout, TRANSIENT_RETRY_SECONDS))
        except Exception as error:  # run_job never raises: the call itself was lost
            raise CallFailed(str(error)) from error

    async def wait_async(self, job: Job, timeout: float) -> None:
        """``wait`` on the event loop (the web container's synchronous calls hold no thread)."""
        call_id = self.store.call_id(job.request_id)
        if call_id is None:
            return await asyncio.sleep(min(timeout, 0.5))
        try:
            await modal.FunctionCall.from_id(call_id).get.aio(timeout=timeout)
        except TimeoutError:
            pass
        except TRANSIENT_CALL_ERRORS:
            await asyncio.sleep(min(timeout, TRANSIENT_RETRY_SECONDS))
        except Exception as error:
            raise CallFailed(str(error)) from error

    def cancel(self, job: Job) -> None:
        call_id = self.store.call_id(job.request_id)
        if call_id is not None:
            modal.FunctionCall.from_id(call_id).cancel()
