"""One request served: the endpoint's Engine call -> audio file -> stored -> the billed output model.

Every host calls :func:`execute` (the local worker, the Modal GPU function, the fal endpoint); only
where the WAV goes differs (``save_audio``): the local server and Modal keep it in an
:class:`~acestep_app.serving.storage.AudioStore` under ``files/<request id>.<[output].format>``, fal uploads it to its CDN.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from acestep_app.audio.formats import AudioFormat, audio_format, encode_audio
from acestep_app.serving import billing
from acestep_app.serving.endpoints import Endpoint, RunContext
from acestep_app.serving.failures import JobInterrupted, StorageError, failure_for
from acestep_app.serving.jobs import Outcome
from acestep_app.serving.schema import File
from acestep_app.serving.storage import FILES_PREFIX, AudioStore
from acestep_app.settings import Settings

logger = logging.getLogger(__name__)

SaveAudio = Callable[[bytes, AudioFormat], dict[str, Any]]


def execute(endpoint: Endpoint, engine, request: BaseModel, settings: Settings, save_audio: SaveAudio, *,
            on_progress: Callable[[Any], None] | None = None, log: Callable[[str], None] | None = None,
            check: Callable[[], None] | None = None, fatal: tuple[type[BaseException], ...] = ()) -> Outcome:
    """Run ``request`` and return its outcome; every failure goes through the failure policy.

    ``on_progress`` gets every sampler step (raising ``JobCancelled`` from it cancels), ``log`` the
    engine's log lines, ``check`` runs once generation is done (a cancel that arrived during the last,
    callback-free stage still wins). ``JobInterrupted`` (server shutdown) and the ``fatal`` error types
    are not outcomes: they propagate.
    """
    try:
        generation = endpoint.run(engine, request, RunContext(settings, on_progress))
        if check is not None:
            check()
        for line in generation.logs:
            if log is not None:
                log(line)
        try:
            fmt = audio_format(settings.output.format)  # WAV, as fal, unless the operator changes it
            audio = save_audio(encode_audio(generation.waveform, generation.sample_rate, fmt), fmt)
        except OSError as error:
            raise StorageError(f"{type(error).__name__}: {error}") from error
    except (JobInterrupted, *fatal):
        raise
    except Exception as error:
        failure = failure_for(error)
        if failure.status_code >= 500:
            logger.exception("request failed (%s)", failure.error_type)
        return Outcome.failed(failure)
    fields = {"audio": audio, **generation.output_fields()}
    output = endpoint.output_model.model_validate({name: fields[name] for name in endpoint.output_model.model_fields
                                                   if name in fields})
    seconds = float(generation.billable_seconds)
    return Outcome.completed(output.model_dump(mode="json"), seconds,
                             billing.price_usd(seconds, endpoint.price(settings)))


def file_saver(audio: AudioStore, request_id: str) -> SaveAudio:
    """Saves the file as ``<request_id>.<format>``; its ``File.url`` is relative (the web layer makes it absolute)."""

    def save(data: bytes, fmt: AudioFormat) -> dict[str, Any]:
        stored = audio.save(request_id, data, fmt.name)
        return File(url=FILES_PREFIX + stored.file_name, content_type=stored.content_type,
                    file_name=stored.file_name, file_size=stored.size).model_dump(mode="json")

    return save
