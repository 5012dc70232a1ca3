"""deploy/modal_app.py in-process, without a Modal token: an in-memory ``modal.Dict`` and a thread-pool runner.

``InMemoryDict`` has the ``modal.Dict`` calls the job store uses (``get``, ``put(..., skip_if_exists)``),
atomic under a lock as Modal's server makes them; ``InMemoryQueue`` the ``modal.Queue`` calls of the
metrics events. ``ThreadCalls`` stands in for ``FunctionCalls``:
``dispatch`` runs ``run_job(request_id)`` on a pool thread instead of ``.spawn()``; ``wait_async``
stands for ``FunctionCall.get.aio``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from acestep_app.serving.queue import CallFailed

MODAL_APP_PATH = Path(__file__).resolve().parents[1] / "deploy" / "modal_app.py"


def load_modal_app():
    if "modal_app" in sys.modules:
        return sys.modules["modal_app"]
    spec = importlib.util.spec_from_file_location("modal_app", MODAL_APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["modal_app"] = module
    spec.loader.exec_module(module)
    return module


class InMemoryDict:
    def __init__(self):
        self._data: dict = {}
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            return self._data.get(key, default)

    def put(self, key, value, *, skip_if_exists: bool = False) -> bool:
        with self._lock:
            if skip_if_exists and key in self._data:
                return False
            self._data[key] = value
            return True

    def keys(self):
        with self._lock:
            return list(self._data)


class InMemoryQueue:
    """The ``modal.Queue`` calls the metrics events use (``put``, ``get_many(n, block=False)``)."""

    def __init__(self):
        self._items: list = []
        self._lock = threading.Lock()

    def put(self, value) -> None:
        with self._lock:
            self._items.append(value)

    def get_many(self, n_values: int, block: bool = True, timeout: float | None = None) -> list:
        assert not block, "the web container never blocks on the events queue"
        with self._lock:
            taken, self._items = self._items[:n_values], self._items[n_values:]
        return taken


class ThreadCalls:
    """The runner protocol over a thread pool (``run(request_id)`` is ``AceStep().run_job.local``)."""

    def __init__(self, run, workers: int = 1):
        self.run = run
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.calls: dict[str, Future] = {}

    def dispatch(self, job) -> None:
        self.calls[job.request_id] = self.pool.submit(self.run, job.request_id)

    def wait(self, job, timeout: float) -> None:
        call = self.calls.get(job.request_id)
        if call is None:
            return
        try:
            call.result(timeout=timeout)
        except (FutureTimeout, CancelledError):
            pass
        except Exception as error:  # what FunctionCall.get raises for a lost input
            raise CallFailed(str(error)) from error

    async def wait_async(self, job, timeout: float) -> None:
        """``wait`` on the event loop, as ``FunctionCalls.wait_async`` awaits ``FunctionCall.get.aio``."""
        call = self.calls.get(job.request_id)
        if call is None:
            return
        try:  # shielded: a timed-out wait must not cancel a call still queued in the pool
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(call)), timeout)
        except (TimeoutError, CancelledError, asyncio.CancelledError):
            pass
        except Exception as error:
            raise CallFailed(str(error)) from error

    def cancel(self, job) -> None:
        call = self.calls.get(job.request_id)
        if call is not None:
            call.cancel()  # a running thread finishes; its outcome loses to the recorded cancel

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
