"""Every shared reference case passes through `acestep_app.devtools.parity.cases`, the same code `acestep-app parity` runs."""

import pytest
from conftest import TINY_DIR

from acestep_app.devtools.parity import cases as parity
from acestep_app.devtools.parity.common import find_lyric_vocab
from acestep_app.cli import main

FIXTURE_CASES = [path.stem for path in parity.case_files(TINY_DIR / "cases")]


@pytest.fixture(scope="module")
def runner(tiny_checkpoint, lyric_vocab):
    return parity.ParityRunner(tiny_checkpoint, lyric_vocab)


def test_fixture_has_every_kind_of_case():
    assert len(FIXTURE_CASES) >= 18
    for expected in ("lyric_tokenizer", "text_encoder", "transformer_forward", "dcae_vocoder", "scheduler"):
        assert expected in FIXTURE_CASES


@pytest.mark.parametrize("name", FIXTURE_CASES)
def test_reference_case(runner, cases_dir, name):
    result = runner.run(cases_dir / f"{name}.json")
    assert result.error is None, result.error
    assert result.checks, "a case must compare something"
    assert result.passed, result.line()


def test_a_wrong_number_fails(runner, cases_dir, tmp_path):
    """The runner really compares: a perturbed reference tensor makes the case fail."""
    import json

    from safetensors.torch import load_file, save_file

    case = json.loads((cases_dir / "e2e_steps3.json").read_text())
    tensors = load_file(cases_dir / "e2e_steps3.safetensors")
    tensors["final_latents"] = tensors["final_latents"] + 0.01
    (tmp_path / "e2e_steps3.json").write_text(json.dumps(case))
    save_file(tensors, tmp_path / "e2e_steps3.safetensors")
    result = runner.run(tmp_path / "e2e_steps3.json")
    assert not result.passed
    assert "final_latents" in result.line()


def test_cli_prints_one_line_per_case_and_a_summary(tiny_checkpoint, lyric_vocab, cases_dir, capsys):
    code = main(["parity", str(cases_dir), "--checkpoint", str(tiny_checkpoint), "--lyric-vocab", str(lyric_vocab), "-k", "sched"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert lines[0].startswith("PASS scheduler")
    assert lines[-1] == "1 passed, 0 failed"


def test_cli_fails_on_an_empty_folder(tmp_path, capsys):
    assert main(["parity", str(tmp_path)]) == 1


def test_missing_lyric_vocab_is_a_clear_error(tiny_checkpoint, cases_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACESTEP_WEIGHTS_DIR", str(tmp_path / "empty-cache"))
    assert main(["parity", str(cases_dir), "--checkpoint", str(tiny_checkpoint), "-k", "sched"]) == 1
    assert "--lyric-vocab" in capsys.readouterr().out


def test_lyric_vocab_is_found_in_the_pulled_weights(tiny_checkpoint, lyric_vocab, tmp_path, monkeypatch):
    import shutil

    cache = tmp_path / "cache"
    (cache / "lyric_tokenizer").mkdir(parents=True)
    shutil.copy(lyric_vocab, cache / "lyric_tokenizer" / "vocab.json")
    monkeypatch.setenv("ACESTEP_WEIGHTS_DIR", str(cache))
    assert find_lyric_vocab(tiny_checkpoint) == cache / "lyric_tokenizer" / "vocab.json"
