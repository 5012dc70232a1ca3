"""The endpoint registry: every fal endpoint this app serves, declared once.

Each :class:`Endpoint` names its path under the app id, its input and output models (from
:mod:`acestep_app.acestep_v1.schema`), how a request becomes an Engine call (``run``) and its request body
limit. The local server, the fal App and the Modal app all derive their routes from
:data:`ENDPOINTS`, so adding an endpoint is one declaration here (plus its tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from acestep_app.acestep_v1.schema import (
    AudioInpaintInput,
    AudioInpaintOutput,
    AudioOutpaintInput,
    AudioOutpaintOutput,
    AudioToAudioInput,
    AudioToAudioOutput,
    PromptToAudioInput,
    PromptToAudioOutput,
    TextToAudioInput,
    TextToAudioOutput,
)
from acestep_app.settings import Settings

DEFAULT_MAX_BODY_BYTES = 256 * 1024  # fits the schema's text limits even fully \u-escaped; more is abuse


@dataclass(frozen=True)
class RunContext:
    """What ``Endpoint.run`` gets besides the engine and the request."""

    settings: Settings
    on_progress: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class Endpoint:
    """One fal endpoint.

    Args:
        name: the name jobs and usage records carry.
        sub_path: the path under the app id (``""`` is fal's base endpoint, served at ``/``).
        input_model, output_model: the request and response models (``schema.py``).
        run: ``run(engine, request, context) -> Generation``; raise ``InputError`` for bad input.
        summary, description: the OpenAPI operation's title and text.
        max_body_bytes: the request body limit, a number or ``settings -> number``; None = the default.
    """

    name: str
    sub_path: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    run: Callable[[Any, BaseModel, RunContext], Any]
    summary: str
    description: str
    max_body_bytes: int | Callable[[Settings], int] | None = None

    @property
    def path(self) -> str:
        return "/" + self.sub_path

    def body_limit(self, settings: Settings) -> int:
        limit = self.max_body_bytes
        if limit is None:
            return DEFAULT_MAX_BODY_BYTES
        return limit(settings) if callable(limit) else int(limit)


def generate(engine, request: BaseModel, context: RunContext):
    return engine.generate(request, on_progress=context.on_progress)


def edit(engine, request: BaseModel, context: RunContext):
    """Fetch and decode ``request.audio_url`` (fal's file errors are ``InputError``s), then edit it."""
    from acestep_app.audio.source import load_audio_url

    source = load_audio_url(request.audio_url, context.settings)
    return engine.edit(request, source, on_progress=context.on_progress)


def editing_body_limit(settings: Settings) -> int:
    """Editing requests may carry the song as a ``data:`` URI: ``[audio_input].max_request_bytes``."""
    return settings.audio_input.max_request_bytes


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("prompt-to-audio", "prompt-to-audio", PromptToAudioInput, PromptToAudioOutput, generate,
             "Prompt to audio", "Generate a song from a prompt (tags and lyrics are written from it)."),
    Endpoint("text-to-audio", "", TextToAudioInput, TextToAudioOutput, generate,
             "Text to audio", "Generate a song from explicit tags and lyrics."),
    Endpoint("audio-to-audio", "audio-to-audio", AudioToAudioInput, AudioToAudioOutput, edit,
             "Audio to audio", "Remix a song, or re-sing it with new lyrics (ACE-Step's edit task).",
             max_body_bytes=editing_body_limit),
    Endpoint("audio-inpaint", "audio-inpaint", AudioInpaintInput, AudioInpaintOutput, edit,
             "Audio inpaint", "Regenerate a span of a song with lyrics and/or style, keeping the rest.",
             max_body_bytes=editing_body_limit),
    Endpoint("audio-outpaint", "audio-outpaint", AudioOutpaintInput, AudioOutpaintOutput, edit,
             "Audio outpaint", "Extend a song before its start and/or after its end.",
             max_body_bytes=editing_body_limit),
)


def by_name(name: str) -> Endpoint:
    return next(endpoint for endpoint in ENDPOINTS if endpoint.name == name)


def by_sub_path(sub_path: str) -> Endpoint | None:
    sub_path = sub_path.strip("/")
    return next((endpoint for endpoint in ENDPOINTS if endpoint.sub_path == sub_path), None)


def for_request_path(path: str) -> Endpoint | None:
    """The endpoint a POST to ``path`` targets: ``/<sub>``, ``/run/<owner>/<app>[/<sub>]`` or ``/<owner>/<app>[/<sub>]``."""
    parts = [part for part in path.split("/") if part]
    if parts[:1] == ["run"]:
        parts = parts[1:]
        if len(parts) < 2:
            return None
    if len(parts) <= 1:
        return by_sub_path(parts[0] if parts else "")
    return by_sub_path("/".join(parts[2:]))
