"""Serve a fal App in-process the way a fal runner does, with no credentials and no network.

``App(_allow_init=True)._build_app()`` is fal's private way to build the runner's FastAPI app (with fal's
middlewares, error handlers and a lifespan that runs ``setup()``). This module is the only caller, and it
refuses a fal outside the range pinned in pyproject's ``fal`` extra, where that API was checked.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import fal
import pytest
from fastapi.testclient import TestClient
from packaging.requirements import Requirement

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CREDENTIAL_ENV = ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FAL_PROFILE")


def pinned_fal_requirement() -> Requirement:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return next(Requirement(r) for r in pyproject["project"]["optional-dependencies"]["fal"] if r.startswith("fal"))


def check_fal_version() -> None:
    requirement = pinned_fal_requirement()
    if fal.__version__ not in requirement.specifier:
        pytest.fail(f"fal {fal.__version__} is outside {requirement}: recheck App._build_app before widening the pin")


def load_module(path: Path, name: str, env: dict[str, str]) -> ModuleType:
    """Import a deploy file by path under ``env`` (its class attributes read settings at import, as on deploy)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


@contextmanager
def serve(app_class: type[fal.App], env: dict[str, str], home: Path) -> Iterator[tuple[fal.App, TestClient]]:
    """The App instance and a TestClient on it with ``setup()`` run, under ``env`` and no fal credentials."""
    check_fal_version()
    with pytest.MonkeyPatch.context() as patch:
        for key in CREDENTIAL_ENV:
            patch.delenv(key, raising=False)
        patch.setenv("FAL_HOME_DIR", str(home))
        for key, value in env.items():
            patch.setenv(key, value)
        app = app_class(_allow_init=True)
        with TestClient(app._build_app()) as client:  # entering runs the lifespan, i.e. setup()
            yield app, client
