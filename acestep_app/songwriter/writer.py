"""Prompt -> style tags and structured lyrics: the first stage of prompt-to-audio.

fal's prompt-to-audio takes one free-text prompt and "uses it to generate tags and lyrics". A
``SongWriter`` does that step:

* ``TransformersSongWriter`` (default): a local instruct model (Qwen3-4B-Instruct-2507 in the real
  deploy, pulled with the weights into ``<weights>/llm``) loaded once with transformers. Each attempt
  is one seeded ``generate`` call (static KV cache, compiled on CUDA) held to one JSON object by
  ``json_skeleton.JsonSkeletonProcessor``: the writer supplies ``{"tags": "...", "lyrics": "[verse]\n..."}``
  and the model only fills the two string values (the lyric cannot close before its minimum length).
  The result is parsed with ``json`` and validated with pydantic (tags cleaned, prose wrapped into
  lines, loops rejected, length fitted). Same seed + prompt -> same song; invalid output is retried
  with the next seed; after ``max_attempts`` the deterministic fallback is used and the logs say so.
* ``OpenAISongWriter``: any OpenAI-compatible chat endpoint (URL, model, key from the environment).
* ``FallbackSongWriter``: no model at all. Tags are the prompt's own words (music words first,
  ``N bpm`` and vocal phrases kept whole); the lyric is a minimal verse/chorus structure built from
  the prompt's other words and fitted to the duration. Used when no LLM weights are present (for
  instance with only the tiny ACE-Step checkpoint) and whenever a model fails.

Lyric length rule (``LyricBudget``): a sung line takes about 4 s and about 75 % of a song is sung,
so a song of ``d`` seconds gets at most ``round(0.75 * d / 4)`` lines (clamped to 2..48), in
sections of about 4 lines (``ceil(lines / 4)`` sections asked for, at most 2 more accepted, 8..10
for the longest songs), and at least a quarter of its maximum. The model is told the budget and the
budget is enforced afterwards: extra lines and sections are cut, too few lines is invalid output.
Instrumental songs get exactly ``"[inst]"`` and the model is only asked for tags.

torch and transformers are imported inside functions, so this module imports cheaply.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from acestep_app.songwriter.fallback import (
    FallbackSongWriter,
    attempt_seed,
    fallback_after,
)
from acestep_app.songwriter.local_llm import (
    TAGS_MAX_NEW_TOKENS,
    GenerationSpeed,
    TransformersSongWriter,
    find_llm_weights,
)
from acestep_app.songwriter.song import (
    LyricBudget,
    Song,
    SongWriter,
    build_messages,
    parse_draft,
    short_reason,
)

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

BACKENDS = ("transformers", "openai", "fallback")
# OpenAI-compatible backend configuration (read by ``OpenAISongWriter.from_env`` only).
ENV_OPENAI_URL = "ACESTEP_OPENAI_URL"
ENV_OPENAI_MODEL = "ACESTEP_OPENAI_MODEL"
ENV_OPENAI_API_KEY = "ACESTEP_OPENAI_API_KEY"


class OpenAISongWriter:
    """Song writer on an OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp...).

    JSON mode (``response_format: json_object``) and the request ``seed`` are sent; servers that
    honour the seed give the same song for the same seed and prompt.

    Args:
        base_url: API root, e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
        model: model name the endpoint serves.
        api_key: bearer token (optional for local servers).
        transport: an ``httpx`` transport (tests pass ``httpx.MockTransport``).
        json_mode: send ``response_format``; turn off for servers that reject it.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 max_attempts: int = 3, temperature: float = 0.7, json_mode: bool = True,
                 transport: httpx.BaseTransport | None = None):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.model = model
        self.max_attempts = max_attempts
        self.temperature = temperature
        self.json_mode = json_mode
        self.description = f"OpenAI-compatible endpoint {base_url} ({model})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> OpenAISongWriter:
        """Configure from ``ACESTEP_OPENAI_URL``, ``ACESTEP_OPENAI_MODEL`` and ``ACESTEP_OPENAI_API_KEY``."""
        environ = os.environ if environ is None else environ
        missing = [name for name in (ENV_OPENAI_URL, ENV_OPENAI_MODEL) if not environ.get(name)]
        if missing:
            raise ValueError(f"prompt backend 'openai' needs the environment variables {', '.join(missing)}")
        return cls(environ[ENV_OPENAI_URL], environ[ENV_OPENAI_MODEL], environ.get(ENV_OPENAI_API_KEY), **kwargs)

    def write(self, prompt: str, *, instrumental: bool, duration: float, seed: int) -> Song:
        import httpx

        budget = LyricBudget(duration)
        messages = build_messages(prompt, instrumental=instrumental, budget=budget)
        failures: list[str] = []
        tokens = 0
        for attempt in range(self.max_attempts):
            payload: dict[str, Any] = {
                "model": self.model,
                "messages": messages,
                "temperature": self.temperature,
                "seed": attempt_seed(seed, attempt),
                "max_tokens": TAGS_MAX_NEW_TOKENS + (0 if instrumental else budget.max_new_tokens) + 16,
            }
            if self.json_mode:
                payload["response_format"] = {"type": "json_object"}
            try:
                response = self.client.post("chat/completions", json=payload)
                response.raise_for_status()
                body = response.json()
                tokens += int((body.get("usage") or {}).get("completion_tokens") or 0)
                content = body["choices"][0]["message"]["content"]
                draft = parse_draft(content, budget=budget, instrumental=instrumental)
            except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as error:
                failures.append(short_reason(error))
                logger.info("song writer: endpoint attempt %d failed: %s", attempt + 1, failures[-1])
                continue
            log = f"prompt: {self.model} (OpenAI-compatible endpoint) wrote tags and lyrics in {attempt + 1} attempt(s)"
            return Song(draft.tags, draft.lyrics, "openai", [log], tokens)
        return fallback_after(failures, prompt, instrumental, duration, seed, tokens)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_song_writer(model_dir: str | os.PathLike | None, backend: str = "transformers", *,
                     device: str = "auto", torch_dtype: str = "auto",
                     speed: GenerationSpeed | None = None) -> SongWriter:
    """The Engine's song writer, loaded once at startup.

    Args:
        model_dir: the LLM weights (folder or ``.gguf``); None or a path without weights gives the
            fallback with a startup warning (the tiny-checkpoint setup).
        backend: ``"transformers"`` (local model, default), ``"openai"`` (environment-configured
            endpoint) or ``"fallback"``.
        device, torch_dtype, speed: for the local model, as in ``TransformersSongWriter.from_pretrained``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"prompt backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "openai":
        writer: SongWriter = OpenAISongWriter.from_env()
    elif backend == "fallback":
        writer = FallbackSongWriter("prompt backend set to 'fallback'")
    elif find_llm_weights(model_dir) is None:
        writer = FallbackSongWriter(f"no language model weights at {model_dir or '(none configured)'}")
        logger.warning("song writer: %s; prompt-to-audio uses the deterministic fallback", writer.reason)
        return writer
    else:
        writer = TransformersSongWriter.from_pretrained(model_dir, device=device, torch_dtype=torch_dtype, speed=speed)
    logger.info("song writer: %s", writer.description)
    return writer
