"""Model families: what one family of models (ACE-Step v1, ACE-Step 1.5, ...) brings to the app.

A family is one folder of ``acestep_app`` whose ``family`` module defines ``FAMILY``, a
:class:`ModelFamily`: its endpoint declarations, the engine class that serves them, how to write a
tiny random checkpoint, which pinned weights it needs and its own ``[models."<name>"]`` settings.
Families are found by scanning the package, so adding one edits nothing outside its folder.
``[app].families`` in infra.toml picks the ones a deployment serves (the first is the primary one:
its endpoints also answer at the short paths ``/<sub-path>``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from acestep_app.serving.endpoints import Endpoint
from acestep_app.settings import Settings, SettingsError


def app_price(settings: Settings) -> float:
    """``[app].price_per_second_usd``: the price of a family that sets none of its own."""
    return settings.app.price_per_second_usd


def no_weight_entries(settings: Settings) -> list[str]:
    return []


def no_weights(settings: Settings) -> bool:
    return False


@dataclass(frozen=True)
class ModelFamily:
    """One model family.

    Args:
        name: how users name it (``--model``, ``[app].families``), e.g. ``"acestep-v1"``.
        app_name: the fal app id under the owner (``"ace-step"`` serves ``fal-ai/ace-step/...``).
        title: one line for OpenAPI and the playground.
        endpoints: the family's endpoint declarations (names unique over all families).
        engine: ``"module:Class"``; ``Class.load(settings, weights_dir=None)`` returns the loaded engine.
        make_tiny: ``"module:function"``; ``function(path) -> Path`` writes a tiny random checkpoint.
        weight_entries: the manifest entries this family needs pulled under ``settings``.
        weights_available: whether real weights are configured or pulled (else commands use the tiny demo).
        settings_model: validates ``[models."<name>"]`` (None: the family has no section of its own).
        price_per_second: USD per second of returned audio under ``settings``.
        endpoints_for: the endpoints as ``settings`` configure them (None: ``endpoints`` always), for
            request defaults that depend on the deployment, such as the loaded model variant's step count.
    """

    name: str
    app_name: str
    title: str
    endpoints: tuple[Endpoint, ...]
    engine: str
    make_tiny: str
    weight_entries: Callable[[Settings], list[str]] = no_weight_entries
    weights_available: Callable[[Settings], bool] = no_weights
    settings_model: type[BaseModel] | None = None
    price_per_second: Callable[[Settings], float] = app_price
    description: str = field(default="", compare=False)
    endpoints_for: Callable[[Settings], tuple[Endpoint, ...]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        bound = tuple(replace(endpoint, family=self.name, price_per_second=self.price_per_second)
                      for endpoint in self.endpoints)
        object.__setattr__(self, "endpoints", bound)

    def for_settings(self, settings: Settings) -> ModelFamily:
        """This family as a deployment with ``settings`` serves it (its endpoints' defaults follow them)."""
        if self.endpoints_for is None:
            return self
        return replace(self, endpoints=self.endpoints_for(settings))

    def engine_class(self):
        return _load_attribute(self.engine)

    def load_engine(self, settings: Settings, weights_dir: str | Path | None = None):
        """Load this family's engine (models on the configured device, once)."""
        return self.engine_class().load(settings, weights_dir=weights_dir)

    def write_tiny(self, path: str | Path) -> Path:
        return _load_attribute(self.make_tiny)(Path(path))

    def config(self, settings: Settings) -> BaseModel | None:
        """``[models."<name>"]`` validated by ``settings_model`` (its defaults where the section is absent)."""
        if self.settings_model is None:
            return None
        try:
            return self.settings_model.model_validate(settings.models.get(self.name, {}))
        except ValidationError as error:
            raise SettingsError(f'[models."{self.name}"]: {error}') from None


def _load_attribute(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@functools.cache
def all_families() -> tuple[ModelFamily, ...]:
    """Every family in the package, in folder order (a ``family`` module defining ``FAMILY``)."""
    import acestep_app

    found = []
    for package in sorted(pkgutil.iter_modules(acestep_app.__path__), key=lambda info: info.name):
        if not package.ispkg:
            continue
        try:
            module = importlib.import_module(f"acestep_app.{package.name}.family")
        except ModuleNotFoundError as error:
            if error.name != f"acestep_app.{package.name}.family":
                raise
            continue
        if isinstance(getattr(module, "FAMILY", None), ModelFamily):
            found.append(module.FAMILY)
    names = [endpoint.name for family in found for endpoint in family.endpoints]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RuntimeError(f"endpoint names used by two families: {duplicates}")
    return tuple(found)


def family_names() -> list[str]:
    return [family.name for family in all_families()]


def get_family(name: str) -> ModelFamily:
    """The family called ``name``; a :class:`SettingsError` listing the known ones otherwise."""
    for family in all_families():
        if family.name == name:
            return family
    raise SettingsError(f"unknown model family {name!r}; known: {', '.join(family_names())}")


def served_families(settings: Settings, names: list[str] | None = None) -> tuple[ModelFamily, ...]:
    """The families a deployment serves: ``names`` if given, else ``[app].families``; the first is primary.
    Each as ``settings`` configure it (:meth:`ModelFamily.for_settings`)."""
    return tuple(get_family(name).for_settings(settings) for name in (names or settings.app.families))
