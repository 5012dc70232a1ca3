"""From an endpoint request to a plan and back: how the 1.5 endpoints use the planner.

* ``plan_request``: the request's fields as a ``PlanRequest``. Metadata the client sent is forced into
  the chain of thought; metadata left out is the LM's to choose. The duration always counts as given
  (the schema's default, 60 s, is a real default: the song's length and bill do not depend on the LM),
  and the language counts only when the client sent ``vocal_language`` (its default "en" would
  otherwise hide the language the LM hears in the lyrics); the default is the DiT's language only
  when the LM names none.
* ``sampling_config``: the request's ``lm_*`` fields.
* ``conditions``: a plan as the DiT's ``Conditions``.
* ``planner_report``: what the response and logs say about the plan.
* ``prompt_lyrics``: lyrics for a prompt-only request from the planner's inspire mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .planner import Plan, PlanRequest, SamplingConfig

if TYPE_CHECKING:
    from ..generation import Conditions
    from .planner import Planner, Sketch


def plan_request(request, *, lyrics: str | None = None, thinking: bool = True) -> PlanRequest:
    """``request``: a 1.5 text-to-music input (``acestep_15.schema.TextToMusicInput``)."""
    sent = request.model_fields_set
    return PlanRequest(
        caption=request.prompt,
        lyrics=request.lyrics if lyrics is None else lyrics,
        bpm=request.bpm,
        keyscale=request.key_scale,
        timesignature=request.time_signature,
        duration=request.duration,
        language=request.vocal_language if "vocal_language" in sent else None,
        default_language=request.vocal_language,
        negative_prompt=request.lm_negative_prompt,
        constrained=request.use_constrained_decoding,
        thinking=thinking,
    )


def sampling_config(request) -> SamplingConfig:
    return SamplingConfig(temperature=request.lm_temperature, top_p=request.lm_top_p, cfg_scale=request.lm_cfg_scale)


def conditions(plan: Plan) -> Conditions:
    """The DiT's conditions for ``plan`` (the codes' duration, the LM's language where the user gave none)."""
    from ..generation import Conditions

    return Conditions(
        prompt=plan.caption, lyrics=plan.lyrics, duration=plan.duration, vocal_language=plan.language or "unknown",
        bpm=plan.bpm, key_scale=plan.keyscale, time_signature=plan.timesignature, audio_codes=plan.audio_codes,
    )


# Plan field -> response field of the 1.5 endpoints.
RESPONSE_FIELDS = {"bpm": "bpm", "keyscale": "key_scale", "timesignature": "time_signature", "caption": "prompt",
                   "language": "vocal_language", "duration": "duration", "audio_codes": "audio_codes"}


def planner_report(plan: Plan) -> dict[str, Any]:
    """The response's account of the plan: which response fields the planner decided (``planned``),
    and its codes and timings."""
    return {
        "planned": [RESPONSE_FIELDS[name] for name in plan.from_planner],
        "audio_code_count": plan.code_count,
        "planner_seconds": round(sum(plan.seconds.values()), 3),
    }


def prompt_lyrics(planner: Planner, request, *, seed: int, sampling: SamplingConfig | None = None) -> Sketch:
    """Lyrics for a prompt-only request from the planner's inspire mode, written for the request's
    duration (and language, when the client sent one)."""
    language = request.vocal_language if "vocal_language" in request.model_fields_set else None
    return planner.inspire(request.prompt, instrumental=False, seed=seed, language=language,
                           duration=request.duration, sampling=sampling)
