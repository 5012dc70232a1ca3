"""The ACE-Step endpoints on fal, one App per model family (fal publishes each family as its own app).

- ``AceStep``: ACE-Step v1, ``fal-ai/ace-step`` (``/prompt-to-audio``, ``/``, the editing sub-paths),
  under ``<owner>/<[fal].app_name>``;
- ``AceStep15``: ACE-Step 1.5, ``fal-ai/ace-step-1.5`` (``/``, ``/repaint``, ``/cover``), under
  ``<owner>/ace-step-1.5``.

``[app].families`` in infra.toml chooses what is deployed: ``python deploy/fal_app.py`` runs
``fal deploy deploy/fal_app.py::<App>`` for each family listed (``--dry-run`` prints the commands).
Each App is billed per second of returned audio through ``x-fal-billable-units``. fal runs the queue;
the endpoints, the engine call, errors and billing are ``acestep_app``'s (``acestep_app.hosts.fal``).
This file only declares the Apps and their deploy settings.

Deploy-time configuration (read on the deploying machine and shipped with the class):

- ``infra.toml`` (or the file named by ``$ACESTEP_INFRA``): machine type, GPUs, keep-alive,
  concurrency, request and startup timeouts and auth from ``[fal]``; the whole ``Settings`` object
  rides along as ``App.settings``, so the runner needs no copy of the file.
- ``pyproject.toml``: the runner installs ``[project].dependencies`` plus the ``fal`` extra as one
  cached layer, then this project (``.``, which fal builds into an sdist) on top.

The first cold start pulls the family's pinned files into fal's persistent ``/data`` in ``setup()``;
``[fal].startup_timeout`` (default 1800 s) covers that, later starts find the files verified and skip
the download.

Runtime switch: ``$ACESTEP_FAL_FILE_REPOSITORY`` picks where the audio is stored (default ``fal_v3``,
fal's CDN; ``in_memory`` returns a ``data:`` URL and needs no credentials, for ``fal run --local``
and the tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import ClassVar

import fal
from fal.toolkit import FAL_MODEL_WEIGHTS_DIR
from fastapi import Response
from pydantic import BaseModel

from acestep_app.engine.family import ModelFamily, get_family
from acestep_app.hosts import fal as fal_host
from acestep_app.serving.endpoints import Endpoint
from acestep_app.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FILE_REPOSITORY_ENV = "ACESTEP_FAL_FILE_REPOSITORY"
SETTINGS = Settings.load()
ACESTEP_V1 = get_family("acestep-v1").for_settings(SETTINGS)
ACESTEP_15 = get_family("acestep-1.5").for_settings(SETTINGS)


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


class FamilyApp(fal.App, keep_alive=SETTINGS.fal.keep_alive):
    """What every family's App shares: deploy settings from ``infra.toml``, one engine per runner."""

    family: ClassVar[ModelFamily]
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
            self.engine = self.family.load_engine(self.runner_settings)
            print(f"engine: {self.engine.describe()}", flush=True)
            self.engine.warmup()

    def _add_extra_middlewares(self, app) -> None:
        super()._add_extra_middlewares(app)
        fal_host.add_error_handlers(app)

    def serve(self, endpoint: Endpoint, request: BaseModel, response: Response) -> BaseModel:
        return fal_host.serve(endpoint, self.engine, self.runner_settings, request, response, self.file_repository)


@fal_host.with_endpoints(ACESTEP_V1, SETTINGS)
class AceStep(FamilyApp):
    """ACE-Step v1 text-to-music and editing (``fal-ai/ace-step``)."""

    app_name = SETTINGS.fal.app_name  # (a class attribute: the base class's would win over a name= keyword)
    family = ACESTEP_V1


@fal_host.with_endpoints(ACESTEP_15, SETTINGS)
class AceStep15(FamilyApp):
    """ACE-Step 1.5 text to music, repaint and cover (``fal-ai/ace-step-1.5``)."""

    app_name = ACESTEP_15.app_name
    family = ACESTEP_15


APPS = (AceStep, AceStep15)


def deploy_commands(settings: Settings = SETTINGS) -> list[list[str]]:
    """``fal deploy`` for the App of every family ``[app].families`` lists, primary first."""
    by_family = {app_class.family.name: app_class for app_class in APPS}
    return [["fal", "deploy", f"{Path(__file__).as_posix()}::{by_family[name].__name__}"]
            for name in settings.app.families]


if __name__ == "__main__":
    for command in deploy_commands():
        print(" ".join(command), flush=True)
        if "--dry-run" not in sys.argv:
            subprocess.run(command, check=True)
