"""Editing tasks and the DCAE encode path against the reference's editing fixtures (same runner as the CLI)."""

import pytest
from conftest import SHARED_DIR

from acestep_app import parity

EDIT_CASES_DIR = SHARED_DIR / "fixtures" / "acestep-v1-tiny-edit" / "cases"
EDIT_CASES = [path.stem for path in parity.case_files(EDIT_CASES_DIR)]
GUIDED_CASES = [name for name in EDIT_CASES if not name.startswith("dcae_encode")]
RUNS = [(name, "sequential") for name in EDIT_CASES] + [(name, "batched") for name in GUIDED_CASES]


@pytest.fixture(scope="module")
def runners(tiny_checkpoint, lyric_vocab):
    sequential = parity.ParityRunner(tiny_checkpoint, lyric_vocab)
    batched = parity.ParityRunner(tiny_checkpoint, lyric_vocab, batched_guidance=True)
    batched._pipeline = sequential.pipeline  # one load; the flag lives on the runner
    return {"sequential": sequential, "batched": batched}


def test_edit_fixture_has_every_kind_of_case():
    for prefix in ("dcae_encode", "retake", "repaint", "extend", "edit", "audio2audio"):
        assert any(name.startswith(prefix) for name in EDIT_CASES), prefix


@pytest.mark.parametrize(("name", "mode"), RUNS)
def test_edit_reference_case(runners, name, mode):
    result = runners[mode].run(EDIT_CASES_DIR / f"{name}.json")
    assert result.error is None, result.error
    assert result.checks, "a case must compare something"
    assert result.passed, result.line()


def test_editing_cases_find_the_text2music_checkpoint(tiny_checkpoint):
    assert parity.default_checkpoint(EDIT_CASES_DIR).resolve() == tiny_checkpoint.resolve()
