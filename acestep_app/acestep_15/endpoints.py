"""The ACE-Step 1.5 endpoints under ``fal-ai/ace-step-1.5``: text to music (the base path), repaint and cover.

The request models' deployment-dependent defaults (the variant's steps and shift; ``thinking`` only
where a planner is loaded) are filled in by :func:`endpoints_for`, so every host publishes what a
request that omits them gets.
"""

from __future__ import annotations

import functools

from pydantic import BaseModel

from acestep_app.serving.endpoints import Endpoint, RunContext
from acestep_app.settings import Settings

from .schema import CoverInput, MusicOutput, RepaintInput, TextToMusicInput, with_defaults
from .variants import Variant, variant


def text_to_music(engine, request: BaseModel, context: RunContext):
    return engine.text_to_music(request, on_progress=context.on_progress)


def repaint(engine, request: BaseModel, context: RunContext):
    """Fetch and decode ``source_audio_url`` (fal's file errors are ``InputError``s naming it), then repaint."""
    from acestep_app.audio.source import load_audio_url

    source = load_audio_url(request.source_audio_url, context.settings, field="source_audio_url")
    return engine.repaint(request, source, on_progress=context.on_progress)


def cover(engine, request: BaseModel, context: RunContext):
    from acestep_app.audio.source import load_audio_url

    source = load_audio_url(request.source_audio_url, context.settings, field="source_audio_url")
    reference = None
    if request.reference_audio_url:
        reference = load_audio_url(request.reference_audio_url, context.settings, field="reference_audio_url")
    return engine.cover(request, source, reference, on_progress=context.on_progress)


def editing_body_limit(settings: Settings) -> int:
    """Repaint and cover requests may carry songs as ``data:`` URIs: ``[audio_input].max_request_bytes``."""
    return settings.audio_input.max_request_bytes


def configured_endpoints(settings: Settings) -> tuple[Endpoint, ...]:
    """The endpoints as a deployment with ``settings`` serves them: its variant's steps and shift, and
    ``thinking`` on by default where a planner is configured."""
    from .settings import family_settings

    config = family_settings(settings)
    return endpoints_for(variant(config.variant), thinking=config.planner != "none")


@functools.cache
def endpoints_for(chosen: Variant, *, thinking: bool = False) -> tuple[Endpoint, ...]:
    """The family's endpoints with the request defaults of ``chosen`` (and ``thinking`` on or off)."""
    sampling = {"num_inference_steps": chosen.num_inference_steps, "shift": chosen.shift}
    return (
        Endpoint("text-to-music-v15", "", with_defaults(TextToMusicInput, thinking=thinking, **sampling), MusicOutput,
                 text_to_music, "Text to music", "Generate a song from a prompt, with or without lyrics."),
        Endpoint("repaint-v15", "repaint", with_defaults(RepaintInput, **sampling), MusicOutput, repaint,
                 "Repaint", "Regenerate a time span of a song from a prompt and lyrics, keeping the rest.",
                 max_body_bytes=editing_body_limit),
        Endpoint("cover-v15", "cover", with_defaults(CoverInput, **sampling), MusicOutput, cover,
                 "Cover", "Re-make a song in a new style, keeping its structure and melody; optionally in the "
                 "timbre of a reference recording.", max_body_bytes=editing_body_limit),
    )


ENDPOINTS = endpoints_for(variant("turbo"))
