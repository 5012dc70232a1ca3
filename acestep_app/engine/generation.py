"""What every engine returns and reports, whatever the model family.

An engine is the one stateful object of a model family: it loads the family's models once and
serves its endpoints' ``run`` calls, knowing nothing about HTTP, fal or Modal. Hosts talk to it
through :class:`Engine` and the endpoint declarations; results come back as :class:`Generation`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from acestep_app.settings import Settings


@dataclass(frozen=True)
class Progress:
    """One executed sampler step (raising from the callback that receives it cancels the run)."""

    step: int
    total: int
    message: str


ProgressCallback = Callable[[Progress], None]


@dataclass
class Generation:
    """One request's audio and what the response reports about it.

    ``extra`` holds output-model fields beyond ``audio``, ``seed``, ``tags`` and ``lyrics`` that a
    family's endpoints return (for example the metadata a planner chose).
    """

    waveform: np.ndarray  # (2, N) float32
    sample_rate: int
    seed: int
    tags: str
    lyrics: str
    billable_seconds: float
    num_forwards: int
    logs: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    takes: list[Any] = field(default_factory=list)  # every ranked take when [quality].takes > 1 ranked several
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds of audio returned."""
        return self.waveform.shape[-1] / self.sample_rate

    def output_fields(self) -> dict[str, Any]:
        """The response fields besides ``audio``."""
        return {"seed": self.seed, "tags": self.tags, "lyrics": self.lyrics, **self.extra}


class Engine(Protocol):
    """What hosts need of a loaded engine; the endpoints' ``run`` functions call the rest."""

    family: str  # the ModelFamily name whose endpoints this engine serves
    is_tiny: bool  # a random demo checkpoint: the audio is noise
    settings: Settings

    def describe(self) -> dict[str, Any]: ...

    def warmup(self) -> None: ...
