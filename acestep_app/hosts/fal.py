"""fal glue: a model family's endpoints as ``fal.App`` methods, answered by the shared failure policy.

fal runs the queue itself, so a fal runner only serves the synchronous calls. :func:`with_endpoints`
adds one ``@fal.endpoint`` method per endpoint of a family; each calls
:func:`acestep_app.serving.service.execute` and answers exactly what the local server and the Modal app
answer: the output model billed by ``x-fal-billable-units``, or the failure (billed ``0``).
"""

import sys
import uuid
from typing import Any

import fal
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from acestep_app.audio.formats import AudioFormat
from acestep_app.serving import billing, protocol
from acestep_app.serving.endpoints import Endpoint, EndpointRegistry
from acestep_app.serving.failures import Failure
from acestep_app.serving.service import execute

DEFAULT_FILE_REPOSITORY = "fal_v3"


class RequestFailed(Exception):
    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


def with_endpoints(family, settings=None):
    """Class decorator: one fal endpoint per endpoint of ``family``, each calling ``app.serve(endpoint, ...)``.

    fal publishes each model family as its own app, so each family gets its own ``fal.App`` class.
    ``settings`` decide the served input models (``loras`` under ``[lora].per_request``).
    """

    def decorate(app_class: type[fal.App]) -> type[fal.App]:
        for endpoint in EndpointRegistry([family], settings).endpoints:
            setattr(app_class, endpoint.name.replace("-", "_"), fal_endpoint(endpoint))
        return app_class

    return decorate


def fal_endpoint(endpoint: Endpoint):
    def handler(self, request, response):
        return self.serve(endpoint, request, response)

    handler.__name__ = handler.__qualname__ = endpoint.name.replace("-", "_")
    handler.__doc__ = endpoint.description
    handler.__annotations__ = {"request": endpoint.input_model, "response": Response, "return": endpoint.output_model}
    return fal.endpoint(endpoint.path)(handler)


def serve(endpoint: Endpoint, engine, settings, request: BaseModel, response: Response, file_repository: str) -> BaseModel:
    """One request on a fal runner: Engine run + upload; bills the returned seconds only when both succeed."""
    outcome = execute(endpoint, engine, request, settings, uploader(file_repository), on_progress=print_progress,
                      log=print_line, fatal=sticky_gpu_faults())
    if outcome.failure is not None:
        release_gpu_cache()
        raise RequestFailed(outcome.failure)
    response.headers[billing.BILLING_HEADER] = billing.header_value(outcome.billable_seconds)
    return endpoint.output_model.model_validate(outcome.result)


def uploader(repository: str):
    def upload(data: bytes, fmt: AudioFormat) -> dict[str, Any]:
        from fal.toolkit import File

        fallback = ["fal"] if repository == DEFAULT_FILE_REPOSITORY else None
        stored = File.from_bytes(data, content_type=fmt.content_type, file_name=f"{uuid.uuid4().hex}{fmt.extension}",
                                 repository=repository, fallback_repository=fallback)
        return stored.model_dump()

    return upload


def print_progress(progress) -> None:
    print(progress.message, flush=True)  # runner stdout is the request's log stream on fal


def print_line(line: str) -> None:
    print(line, flush=True)


def sticky_gpu_faults() -> tuple[type[BaseException], ...]:
    """A sticky CUDA fault is raised to fal, which answers 503 and replaces the runner."""
    torch = sys.modules.get("torch")
    return (torch.AcceleratorError,) if torch is not None and hasattr(torch, "AcceleratorError") else ()


def release_gpu_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def add_error_handlers(app) -> None:
    """The failure policy's answers, and an undecodable JSON body as fal's unbilled 422 (not a bare 400)."""

    async def on_failed(request: Request, error: RequestFailed) -> JSONResponse:
        return protocol.failure_response(error.failure)

    async def on_undecodable(request: Request, error) -> JSONResponse:
        return protocol.field_error(["body"], f"Invalid request body: {error.detail}", "json_invalid")

    app.add_exception_handler(RequestFailed, on_failed)
    app.add_exception_handler(400, on_undecodable)  # status handlers run before fal's class handlers
