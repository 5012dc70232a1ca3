"""``[models."acestep-1.5"]`` in infra.toml: which variant to load, from where, and its price.

    [models."acestep-1.5"]
    variant = "turbo"              # turbo | turbo-shift1 | turbo-shift3 | sft | base | xl-turbo
    weights_dir = ""               # "" = the pulled official layout (<weights cache>/acestep-1.5); or a
                                   # folder in either layout (official, or diffusers' model_index.json)
    price_per_second_usd = 0.0003  # fal's price for fal-ai/ace-step-1.5
    planner = "1.7B"               # the 5 Hz LM: 0.6B | 1.7B | 4B | none (and the other planner keys,
                                   # planner/config.py: planner_dir, planner_cache, prompt_lyrics, ...)

Device, dtype, CPU threads, the song writer and takes come from the shared sections ([engine], [quality]).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, Field

from .planner.config import PlannerSettings
from .variants import DEFAULT_VARIANT, VARIANTS

if TYPE_CHECKING:
    from acestep_app.settings import Settings

FAMILY_NAME = "acestep-1.5"
WEIGHTS_SUBDIR = "acestep-1.5"  # the manifest entries' target under the weights cache

VariantName = Literal[tuple(VARIANTS)]  # type: ignore[valid-type]


class AceStep15Settings(PlannerSettings):
    """The family's keys plus the planner's (:class:`~acestep_app.acestep_15.planner.config.PlannerSettings`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    variant: VariantName = DEFAULT_VARIANT
    weights_dir: str = ""
    price_per_second_usd: float = Field(default=0.0003, ge=0)


def family_settings(settings: Settings) -> AceStep15Settings:
    from acestep_app.settings import SettingsError

    from pydantic import ValidationError

    try:
        return AceStep15Settings.model_validate(settings.models.get(FAMILY_NAME, {}))
    except ValidationError as error:
        raise SettingsError(f'[models."{FAMILY_NAME}"]: {error}') from None


def price_per_second(settings: Settings) -> float:
    return family_settings(settings).price_per_second_usd


def weight_entries(settings: Settings) -> list[str]:
    """The manifest entries a deployment of this family pulls: the shared snapshot, its variant's DiT, its LM."""
    from .variants import variant

    config = family_settings(settings)
    if config.weights_dir:
        return []
    return list(dict.fromkeys(["acestep15", variant(config.variant).weight_entry, *config.weight_entries()]))


def weights_root(settings: Settings, config: AceStep15Settings | None = None) -> Path:
    """The checkpoint folder to load: ``weights_dir`` as is, else the pinned weights pulled into the cache."""
    from acestep_app.weights.store import Manifest, pull, weights_cache_dir

    config = config or family_settings(settings)
    if config.weights_dir:
        return Path(config.weights_dir).expanduser()
    cache = pull(weights_cache_dir(settings), progress=True, only=weight_entries(settings), manifest=Manifest.load())
    return cache / WEIGHTS_SUBDIR


def weights_available(settings: Settings) -> bool:
    """A configured folder, or the pulled snapshot (possibly still incomplete)."""
    from acestep_app.weights.store import weights_cache_dir

    config = family_settings(settings)
    return bool(config.weights_dir) or (weights_cache_dir(settings) / WEIGHTS_SUBDIR / "vae").is_dir()
