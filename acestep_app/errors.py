"""The project's error types, shared by every adapter."""

from __future__ import annotations

from typing import Any

FAL_ERRORS_URL = "https://docs.fal.ai/errors#"


class InputError(ValueError):
    """A request value that passed the schema but cannot be served.

    Adapters map it to ``status_code`` (422 unless said otherwise) with :meth:`detail` as fal's
    ``{"detail": [...]}`` item, so the answer names ``field``. ``error_type`` is fal's ``type``
    (``file_download_error``, ``audio_duration_too_long``...); ``ctx`` its optional context; ``input``
    the value that was refused (fal's file errors echo the URL).
    """

    def __init__(self, field: str, message: str, *, error_type: str = "validation_error", status_code: int = 422,
                 ctx: dict[str, Any] | None = None, input: str | None = None):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.error_type = error_type
        self.status_code = status_code
        self.ctx = ctx
        self.input = input

    def detail(self) -> dict[str, Any]:
        """fal's error item: ``loc``, ``msg``, ``type``, plus ``url`` and ``ctx`` for fal's named types."""
        item: dict[str, Any] = {"loc": ["body", self.field], "msg": self.message, "type": self.error_type}
        if self.error_type != "validation_error":
            item["url"] = FAL_ERRORS_URL + self.error_type
        if self.ctx:
            item["ctx"] = self.ctx
        if self.input is not None:
            item["input"] = self.input
        return item


class AudioInputError(InputError):
    """An input audio file that cannot be fetched, decoded, or is out of bounds (fal's file errors)."""


class WeightsError(RuntimeError):
    """Weights are missing, incomplete or fail their digest check."""
