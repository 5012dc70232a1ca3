"""What every HTTP adapter shares: the endpoint table and one request turned into a stored audio file.

The local server (:mod:`acestep_app.server`) and the Modal app (``deploy/modal_app.py``) both call
:func:`generate_output`: ``engine.generate`` -> WAV in an :class:`~acestep_app.storage.AudioStore`
-> the endpoint's output model with a relative ``File.url`` (``files/<request id>.wav``, made
absolute by whoever serves it) -> billed seconds and price.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from acestep_app import billing
from acestep_app.audio import encode_audio
from acestep_app.errors import InputError
from acestep_app.jobs import JobError, JobOutcome
from acestep_app.schema import File, PromptToAudioInput, PromptToAudioOutput, TextToAudioInput, TextToAudioOutput
from acestep_app.storage import AudioStore

FILES_PREFIX = "files/"


@dataclass(frozen=True)
class Endpoint:
    name: str  # the name jobs and usage rows carry
    sub_path: str  # path under the app id ("" is fal's base endpoint)
    input_model: type[BaseModel]
    output_model: type[BaseModel]


ENDPOINTS = {
    "prompt-to-audio": Endpoint("prompt-to-audio", "prompt-to-audio", PromptToAudioInput, PromptToAudioOutput),
    "text-to-audio": Endpoint("text-to-audio", "", TextToAudioInput, TextToAudioOutput),
}
ENDPOINT_BY_SUB_PATH = {endpoint.sub_path: endpoint for endpoint in ENDPOINTS.values()}


def encoded_audio(engine, generation, fmt: str) -> bytes:
    """The generation as a file in ``fmt`` (``[output].format``); the engine's own WAV writer for WAV."""
    if fmt == "wav" and hasattr(engine, "wav_bytes"):
        return engine.wav_bytes(generation)
    return encode_audio(generation.waveform, generation.sample_rate, fmt)


def generate_output(engine, audio: AudioStore, settings, endpoint: Endpoint, request: BaseModel, request_id: str,
                    on_progress: Callable | None = None, log: Callable[[str], None] | None = None,
                    check: Callable[[], None] | None = None) -> JobOutcome:
    """Generate ``request``, store it as ``<request_id>.<[output].format>`` and build the billed output.

    ``on_progress`` gets every sampler step (raising from it cancels), ``log`` the engine's log lines,
    ``check`` is called once generation is done (raise there to drop the result). Bad input raises
    :class:`JobError` with status 422 and fal's field detail; a failed write raises a storage error.
    """
    try:
        generation = engine.generate(request, on_progress=on_progress)
    except InputError as error:
        detail = [{"loc": ["body", error.field], "msg": error.message, "type": "value_error"}]
        raise JobError(str(error), status_code=422, error_type="validation_error", detail=detail) from error
    if check is not None:
        check()
    for line in getattr(generation, "logs", None) or []:
        if log is not None:
            log(line)
    try:
        fmt = settings.output.format
        stored = audio.save(request_id, encoded_audio(engine, generation, fmt), fmt)
    except OSError as error:
        raise JobError(f"Could not store the generated audio: {error}", error_type="storage_error") from error
    file = File(url=FILES_PREFIX + stored.file_name, content_type=stored.content_type,
                file_name=stored.file_name, file_size=stored.size)
    output = endpoint.output_model(audio=file, seed=generation.seed, tags=generation.tags, lyrics=generation.lyrics)
    seconds = float(generation.billable_seconds)
    return JobOutcome(output.model_dump(mode="json"), seconds, billing.price_usd(seconds, settings))
