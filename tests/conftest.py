"""Shared test fixtures: paths into ../shared (the spec data and the reference parity fixtures).

The shared folder sits beside the project root (CI has it too). A missing fixture is a failure,
never a skip: parity is the product.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("ACESTEP_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
TINY_DIR = SHARED_DIR / "fixtures" / "acestep-v1-tiny"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"required shared fixture missing: {path} (set ACESTEP_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED_DIR)


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """The reference-made tiny random checkpoint in the official folder layout."""
    return _require(TINY_DIR / "checkpoint")


@pytest.fixture(scope="session")
def cases_dir() -> Path:
    """Reference input/output cases for the tiny checkpoint (see its README)."""
    return _require(TINY_DIR / "cases")


@pytest.fixture(scope="session")
def lyric_vocab() -> Path:
    """The lyric tokenizer's vocabulary (upstream vocab.json), used from ../shared in tests."""
    return _require(SHARED_DIR / "spec" / "lyrics_vocab.json")
