"""The ``loras`` request field, in the shape fal's LoRA endpoints take it: a list of ``{path, scale}``.

It exists only where ``[lora].per_request = true``: :func:`with_loras` derives an endpoint's input
model with the field appended, so a deployment without per-request adapters publishes fal's schema
unchanged. ``path`` is an https URL of a ``.safetensors`` file or a Hugging Face repo
(``owner/name``, ``owner/name@revision``, optionally ``/sub/folder`` or ``/file.safetensors`` after it);
local paths are for infra.toml only. ``scale`` defaults to 1; at most :data:`MAX_LORAS` entries.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

MAX_LORAS = 3
MAX_PATH_LENGTH = 2048
MIN_SCALE, MAX_SCALE = -4.0, 4.0
LORAS_FIELD = "loras"
EXAMPLE_PATH = "https://huggingface.co/owner/my-ace-step-lora/resolve/main/pytorch_lora_weights.safetensors"


class LoraWeight(BaseModel):
    """One adapter of a request (fal's ``LoraWeight``)."""

    model_config = ConfigDict(title="LoraWeight", extra="ignore", allow_inf_nan=False)

    path: str = Field(
        min_length=1, max_length=MAX_PATH_LENGTH,
        description="URL or Hugging Face repo (owner/name[@revision][/path]) of the LoRA weights.",
        examples=[EXAMPLE_PATH],
    )
    scale: float = Field(
        default=1.0, ge=MIN_SCALE, le=MAX_SCALE,
        description="The scale of the LoRA weight. This is used to scale the LoRA weight before merging it "
                    "with the base model.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _reject_non_finite(cls, data: Any, handler):
        # pydantic would echo a raw NaN back in its error, which a JSON response cannot carry
        scale = data.get("scale") if isinstance(data, dict) else None
        if isinstance(scale, float) and not math.isfinite(scale):
            error = {"type": "finite_number", "loc": ("scale",), "input": str(scale)}
            raise ValidationError.from_exception_data(cls.__name__, [error])
        return handler(data)


@functools.cache
def with_loras(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with an optional ``loras`` field appended (its title and other fields unchanged); one class
    per model, so every host publishes the same schema object."""
    field = Field(
        default_factory=list, max_length=MAX_LORAS,
        description=f"LoRA adapters to apply to this request (at most {MAX_LORAS}); their weights are merged "
                    "into the model for this request only.",
    )
    derived = create_model(model.__name__, __base__=model, __module__=model.__module__,
                           **{LORAS_FIELD: (list[LoraWeight], field)})
    derived.__doc__ = model.__doc__
    return derived


def request_loras(request: BaseModel) -> list[LoraWeight]:
    """The request's ``loras`` (empty when the endpoint has no such field)."""
    return list(getattr(request, LORAS_FIELD, None) or [])
