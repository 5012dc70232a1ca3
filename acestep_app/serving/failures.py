"""The one failure policy: what every host answers when a request does not produce audio.

:func:`failure_for` maps an outcome to a :class:`Failure` (HTTP status, fal's ``detail``, fal's
error type); hosts render it with :func:`acestep_app.serving.protocol.failure_response`. Every failure
bills 0.

=====================================  ======  ===============================================
outcome                                status  error type / detail
=====================================  ======  ===============================================
``InputError`` (bad value, bad file)   422*    its ``error_type``; detail = fal's field item
cancelled (queue cancel)               400     ``request_cancelled``
out of GPU memory                      500     ``gpu_out_of_memory``
generated audio could not be stored    500     ``storage_error``
any other generation failure           500     ``generation_failed``
=====================================  ======  ===============================================

(* or the ``status_code`` the ``InputError`` carries.) Schema validation errors are answered
before a request is accepted (422, pydantic's items); see :mod:`acestep_app.hosts.web`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from acestep_app.errors import InputError

CANCELLED_MESSAGE = "Request was cancelled."


class JobCancelled(Exception):
    """Raised inside a running job (from its progress callback) once cancellation was requested."""


class JobInterrupted(Exception):
    """Raised inside a running job when the server shuts down; the job goes back to the queue."""


class StorageError(OSError):
    """The generated audio (or the job's outcome) could not be written."""


@dataclass(frozen=True)
class Failure:
    """A request's failure as fal reports it.

    ``detail`` is the response's ``detail`` (a message, or fal's list of field items for 422s);
    ``message`` is the one-line text for queue status ``error`` and webhooks.
    """

    status_code: int
    error_type: str
    detail: Any

    @property
    def message(self) -> str:
        return message_of(self.detail)

    @property
    def is_field_error(self) -> bool:
        return isinstance(self.detail, list)


def message_of(detail: Any) -> str:
    """One line of text for a ``detail``: field items become ``body.field: msg; ...``."""
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, item.get('loc', [])))}: {item.get('msg')}" for item in detail)
    return str(detail)


def cancelled() -> Failure:
    return Failure(400, "request_cancelled", CANCELLED_MESSAGE)


def server_restarted(attempts: int) -> Failure:
    return Failure(500, "server_restarted", f"The server stopped while this request was running ({attempts} "
                                             "attempts); not retried again.")


def call_failed() -> Failure:
    return Failure(500, "generation_failed", "The generation call failed (its container was lost). Nothing was billed.")


def failure_for(error: BaseException) -> Failure:
    """The failure policy: an exception raised while serving a request -> what the caller is told."""
    if isinstance(error, InputError):
        return Failure(error.status_code, error.error_type, [error.detail()])
    if isinstance(error, JobCancelled):
        return cancelled()
    if isinstance(error, StorageError):
        return Failure(500, "storage_error", f"Could not store the result: {error}. Nothing was billed.")
    if is_out_of_memory(error):
        return Failure(500, "gpu_out_of_memory",
                       "The GPU ran out of memory during generation; try a shorter duration. Nothing was billed.")
    return Failure(500, "generation_failed", f"Generation failed: {type(error).__name__}: {error}. Nothing was billed.")


def is_out_of_memory(error: BaseException) -> bool:
    torch = sys.modules.get("torch")  # an engine that raised torch's OOM has imported torch
    return torch is not None and isinstance(error, torch.OutOfMemoryError)
