"""The ACE-Step endpoint on fal: ``fal deploy deploy/fal_app.py::AceStep``.

Publishes ``<owner>/<[fal].app_name>/prompt-to-audio`` (``fal-ai/ace-step/prompt-to-audio``'s
schema) and ``<owner>/<[fal].app_name>`` (tags + lyrics), billed per second of returned audio
through the ``x-fal-billable-units`` header. Everything about inference lives in
``acestep_app.engine.Engine``; this file only loads it, calls it, uploads the WAV and reports billing.

Deploy-time configuration (read on the deploying machine and shipped with the class):

- ``infra.toml`` (or the file named by ``$ACESTEP_INFRA``): machine type, GPUs, keep-alive,
  concurrency, request timeout and auth from ``[fal]``; the whole ``Settings`` object rides along as
  ``AceStep.settings``, so the runner needs no copy of the file.
- ``pyproject.toml``: the runner installs ``[project].dependencies`` plus the ``fal`` extra as one
  cached layer, then this project (``.``, which fal builds into an sdist) on top.

Runtime switch: ``$ACESTEP_FAL_FILE_REPOSITORY`` picks where the audio is stored (default
``fal_v3``, fal's CDN; ``in_memory`` returns a ``data:`` URL and needs no credentials, for
``fal run --local`` and the tests).
"""

from __future__ import annotations

import os
import tomllib
import traceback
import uuid
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import ClassVar

import fal
from fal.exceptions import FieldException
from fal.toolkit import FAL_MODEL_WEIGHTS_DIR
from fal.toolkit import File as FalFile
from fastapi import HTTPException, Response

from acestep_app import billing
from acestep_app.audio import AudioFormat, audio_format, encode_audio
from acestep_app.errors import InputError
from acestep_app.schema import PromptToAudioInput, PromptToAudioOutput, TextToAudioInput, TextToAudioOutput
from acestep_app.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FILE_REPOSITORY_ENV = "ACESTEP_FAL_FILE_REPOSITORY"
DEFAULT_FILE_REPOSITORY = "fal_v3"
ERROR_TYPE_HEADER = "x-fal-error-type"
SETTINGS = Settings.load()


