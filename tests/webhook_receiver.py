"""A webhook receiver for tests: :class:`local_http.LocalServer` answering POST /hook with scripted statuses."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from local_http import LocalServer, send


@dataclass
class Received:
    headers: dict[str, str]  # names lower-cased
    body: bytes
    answered: int


class Receiver(LocalServer):
    """The first ``fail_first`` POSTs get HTTP 500, the rest 200."""

    def __init__(self, fail_first: int = 0, port: int = 0):
        self.fail_first = fail_first
        self.received: list[Received] = []
        self._lock = threading.Lock()
        super().__init__({"/hook": self._answer}, port=port)
        self.url = self.url("/hook")

    def _answer(self, handler) -> None:
        headers = {name.lower(): value for name, value in handler.headers.items()}
        with self._lock:
            status = 500 if len(self.received) < self.fail_first else 200
            self.received.append(Received(headers, handler.request_body, status))
        send(handler, status)

    @property
    def successes(self) -> list[Received]:
        with self._lock:
            return [item for item in self.received if item.answered == 200]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Block until ``count`` POSTs arrived (or fail); returns them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} webhook POSTs, got {len(self.received)}")
