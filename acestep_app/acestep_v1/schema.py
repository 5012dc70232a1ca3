"""Request and response models of the endpoint, field for field as fal documents them.

``PromptToAudioInput``/``PromptToAudioOutput`` are ``fal-ai/ace-step/prompt-to-audio``
(names, types, defaults, ranges, enums, descriptions, examples and field order of fal's
published schema). ``TextToAudioInput``/``TextToAudioOutput`` are fal's base ``fal-ai/ace-step``
endpoint: ``tags`` and ``lyrics`` instead of ``prompt``/``instrumental``, the same generation
parameters. The editing endpoints take a source ``audio_url`` (an http(s) URL or a ``data:`` URI,
loaded by :mod:`acestep_app.audio.source`): ``AudioToAudioInput`` (``fal-ai/ace-step/audio-to-audio``),
``AudioInpaintInput`` (``.../audio-inpaint``) and ``AudioOutpaintInput`` (``.../audio-outpaint``),
field for field as ``../shared/spec/fal-ace-step-schemas.json``. Every adapter (fal, Modal, local
server) imports these models, so all of them publish the same OpenAPI. Each model carries fal's
schema title; fields are declared in fal's display order (fal's App derives
``x-fal-order-properties`` from it); descriptions end in llms.txt's "Default value" note where
fal's pages show one.

Validation policy (what a request that the documented schema does not spell out gets):

- Unknown fields are ignored, as fal's own pydantic models do (pydantic's default
  ``extra="ignore"``); a client that sends a field of a newer or sibling fal endpoint still works.
- NaN and +-inf are rejected on every field (``allow_inf_nan=False``, plus a check that reports
  them with the value as text): JSON parsers that accept ``NaN``/``Infinity`` literals would
  otherwise slip them past the ``ge``/``le`` bounds, and an error echoing a raw NaN cannot be
  written as JSON (FastAPI's default 422 handler would fail with a 500).
- ``seed`` must fit in a signed 64-bit integer: that is what ``torch.Generator.manual_seed``
  and the SQLite job store accept without wrapping, so the seed echoed back is the seed used.
- Text fields have service limits (``MAX_PROMPT_LENGTH``, ``MAX_TAGS_LENGTH``,
  ``MAX_LYRICS_LENGTH`` characters) so huge bodies get a 422 before any work. The limits are
  far above anything the model can use (UMT5 reads 256 tokens; a 4-minute song's lyrics are
  a few thousand characters). They are enforced by validators rather than ``max_length`` so the
  published JSON schema stays exactly fal's.

Every failure is a pydantic ``ValidationError`` whose ``loc`` names the field, which FastAPI and
fal turn into a 422.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from acestep_app.serving.schema import File, RequestModel, at_most, fits_int64

MAX_PROMPT_LENGTH = 5_000
MAX_TAGS_LENGTH = 5_000
MAX_LYRICS_LENGTH = 4_000  # ~2,300 lyric tokens; a 240 s song has ~1,500-2,500 characters. The lyric
# encoder's attention grows with the square of the token count, so one request cannot hold the worker.

EXAMPLE_PROMPT = "A lofi hiphop song with a chill vibe about a sunny day on the boardwalk."
EXAMPLE_TAGS = "lofi, hiphop, drum and bass, trap, chill"
EXAMPLE_AUDIO_URL = "https://storage.googleapis.com/falserverless/example_outputs/ace-step-text-to-audio.wav"
EXAMPLE_SOURCE_URL = "https://storage.googleapis.com/falserverless/example_inputs/ace-step-audio-to-audio.wav"
EXAMPLE_OUTPUTS = "https://storage.googleapis.com/falserverless/example_outputs/"


class SchedulerEnum(StrEnum):
    euler = "euler"
    heun = "heun"


class GuidanceTypeEnum(StrEnum):
    cfg = "cfg"
    apg = "apg"
    cfg_star = "cfg_star"


class EditModeEnum(StrEnum):
    lyrics = "lyrics"
    remix = "remix"


class StartTimeRelativeToEnum(StrEnum):
    start = "start"
    end = "end"


class EndTimeRelativeToEnum(StrEnum):
    start = "start"
    end = "end"


# One definition per field, shared by both input models (field order stays per model).
Prompt = Annotated[
    str,
    Field(
        description=(
            "Prompt to control the style of the generated audio. This will be used to generate tags and lyrics."
        ),
        examples=[EXAMPLE_PROMPT],
    ),
    AfterValidator(at_most(MAX_PROMPT_LENGTH)),
]
Instrumental = Annotated[
    bool,
    Field(description="Whether to generate an instrumental version of the audio.", examples=[False]),
]
Tags = Annotated[
    str,
    Field(
        description="Comma-separated list of genre tags to control the style of the generated audio.",
        examples=[EXAMPLE_TAGS],
    ),
    AfterValidator(at_most(MAX_TAGS_LENGTH)),
]
Lyrics = Annotated[
    str,
    Field(
        description=(
            "Lyrics to be sung in the audio. If not provided or if [inst] or [instrumental] is the content of this "
            "field, no lyrics will be sung. Use control structures like [verse], [chorus] and [bridge] to control "
            'the structure of the song. Default value: `""`'
        ),
    ),
    AfterValidator(at_most(MAX_LYRICS_LENGTH)),
]
Duration = Annotated[
    float,
    Field(ge=5, le=240, description="The duration of the generated audio in seconds. Default value: `60`"),
]
NumberOfSteps = Annotated[
    int,
    Field(ge=3, le=60, description="Number of steps to generate the audio. Default value: `27`", examples=[27]),
]
Seed = Annotated[
    int | None,
    Field(description="Random seed for reproducibility. If not provided, a random seed will be used."),
    AfterValidator(fits_int64),
]
Scheduler = Annotated[
    SchedulerEnum,
    Field(description='Scheduler to use for the generation process. Default value: `"euler"`', examples=["euler"]),
]
GuidanceType = Annotated[
    GuidanceTypeEnum,
    Field(description='Type of CFG to use for the generation process. Default value: `"apg"`', examples=["apg"]),
]
GranularityScale = Annotated[
    int,
    Field(
        ge=-100,
        le=100,
        description=(
            "Granularity scale for the generation process. Higher values can reduce artifacts. Default value: `10`"
        ),
        examples=[10],
    ),
]
GuidanceInterval = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        description=(
            "Guidance interval for the generation. 0.5 means only apply guidance in the middle steps "
            "(0.25 * infer_steps to 0.75 * infer_steps) Default value: `0.5`"
        ),
        examples=[0.5],
    ),
]
GuidanceIntervalDecay = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        description=(
            "Guidance interval decay for the generation. Guidance scale will decay from guidance_scale to "
            "min_guidance_scale in the interval. 0.0 means no decay."
        ),
        examples=[0],
    ),
]
GuidanceScale = Annotated[
    float,
    Field(ge=0, le=200, description="Guidance scale for the generation. Default value: `15`", examples=[15]),
]
MinimumGuidanceScale = Annotated[
    float,
    Field(
        ge=0,
        le=200,
        description="Minimum guidance scale for the generation after the decay. Default value: `3`",
        examples=[3],
    ),
]
TagGuidanceScale = Annotated[
    float,
    Field(ge=0, le=10, description="Tag guidance scale for the generation. Default value: `5`", examples=[5]),
]
LyricGuidanceScale = Annotated[
    float,
    Field(ge=0, le=10, description="Lyric guidance scale for the generation. Default value: `1.5`", examples=[1.5]),
]

OriginalSeed = Annotated[
    int | None,
    Field(description="Original seed of the audio file."),
    AfterValidator(fits_int64),
]


def _audio_url(action: str):
    return Annotated[
        str,
        Field(description=f"URL of the audio file to be {action}.", examples=[EXAMPLE_SOURCE_URL],
              json_schema_extra={"x-fal-file-input": True}),
    ]


EditMode = Annotated[
    EditModeEnum,
    Field(description='Whether to edit the lyrics only or remix the audio. Default value: `"remix"`',
          examples=["remix"]),
]
OriginalTags = Annotated[
    str,
    Field(description="Original tags of the audio file.", examples=[EXAMPLE_TAGS]),
    AfterValidator(at_most(MAX_TAGS_LENGTH)),
]
OriginalLyrics = Annotated[
    str,
    Field(description='Original lyrics of the audio file. Default value: `""`', examples=[""]),
    AfterValidator(at_most(MAX_LYRICS_LENGTH)),
]
StartTimeRelativeTo = Annotated[
    StartTimeRelativeToEnum,
    Field(description='Whether the start time is relative to the start or end of the audio. Default value: `"start"`',
          examples=["start"]),
]
StartTime = Annotated[
    float,
    Field(ge=0, le=240, description="start time in seconds for the inpainting process.", examples=[0]),
]
EndTimeRelativeTo = Annotated[
    EndTimeRelativeToEnum,
    Field(description='Whether the end time is relative to the start or end of the audio. Default value: `"start"`',
          examples=["start"]),
]
EndTime = Annotated[
    float,
    Field(ge=0, le=240, description="end time in seconds for the inpainting process. Default value: `30`",
          examples=[30]),
]
Variance = Annotated[
    float,
    Field(ge=0, le=1, examples=[0.5], description=(
        "Variance for the inpainting process. Higher values can lead to more diverse results. Default value: `0.5`"
    )),
]
ExtendBeforeDuration = Annotated[
    float,
    Field(ge=0, le=240, description="Duration in seconds to extend the audio from the start.", examples=[0]),
]
ExtendAfterDuration = Annotated[
    float,
    Field(ge=0, le=240, description="Duration in seconds to extend the audio from the end. Default value: `30`",
          examples=[30]),
]


class PromptToAudioInput(RequestModel):
    """Input of `fal-ai/ace-step/prompt-to-audio`: a free-form prompt, turned into tags and lyrics."""

    model_config = ConfigDict(title="ACEStepPromptToAudioRequest")

    prompt: Prompt
    instrumental: Instrumental = False
    duration: Duration = 60.0
    number_of_steps: NumberOfSteps = 27
    seed: Seed = None
    scheduler: Scheduler = SchedulerEnum.euler
    guidance_type: GuidanceType = GuidanceTypeEnum.apg
    granularity_scale: GranularityScale = 10
    guidance_interval: GuidanceInterval = 0.5
    guidance_interval_decay: GuidanceIntervalDecay = 0.0
    guidance_scale: GuidanceScale = 15.0
    minimum_guidance_scale: MinimumGuidanceScale = 3.0
    tag_guidance_scale: TagGuidanceScale = 5.0
    lyric_guidance_scale: LyricGuidanceScale = 1.5


class TextToAudioInput(RequestModel):
    """Input of `fal-ai/ace-step`: genre tags and lyrics given directly."""

    model_config = ConfigDict(title="ACEStepTextToAudioRequest")

    tags: Tags
    lyrics: Lyrics = ""
    duration: Duration = 60.0
    number_of_steps: NumberOfSteps = 27
    seed: Seed = None
    scheduler: Scheduler = SchedulerEnum.euler
    guidance_type: GuidanceType = GuidanceTypeEnum.apg
    granularity_scale: GranularityScale = 10
    guidance_interval: GuidanceInterval = 0.5
    guidance_interval_decay: GuidanceIntervalDecay = 0.0
    guidance_scale: GuidanceScale = 15.0
    minimum_guidance_scale: MinimumGuidanceScale = 3.0
    tag_guidance_scale: TagGuidanceScale = 5.0
    lyric_guidance_scale: LyricGuidanceScale = 1.5


class _GeneratedAudio(BaseModel):
    model_config = ConfigDict(title="ACEStepResponse")

    audio: File = Field(description="The generated audio file.", examples=[{"url": EXAMPLE_AUDIO_URL}])
    seed: int = Field(description="The random seed used for the generation process.", examples=[42])
    tags: str = Field(description="The genre tags used in the generation process.", examples=[EXAMPLE_TAGS])
    lyrics: str = Field(description="The lyrics used in the generation process.", examples=["[inst]"])


class PromptToAudioOutput(_GeneratedAudio):
    """Output of `fal-ai/ace-step/prompt-to-audio`."""


class TextToAudioOutput(_GeneratedAudio):
    """Output of `fal-ai/ace-step`."""


class AudioToAudioInput(RequestModel):
    """Input of `fal-ai/ace-step/audio-to-audio`: re-sing or remix a song (ACE-Step's "edit" task).

    ``original_tags``/``original_lyrics`` describe the source; ``tags``/``lyrics`` the wanted result.
    (fal's own description of ``audio_url`` here says "outpainted"; kept, since clients see it.)
    """

    model_config = ConfigDict(title="ACEStepAudioToAudioRequest")

    audio_url: _audio_url("outpainted")
    edit_mode: EditMode = EditModeEnum.remix
    original_tags: OriginalTags
    original_lyrics: OriginalLyrics = ""
    tags: Tags
    lyrics: Lyrics = ""
    number_of_steps: NumberOfSteps = 27
    seed: Seed = None
    scheduler: Scheduler = SchedulerEnum.euler
    guidance_type: GuidanceType = GuidanceTypeEnum.apg
    granularity_scale: GranularityScale = 10
    guidance_interval: GuidanceInterval = 0.5
    guidance_interval_decay: GuidanceIntervalDecay = 0.0
    guidance_scale: GuidanceScale = 15.0
    minimum_guidance_scale: MinimumGuidanceScale = 3.0
    tag_guidance_scale: TagGuidanceScale = 5.0
    lyric_guidance_scale: LyricGuidanceScale = 1.5
    original_seed: OriginalSeed = None


class AudioInpaintInput(RequestModel):
    """Input of `fal-ai/ace-step/audio-inpaint`: regenerate the span ``start_time``..``end_time`` of a song."""

    model_config = ConfigDict(title="ACEStepAudioInpaintRequest")

    audio_url: _audio_url("inpainted")
    start_time_relative_to: StartTimeRelativeTo = StartTimeRelativeToEnum.start
    start_time: StartTime = 0.0
    end_time_relative_to: EndTimeRelativeTo = EndTimeRelativeToEnum.start
    end_time: EndTime = 30.0
    tags: Tags
    lyrics: Lyrics = ""
    variance: Variance = 0.5
    number_of_steps: NumberOfSteps = 27
    seed: Seed = None
    scheduler: Scheduler = SchedulerEnum.euler
    guidance_type: GuidanceType = GuidanceTypeEnum.apg
    granularity_scale: GranularityScale = 10
    guidance_interval: GuidanceInterval = 0.5
    guidance_interval_decay: GuidanceIntervalDecay = 0.0
    guidance_scale: GuidanceScale = 15.0
    minimum_guidance_scale: MinimumGuidanceScale = 3.0
    tag_guidance_scale: TagGuidanceScale = 5.0
    lyric_guidance_scale: LyricGuidanceScale = 1.5


class AudioOutpaintInput(RequestModel):
    """Input of `fal-ai/ace-step/audio-outpaint`: extend a song before its start and/or after its end."""

    model_config = ConfigDict(title="ACEStepAudioOutpaintRequest")

    audio_url: _audio_url("outpainted")
    extend_before_duration: ExtendBeforeDuration = 0.0
    extend_after_duration: ExtendAfterDuration = 30.0
    tags: Tags
    lyrics: Lyrics = ""
    number_of_steps: NumberOfSteps = 27
    seed: Seed = None
    scheduler: Scheduler = SchedulerEnum.euler
    guidance_type: GuidanceType = GuidanceTypeEnum.apg
    granularity_scale: GranularityScale = 10
    guidance_interval: GuidanceInterval = 0.5
    guidance_interval_decay: GuidanceIntervalDecay = 0.0
    guidance_scale: GuidanceScale = 15.0
    minimum_guidance_scale: MinimumGuidanceScale = 3.0
    tag_guidance_scale: TagGuidanceScale = 5.0
    lyric_guidance_scale: LyricGuidanceScale = 1.5


class AudioToAudioOutput(_GeneratedAudio):
    """Output of `fal-ai/ace-step/audio-to-audio`."""

    model_config = ConfigDict(title="ACEStepAudioToAudioResponse")

    audio: File = Field(description="The generated audio file.",
                        examples=[{"url": EXAMPLE_OUTPUTS + "ace-step-audio-to-audio.wav"}])


class AudioInpaintOutput(_GeneratedAudio):
    """Output of `fal-ai/ace-step/audio-inpaint`."""

    model_config = ConfigDict(title="ACEStepAudioInpaintResponse")

    audio: File = Field(description="The generated audio file.",
                        examples=[{"url": EXAMPLE_OUTPUTS + "ace-step-audio-inpaint.wav"}])


class AudioOutpaintOutput(_GeneratedAudio):
    """Output of `fal-ai/ace-step/audio-outpaint` (fal's shared ``ACEStepResponse``)."""
