"""Schema pieces every family's endpoints share: fal's ``File``, the request base model, field checks.

Each family keeps its own request and response models (``acestep_app/<family>/schema.py``), built
on these so every endpoint validates the same way (see :class:`RequestModel`).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

LORAS_FIELD = "loras"  # acestep_app.lora.schema's field (off unless [lora].per_request)
SEED_MIN = -(2**63)
SEED_MAX = 2**63 - 1


def at_most(limit: int):
    """A validator: text of at most ``limit`` characters (kept out of the JSON schema, unlike ``max_length``)."""

    def check(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters long (got {len(value)})")
        return value

    return check


def fits_int64(value: int | None) -> int | None:
    """A seed must fit in a signed 64-bit integer: what ``torch.Generator.manual_seed`` and SQLite hold."""
    if value is not None and not SEED_MIN <= value <= SEED_MAX:
        raise ValueError(f"must fit in a signed 64-bit integer ({SEED_MIN} to {SEED_MAX})")
    return value


def is_non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


class RequestModel(BaseModel):
    """Base of every endpoint input: unknown fields ignored (as fal's models do), NaN and infinities refused.

    JSON parsers that accept ``NaN``/``Infinity`` literals would otherwise slip them past ``ge``/``le``
    bounds, and an error that echoes a raw NaN cannot be written as JSON; the error carries it as text.
    One unknown field is refused rather than ignored: ``loras`` where the deployment takes no per-request
    adapters (``[lora].per_request`` off), so a caller never gets audio silently made without them.
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _reject_non_finite(cls, data: Any, handler):
        if isinstance(data, dict):
            bad = [name for name, value in data.items() if name in cls.model_fields and is_non_finite(value)]
            if bad:
                errors = [{"type": "finite_number", "loc": (name,), "input": str(data[name])} for name in bad]
                raise ValidationError.from_exception_data(cls.__name__, errors)
            if data.get(LORAS_FIELD) and LORAS_FIELD not in cls.model_fields:
                error = PydanticCustomError("loras_disabled", "this deployment takes no per-request LoRA adapters "
                                                              "([lora].per_request is off)")
                raise ValidationError.from_exception_data(cls.__name__, [{"type": error, "loc": (LORAS_FIELD,),
                                                                          "input": str(data[LORAS_FIELD])[:200]}])
        return handler(data)


# fal.toolkit.File's public fields; from_attributes lets an adapter pass a fal File (or any object with
# these attributes) straight into an output model.
class File(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    url: str = Field(description="The URL where the file can be downloaded from.")
    content_type: str | None = Field(default=None, description="The mime type of the file.", examples=["image/png"])
    file_name: str | None = Field(
        default=None,
        description="The name of the file. It will be auto-generated if not provided.",
        examples=["z9RV14K95DvU.png"],
    )
    file_size: int | None = Field(default=None, description="The size of the file in bytes.", examples=[4404019])
