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


class LoraError(InputError):
    """A ``loras`` entry that cannot be fetched or applied; the 422 names ``loras[index].path``.

    ``index`` is None for adapters that do not come from a request (infra.toml, the CLI): there the
    message carries the path and the caller reports it as a setup error.
    """

    def __init__(self, index: int | None, message: str, *, error_type: str = "validation_error",
                 ctx: dict[str, Any] | None = None):
        super().__init__("loras" if index is None else f"loras.{index}.path", message, error_type=error_type,
                         ctx=ctx)
        self.index = index

    def detail(self) -> dict[str, Any]:
        item = super().detail()
        if self.index is not None:
            item["loc"] = ["body", "loras", self.index, "path"]
        return item


class WeightsError(RuntimeError):
    """Weights are missing, incomplete or fail their digest check."""
