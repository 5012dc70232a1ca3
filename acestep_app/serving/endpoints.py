"""Endpoints: one declaration per fal endpoint, and the registry a host serves.

Each :class:`Endpoint` names its path under its family's app id, its input and output models, how a
request becomes an engine call (``run``) and its request body limit. Families declare their
endpoints (``acestep_app/<family>/endpoints.py``); a host builds one :class:`EndpointRegistry` over the
families it serves and derives every route from it, so an endpoint is added in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from acestep_app.settings import Settings

DEFAULT_MAX_BODY_BYTES = 256 * 1024  # fits the schemas' text limits even fully \u-escaped; more is abuse


@dataclass(frozen=True)
class RunContext:
    """What ``Endpoint.run`` gets besides the engine and the request."""

    settings: Settings
    on_progress: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class Endpoint:
    """One fal endpoint.

    Args:
        name: the name jobs and usage records carry (unique over all families).
        sub_path: the path under the app id (``""`` is fal's base endpoint, served at ``/``).
        input_model, output_model: the request and response models.
        run: ``run(engine, request, context) -> Generation``; raise ``InputError`` for bad input.
        summary, description: the OpenAPI operation's title and text.
        max_body_bytes: the request body limit, a number or ``settings -> number``; None = the default.
        family, price_per_second: set by the :class:`~acestep_app.engine.family.ModelFamily` declaring it.
        takes_loras: a generation or editing endpoint, which takes ``loras`` when ``[lora].per_request``.
    """

    name: str
    sub_path: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    run: Callable[[Any, BaseModel, RunContext], Any]
    summary: str
    description: str
    max_body_bytes: int | Callable[[Settings], int] | None = None
    family: str = ""
    price_per_second: Callable[[Settings], float] | None = None
    takes_loras: bool = True

    @property
    def path(self) -> str:
        return "/" + self.sub_path

    def body_limit(self, settings: Settings) -> int:
        limit = self.max_body_bytes
        if limit is None:
            return DEFAULT_MAX_BODY_BYTES
        return limit(settings) if callable(limit) else int(limit)

    def price(self, settings: Settings) -> float:
        """USD per second of returned audio."""
        return self.price_per_second(settings) if self.price_per_second else settings.app.price_per_second_usd

    def served(self, settings: Settings | None) -> Endpoint:
        """This endpoint as a deployment under ``settings`` serves it (with ``loras`` when per-request)."""
        if settings is None or not settings.lora.per_request or not self.takes_loras:
            return self
        from acestep_app.lora.schema import with_loras

        return replace(self, input_model=with_loras(self.input_model))


class EndpointRegistry:
    """The endpoints of the families one host serves.

    ``families`` are :class:`~acestep_app.engine.family.ModelFamily` objects (anything with
    ``name``, ``app_name`` and ``endpoints``); the first is the primary one, whose endpoints also
    answer at ``/<sub-path>`` and under app ids that name no family (a deployment's own app name).
    """

    def __init__(self, families: Sequence[Any], settings: Settings | None = None):
        if not families:
            raise ValueError("a host serves at least one model family")
        self.families = tuple(families)
        self._served = {family.name: tuple(endpoint.served(settings) for endpoint in family.endpoints)
                        for family in self.families}
        self.endpoints: tuple[Endpoint, ...] = tuple(e for family in self.families for e in self.endpoints_of(family))

    def endpoints_of(self, family) -> tuple[Endpoint, ...]:
        """``family``'s endpoints as this registry serves them."""
        return self._served[family.name]

    @property
    def primary(self):
        return self.families[0]

    def by_name(self, name: str) -> Endpoint | None:
        return next((endpoint for endpoint in self.endpoints if endpoint.name == name), None)

    def family_of(self, app_name: str | None):
        """The family whose fal app id is ``app_name``; the primary family for any other name."""
        return next((family for family in self.families if family.app_name == app_name), self.primary)

    def find(self, app_name: str | None, sub_path: str) -> Endpoint | None:
        """The endpoint at ``sub_path`` of ``app_name``'s family (the primary family's when None)."""
        sub_path = sub_path.strip("/")
        family = self.family_of(app_name)
        return next((endpoint for endpoint in self.endpoints_of(family) if endpoint.sub_path == sub_path), None)

    def for_request_path(self, path: str) -> Endpoint | None:
        """The endpoint a POST to ``path`` targets: ``/<sub>``, ``/run/<owner>/<app>[/<sub>]`` or ``/<owner>/<app>[/<sub>]``."""
        parts = [part for part in path.split("/") if part]
        if parts[:1] == ["run"]:
            parts = parts[1:]
            if len(parts) < 2:
                return None
        if len(parts) <= 1:
            return self.find(None, parts[0] if parts else "")
        return self.find(parts[1], "/".join(parts[2:]))
