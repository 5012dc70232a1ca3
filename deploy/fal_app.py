"""The ACE-Step endpoints on fal: ``fal deploy deploy/fal_app.py::AceStep``.

Publishes every endpoint of the ACE-Step v1 family (``acestep_app/acestep_v1/endpoints.py``) under ``<owner>/<[fal].app_name>``
(``/prompt-to-audio``, ``/``), billed per second of returned audio through ``x-fal-billable-units``.
fal runs the queue; the endpoints, the Engine call, errors and billing are ``acestep_app``'s
(``acestep_app.hosts.fal``). This file only declares the App and its deploy settings.

Deploy-time configuration (read on the deploying machine and shipped with the class):

- ``infra.toml`` (or the file named by ``$ACESTEP_INFRA``): machine type, GPUs, keep-alive,
  concurrency, request and startup timeouts and auth from ``[fal]``; the whole ``Settings`` object
  rides along as ``AceStep.settings``, so the runner needs no copy of the file.
- ``pyproject.toml``: the runner installs ``[project].dependencies`` plus the ``fal`` extra as one
  cached layer, then this project (``.``, which fal builds into an sdist) on top.

The first cold start pulls every pinned file (checkpoint and prompt LLM, ~16 GB) into fal's persistent
``/data`` in ``setup()``; ``[fal].startup_timeout`` (default 1800 s) covers that, later starts find
the files verified and skip the download.

Runtime switch: ``$ACESTEP_FAL_FILE_REPOSITORY`` picks where the audio is stored (default ``fal_v3``,
fal's CDN; ``in_memory`` returns a ``data:`` URL and needs no credentials, for ``fal run --local``
and the tests).
"""

from __future__ import annotations

import os
import tomllib
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import ClassVar

import fal
from fal.toolkit import FAL_MODEL_WEIGHTS_DIR
from fastapi import Response
from pydantic import BaseModel

from acestep_app.engine.family import get_family
from acestep_app.hosts import fal as fal_host
from acestep_app.serving.endpoints import Endpoint
from acestep_app.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FILE_REPOSITORY_ENV = "ACESTEP_FAL_FILE_REPOSITORY"
SETTINGS = Settings.load()
ACESTEP_V1 = get_family("acestep-v1")


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


@fal_host.with_endpoints(ACESTEP_V1, SETTINGS)
class AceStep(fal.App, name=SETTINGS.fal.app_name, keep_alive=SETTINGS.fal.keep_alive):
    """ACE-Step v1 text-to-music, one Engine per runner; deploy settings come from ``infra.toml``."""

    settings: ClassVar[Settings] = SETTINGS
    machine_type = SETTINGS.fal.machine_type
    num_gpus = SETTINGS.fal.num_gpus
    min_concurrency = SETTINGS.fal.min_concurrency
    max_concurrency = SETTINGS.fal.max_concurrency
    request_timeout = SETTINGS.fal.request_timeout
    startup_timeout = SETTINGS.fal.startup_timeout
    app_auth = SETTINGS.fal.app_auth
    requirements = runner_requirements()
    requirements_context_dir = str(PROJECT_ROOT)

    def setup(self) -> None:
        self.runner_settings = runner_settings(self.settings)
        self.file_repository = os.environ.get(FILE_REPOSITORY_ENV, fal_host.DEFAULT_FILE_REPOSITORY)
        with compile_cache(self.runner_settings):
            self.engine = ACESTEP_V1.load_engine(self.runner_settings)
            print(f"engine: {self.engine.describe()}", flush=True)
            self.engine.warmup()

    def _add_extra_middlewares(self, app) -> None:
        super()._add_extra_middlewares(app)
        fal_host.add_error_handlers(app)

    def serve(self, endpoint: Endpoint, request: BaseModel, response: Response) -> BaseModel:
        return fal_host.serve(endpoint, self.engine, self.runner_settings, request, response, self.file_repository)
