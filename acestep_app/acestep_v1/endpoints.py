"""The ACE-Step v1 endpoints fal publishes under ``fal-ai/ace-step``: two to generate, three to edit."""

from __future__ import annotations

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
from acestep_app.serving.endpoints import Endpoint, RunContext
from acestep_app.settings import Settings


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