def runner_requirements(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> list[list[str]]:
    """Two install layers: the dependencies + ``fal`` extra (cached while they do not change), then the project."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return [[*project["dependencies"], *project["optional-dependencies"]["fal"]], ["."]]


def runner_settings(settings: Settings) -> Settings:
    """Pinned weights go to fal's persistent model-weights volume, so only the first cold start downloads."""
    if settings.engine.weights_dir or settings.weights.cache_dir:
        return settings
    cache_dir = FAL_MODEL_WEIGHTS_DIR / "acestep-app" / settings.weights.revision
    return settings.model_copy(update={"weights": settings.weights.model_copy(update={"cache_dir": str(cache_dir)})})


def compile_cache(settings: Settings) -> AbstractContextManager:
    """With ``[engine].compile``, share inductor kernels across runners (fal keys them by GPU type)."""
    if not settings.engine.compile:
        return nullcontext()
    import torch
    from fal.toolkit import synchronized_inductor_cache

    return synchronized_inductor_cache(f"acestep-app/{settings.weights.revision[:12]}/torch-{torch.__version__}")


def print_progress(progress) -> None:
    # Runner stdout is the request's log stream (fal_client.subscribe(..., with_logs=True)).
    print(progress.message, flush=True)


class AceStep(fal.App, name=SETTINGS.fal.app_name, keep_alive=SETTINGS.fal.keep_alive):
    """ACE-Step v1 text-to-music, one Engine per runner; deploy settings come from ``infra.toml``."""

    settings: ClassVar[Settings] = SETTINGS
    machine_type = SETTINGS.fal.machine_type
    num_gpus = SETTINGS.fal.num_gpus
    min_concurrency = SETTINGS.fal.min_concurrency
    max_concurrency = SETTINGS.fal.max_concurrency
    request_timeout = SETTINGS.fal.request_timeout
    app_auth = SETTINGS.fal.app_auth
    requirements = runner_requirements()
    requirements_context_dir = str(PROJECT_ROOT)

    def setup(self) -> None:
        from acestep_app.engine import Engine

        settings = runner_settings(self.settings)
        self.file_repository = os.environ.get(FILE_REPOSITORY_ENV, DEFAULT_FILE_REPOSITORY)
        with compile_cache(settings):
            self.engine = Engine.load(settings)
            print(f"engine: {self.engine.describe()}", flush=True)
            self.engine.warmup()

    def _add_extra_middlewares(self, app) -> None:
        super()._add_extra_middlewares(app)
        # FastAPI answers an undecodable JSON body with a bare 400; make it the unbilled 422 fal gives
        # for every other invalid body (status-code handlers run before fal's class handlers).
        app.add_exception_handler(400, undecodable_body)

    @fal.endpoint("/prompt-to-audio")
    def prompt_to_audio(self, request: PromptToAudioInput, response: Response) -> PromptToAudioOutput:
        return PromptToAudioOutput(**self.generate(request, response))

    @fal.endpoint("/")
    def text_to_audio(self, request: TextToAudioInput, response: Response) -> TextToAudioOutput:
        return TextToAudioOutput(**self.generate(request, response))

    def generate(self, request: PromptToAudioInput | TextToAudioInput, response: Response) -> dict:
        """Engine run + upload; bills the returned seconds only when both succeed."""
        import torch

        try:
            generation = self.engine.generate(request, on_progress=print_progress)
            fmt = audio_format(self.settings.output.format)  # WAV, as fal, unless the operator changes it
            audio = self.upload(encode_audio(generation.waveform, generation.sample_rate, fmt), fmt)
        except InputError as error:
            raise invalid_input(error) from None
        except torch.AcceleratorError:
            raise  # a sticky CUDA fault: fal answers 503 and replaces this runner
        except Exception as error:
            traceback.print_exc()
            failure = failed_generation(error)
        else:
            for line in generation.logs:
                print(line, flush=True)
            response.headers[billing.BILLING_HEADER] = billing.header_value(generation.billable_seconds)
            return {"audio": audio, "seed": generation.seed, "tags": generation.tags, "lyrics": generation.lyrics}
        # Outside the except block the failed run's frames (and tensors) are gone, so the cache can be released.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise failure

    def upload(self, data: bytes, fmt: AudioFormat) -> dict:
        fallback = ["fal"] if self.file_repository == DEFAULT_FILE_REPOSITORY else None
        stored = FalFile.from_bytes(
            data,
            content_type=fmt.content_type,
            file_name=f"{uuid.uuid4().hex}{fmt.extension}",
            repository=self.file_repository,
            fallback_repository=fallback,
        )
        return stored.model_dump()


def invalid_input(error: InputError) -> HTTPException:
    """fal's field-error 422 (``FieldException``'s body), billed 0."""
    return unbilled_error(422, FieldException(error.field, error.message).to_pydantic_format()["detail"])


def failed_generation(error: Exception) -> HTTPException:
    """An unbilled 500 that says what went wrong; the runner keeps serving."""
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        detail, error_type = "The GPU ran out of memory during generation; try a shorter duration.", "gpu_out_of_memory"
    else:
        detail, error_type = f"Generation failed: {type(error).__name__}: {error}", "generation_failed"
    return unbilled_error(500, f"{detail} Nothing was billed.", error_type)


async def undecodable_body(request, error: HTTPException):
    from fastapi.responses import JSONResponse

    detail = [{"loc": ["body"], "msg": f"Invalid request body: {error.detail}", "type": "json_invalid"}]
    return JSONResponse({"detail": detail}, status_code=422, headers={billing.BILLING_HEADER: "0"})


def unbilled_error(status_code: int, detail, error_type: str | None = None) -> HTTPException:
    # An explicit "0": fal bills an endpoint's default units when an error response carries no header
    # (FieldException and AppException responses carry none).
    headers = {billing.BILLING_HEADER: "0"} | ({ERROR_TYPE_HEADER: error_type} if error_type else {})
    return HTTPException(status_code=status_code, detail=detail, headers=headers)
