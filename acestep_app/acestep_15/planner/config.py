"""Which 5 Hz LM a deployment loads, and how: the planner's keys of ``[models."acestep-1.5"]`` in
infra.toml, the three official checkpoints, and ``load_planner``.

=========  ==========================  ==================================  ======================
planner    folder under the 1.5 root    repository                          manifest entry
=========  ==========================  ==================================  ======================
0.6B       acestep-5Hz-lm-0.6B          ACE-Step/acestep-5Hz-lm-0.6B        acestep15_lm_0_6b
1.7B       acestep-5Hz-lm-1.7B          ACE-Step/Ace-Step1.5 (a subfolder)  acestep15_lm
4B         acestep-5Hz-lm-4B            ACE-Step/acestep-5Hz-lm-4B          acestep15_lm_4b
=========  ==========================  ==================================  ======================

The 1.5 root is the checkpoint folder of the official layout (``<weights dir>/acestep-1.5`` when pulled).

1.7B is the official default. ``"none"`` loads no LM: requests then run text-only ("thinking" off).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from .planner import Planner

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LmCheckpoint:
    folder: str  # under the 1.5 root, as the official layout names it
    entry: str  # the weights/manifest.toml entry that pulls it


LM_CHECKPOINTS = {
    "0.6B": LmCheckpoint("acestep-5Hz-lm-0.6B", "acestep15_lm_0_6b"),
    "1.7B": LmCheckpoint("acestep-5Hz-lm-1.7B", "acestep15_lm"),
    "4B": LmCheckpoint("acestep-5Hz-lm-4B", "acestep15_lm_4b"),
}
DEFAULT_LM = "1.7B"


class PlannerSettings(BaseModel):
    """The planner's keys of ``[models."acestep-1.5"]`` (the family's settings model includes them).

    Attributes:
        planner: the LM size to load ("0.6B", "1.7B", "4B"), or "none" for no planner.
        planner_dir: a folder holding the LM (transformers layout) instead of the pulled one.
        planner_cache: KV cache of the LM's decoding: "auto" (static and compiled on CUDA, dynamic
            elsewhere), "static" or "dynamic".
        planner_max_duration: the longest song the LM may plan when the request gives no duration (10-600 s).
        prompt_lyrics: who writes lyrics for a prompt-only request: the song writer ("songwriter") or
            the planner's inspire mode ("planner"); docs/acestep-15-planner.md compares them.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    planner: Literal["0.6B", "1.7B", "4B", "none"] = DEFAULT_LM
    planner_dir: str = ""
    planner_cache: Literal["auto", "static", "dynamic"] = "auto"
    planner_max_duration: int = Field(default=600, ge=10, le=600)
    prompt_lyrics: Literal["songwriter", "planner"] = "planner"

    def lm_folder(self, root: str | Path) -> Path | None:
        """Where the LM is read from (None for "none"), given the 1.5 checkpoint root."""
        if self.planner == "none":
            return None
        return Path(self.planner_dir) if self.planner_dir else Path(root) / LM_CHECKPOINTS[self.planner].folder

    def weight_entries(self) -> list[str]:
        """The manifest entries ``weights pull`` fetches for the planner."""
        return [] if self.planner == "none" or self.planner_dir else [LM_CHECKPOINTS[self.planner].entry]


def load_planner(settings: PlannerSettings, root: str | Path, *, device: str = "auto",
                 dtype: str = "auto") -> Planner | None:
    """The deployment's planner, or None when none is configured or its folder holds no LM (logged).

    Args:
        root: the 1.5 checkpoint root (official layout), where the LM folders sit beside the DiT's.
    """
    from acestep_app.songwriter.local_llm import GenerationSpeed

    from .planner import Planner

    folder = settings.lm_folder(root)
    if folder is None:
        logger.info("planner: none configured; 1.5 requests run text-only")
        return None
    if not (folder / "config.json").is_file():
        logger.warning("planner: no 5 Hz LM at %s; 1.5 requests run text-only", folder)
        return None
    return Planner.from_pretrained(folder, device=device, dtype=dtype, max_duration=settings.planner_max_duration,
                                   speed=GenerationSpeed(cache=settings.planner_cache))
