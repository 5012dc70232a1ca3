"""Request and response models of the ACE-Step 1.5 endpoints (``fal-ai/ace-step-1.5`` and its sub-paths).

fal publishes no machine-readable schema for these endpoints that could be found offline. The field
names come from what public clients of fal's 1.5 endpoints send (a fal-hosted mirror's request body for
text to music; a ``fal_client`` script for repaint); fields no client shows are named after the
official API server (``acestep/api_server.py``) in fal's style. ``docs/acestep-15.md`` lists every
decision, field by field, with its source.

Defaults that depend on the deployment are filled in per deployment by :func:`with_defaults`: the
loaded variant's ``num_inference_steps`` and ``shift``, and ``thinking`` (on only where a planner is
loaded). The published OpenAPI therefore shows what a request that omits them gets.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from acestep_app.serving.schema import File, RequestModel, at_most, fits_int64

MAX_PROMPT_LENGTH = 5_000
MAX_LYRICS_LENGTH = 10_000  # a 10-minute song; the lyric encoder reads 2048 tokens
MAX_DURATION = 600.0  # ten minutes: the longest song ACE-Step 1.5 was trained for
TIME_SIGNATURES = ("2", "3", "4", "6")
KEY_SCALE = re.compile(r"^[A-G](#|b|♯|♭)? (major|minor)$")
LANGUAGE = re.compile(r"^([a-z]{2,3}(-[a-z]{2,4})?|unknown)$")
INSTRUMENTAL = "[Instrumental]"

EXAMPLE_PROMPT = "Energetic synth-pop with punchy drums, warm bass and a bright female vocal, 118 bpm"
EXAMPLE_LYRICS = "[verse]\nNeon rivers in the night\nWe keep running toward the light\n\n[chorus]\nHold on, hold on"
EXAMPLE_SOURCE_URL = "https://storage.googleapis.com/falserverless/example_inputs/ace-step-audio-to-audio.wav"


def _matches(pattern: re.Pattern, what: str):
    def check(value: str | None) -> str | None:
        if value is not None and not pattern.match(value):
            raise ValueError(f"must be {what} (got {value!r})")
        return value

    return check


Prompt = Annotated[
    str,
    Field(description="The music to make: genre, instruments, mood, vocal style, tempo (the DiT's caption).",
          examples=[EXAMPLE_PROMPT]),
    AfterValidator(at_most(MAX_PROMPT_LENGTH)),
]
Lyrics = Annotated[
    str,
    Field(description=(
        "Lyrics to sing, with section tags such as [verse], [chorus] and [bridge]. `[Instrumental]` makes an "
        "instrumental. Left empty, lyrics are written from the prompt. Default value: `\"\"`"),
        examples=[EXAMPLE_LYRICS]),
    AfterValidator(at_most(MAX_LYRICS_LENGTH)),
]
Duration = Annotated[
    float,
    Field(gt=0, le=MAX_DURATION, description="Length of the song in seconds (up to 10 minutes). Default value: `60`",
          examples=[60]),
]
NumInferenceSteps = Annotated[
    int,
    Field(ge=1, le=200, description="Number of denoising steps. Turbo variants are distilled for 8; sft and base "
          "use about 50.", examples=[8]),
]
GuidanceScale = Annotated[
    float,
    Field(ge=0, le=20, description="Guidance strength (APG) of the sft and base variants; turbo variants ignore it "
          "(guidance is distilled into them). Default value: `7`", examples=[7]),
]
Shift = Annotated[
    float,
    Field(ge=1, le=5, description="Timestep shift of the noise schedule (higher spends more steps at high noise).",
          examples=[3]),
]
Seed = Annotated[
    int | None,
    Field(description="Random seed for reproducibility. If not provided, a random seed will be used."),
    AfterValidator(fits_int64),
]
Thinking = Annotated[
    bool,
    Field(description="Let the 5 Hz language-model planner write the song's metadata and semantic codes before "
          "the DiT renders it (billed at twice the rate where fal bills it so).", examples=[True]),
]
Bpm = Annotated[
    int | None,
    Field(default=None, ge=30, le=300, description="Tempo in beats per minute. Left out: decided by the model.",
          examples=[120]),
]
KeyScale = Annotated[
    str | None,
    Field(default=None, description="Key and scale, e.g. `C major`, `F# minor`, `Bb major`. Left out: decided by "
          "the model.", examples=["C major"]),
    AfterValidator(_matches(KEY_SCALE, "a key A-G with an optional #/b and `major` or `minor`, e.g. `F# minor`")),
]
TimeSignature = Annotated[
    Literal["2", "3", "4", "6"] | None,
    Field(default=None, description="Beats per bar: `2` (2/4), `3` (3/4), `4` (4/4) or `6` (6/8). Left out: decided "
          "by the model.", examples=["4"]),
]
VocalLanguage = Annotated[
    str,
    Field(description="Language of the lyrics as an ISO 639 code (`en`, `zh`, `ja`, ...), or `unknown`. "
          "Default value: `\"en\"`", examples=["en"]),
    AfterValidator(_matches(LANGUAGE, "an ISO 639 language code such as `en`, or `unknown`")),
]
LmTemperature = Annotated[float, Field(ge=0, le=2, description="Sampling temperature of the planner. Default value: "
                                        "`0.85`", examples=[0.85])]
LmCfgScale = Annotated[float, Field(ge=1, le=5, description="Classifier-free guidance of the planner. Default value: "
                                     "`2`", examples=[2])]
LmTopP = Annotated[float, Field(gt=0, le=1, description="Nucleus sampling of the planner. Default value: `0.9`",
                                examples=[0.9])]
LmNegativePrompt = Annotated[
    str,
    Field(description="What the planner's guidance steers away from; `NO USER INPUT` means nothing. Default value: "
          "`\"NO USER INPUT\"`", examples=["NO USER INPUT"]),
    AfterValidator(at_most(MAX_PROMPT_LENGTH)),
]
UseConstrainedDecoding = Annotated[
    bool, Field(description="Constrain the planner's output to valid metadata and audio codes. Default value: `true`",
                examples=[True]),
]


def _audio_url(what: str):
    return Annotated[
        str,
        Field(description=f"URL of {what} (http(s) or a base64 `data:` URI; WAV, FLAC, MP3 or Ogg).",
              examples=[EXAMPLE_SOURCE_URL], json_schema_extra={"x-fal-file-input": True}),
    ]


class TextToMusicInput(RequestModel):
    """Input of `fal-ai/ace-step-1.5`: a song from a prompt, with or without lyrics."""

    model_config = ConfigDict(title="ACEStep15TextToMusicRequest")

    prompt: Prompt
    lyrics: Lyrics = ""
    duration: Duration = 60.0
    thinking: Thinking = False
    num_inference_steps: NumInferenceSteps = 8
    guidance_scale: GuidanceScale = 7.0
    shift: Shift = 3.0
    seed: Seed = None
    bpm: Bpm = None
    key_scale: KeyScale = None
    time_signature: TimeSignature = None
    vocal_language: VocalLanguage = "en"
    lm_temperature: LmTemperature = 0.85
    lm_cfg_scale: LmCfgScale = 2.0
    lm_top_p: LmTopP = 0.9
    lm_negative_prompt: LmNegativePrompt = "NO USER INPUT"
    use_constrained_decoding: UseConstrainedDecoding = True


class RepaintInput(RequestModel):
    """Input of `fal-ai/ace-step-1.5/repaint`: regenerate ``start_time``..``end_time`` of a song, keep the rest."""

    model_config = ConfigDict(title="ACEStep15RepaintRequest")

    source_audio_url: _audio_url("the song to repaint")
    start_time: float = Field(default=0.0, ge=0, le=MAX_DURATION, examples=[10],
                              description="Start of the span to regenerate, in seconds. Default value: `0`")
    end_time: float = Field(default=-1.0, ge=-1, le=MAX_DURATION, examples=[20], description=(
        "End of the span to regenerate, in seconds; -1 means the end of the song. Default value: `-1`"))
    prompt: Prompt
    lyrics: Lyrics = ""
    repaint_strength: float = Field(default=1.0, gt=0, le=1, examples=[1.0], description=(
        "How far the span may move from the source: 1 regenerates it from noise, lower values start from the "
        "source partly noised and keep more of it. Default value: `1`"))
    seed: Seed = None
    vocal_language: VocalLanguage = "en"
    num_inference_steps: NumInferenceSteps = 8
    guidance_scale: GuidanceScale = 7.0
    shift: Shift = 3.0
    bpm: Bpm = None
    key_scale: KeyScale = None
    time_signature: TimeSignature = None


class CoverInput(RequestModel):
    """Input of `fal-ai/ace-step-1.5/cover`: the song of ``source_audio_url`` re-made in a new style."""

    model_config = ConfigDict(title="ACEStep15CoverRequest")

    source_audio_url: _audio_url("the song to cover (its structure and melody are kept)")
    reference_audio_url: str | None = Field(
        default=None, examples=[EXAMPLE_SOURCE_URL], json_schema_extra={"x-fal-file-input": True},
        description="URL of a recording whose timbre the cover takes on (optional; http(s) or a `data:` URI).")
    prompt: Prompt
    lyrics: Lyrics = ""
    duration: float | None = Field(default=None, gt=0, le=MAX_DURATION, examples=[60], description=(
        "Length of the cover in seconds. Left out: the source's length."))
    cover_strength: float = Field(default=1.0, ge=0, le=1, examples=[1.0], description=(
        "How closely the cover follows the source: 1 follows it fully, lower values blend in a text-only "
        "rendering of the prompt at every step. Default value: `1`"))
    seed: Seed = None
    vocal_language: VocalLanguage = "en"
    num_inference_steps: NumInferenceSteps = 8
    guidance_scale: GuidanceScale = 7.0
    shift: Shift = 3.0
    bpm: Bpm = None
    key_scale: KeyScale = None
    time_signature: TimeSignature = None


class MusicOutput(BaseModel):
    """What every ACE-Step 1.5 endpoint returns: the audio file and the conditions it was made from."""

    model_config = ConfigDict(title="ACEStep15Response")

    audio: File = Field(description="The generated audio file.")
    seed: int = Field(description="The random seed used for the generation process.", examples=[42])
    prompt: str = Field(description="The caption the DiT was conditioned on.", examples=[EXAMPLE_PROMPT])
    lyrics: str = Field(description="The lyrics sung (`[Instrumental]` for none).", examples=[EXAMPLE_LYRICS])
    bpm: int | None = Field(default=None, description="The tempo the DiT was given, if any.", examples=[120])
    key_scale: str | None = Field(default=None, description="The key the DiT was given, if any.", examples=["C major"])
    time_signature: str | None = Field(default=None, description="The beats per bar the DiT was given, if any.",
                                       examples=["4"])
    vocal_language: str = Field(description="The language of the lyrics the DiT was given.", examples=["en"])
    planned: list[str] | None = Field(default=None, description="With thinking: the fields above the planner "
                                      "decided (the others are the request's).", examples=[["bpm", "key_scale"]])
    audio_code_count: int | None = Field(default=None, description="With thinking: the semantic codes the planner "
                                         "wrote (5 per second).", examples=[300])
    planner_seconds: float | None = Field(default=None, description="With thinking: the planner's time in seconds.",
                                          examples=[1.2])


def with_defaults(model: type[BaseModel], **defaults) -> type[BaseModel]:
    """``model`` with some fields' defaults replaced (same name, title, fields and validators)."""
    fields = {}
    for name, value in defaults.items():
        info = model.model_fields[name]
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = (annotation, Field(default=value, description=info.description, examples=info.examples))
    derived = create_model(model.__name__, __base__=model, __module__=model.__module__, **fields)
    derived.__doc__ = model.__doc__
    return derived
