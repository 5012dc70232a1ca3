"""The command line: `acestep-app generate` on the tiny checkpoint writes a valid WAV."""

import json
from pathlib import Path

import pytest
import soundfile

from acestep_app.cli import build_parser, main
from acestep_app.acestep_v1.pipeline import latent_frames


@pytest.fixture(scope="module")
def checkpoint(tiny_weights):
    return tiny_weights


@pytest.mark.parametrize("duration", [5.0, 12.5])
def test_generate_writes_a_wav_of_the_requested_duration(checkpoint, tmp_path, capsys, duration):
    out = tmp_path / "song.wav"
    code = main(["generate", "lofi beat for studying", "--weights", str(checkpoint), "--duration", str(duration),
                 "--steps", "3", "--seed", "11", "-o", str(out), "--json"])
    assert code == 0
    body = json.loads(capsys.readouterr().out)
    info = soundfile.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (48000, 2, "FLOAT")
    assert info.frames == -(-latent_frames(duration) * 4096 * 48000 // 44100)
    assert abs(info.duration - duration) < 0.1  # floored to the ~93 ms latent grid
    assert body["seed"] == 11 and body["tags"] and body["lyrics"]


def test_generate_with_tags_and_lyrics(checkpoint, tmp_path, capsys):
    out = tmp_path / "t.wav"
    assert main(["generate", "--tags", "rock, guitar", "--lyrics", "[inst]", "--weights", str(checkpoint),
                 "--duration", "5", "--steps", "3", "-o", str(out), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["tags"], body["lyrics"]) == ("rock, guitar", "[inst]")


@pytest.mark.parametrize(
    "argv, field",
    [(["x", "--duration", "2"], "duration"), (["x", "--steps", "100"], "number_of_steps"),
     (["x", "--scheduler", "ddim"], "scheduler"), ([], "prompt")],
)
def test_generate_rejects_bad_input_naming_the_field(argv, field, capsys):
    assert main(["generate", *argv]) == 2
    assert field in capsys.readouterr().err


def test_every_schema_parameter_is_an_option():
    from acestep_app.acestep_v1.schema import PromptToAudioInput

    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    dests = {action.dest for action in generate._actions}
    assert set(PromptToAudioInput.model_fields) <= dests


def test_without_weights_the_tiny_demo_is_written_and_announced(tmp_path, monkeypatch, caplog):
    from acestep_app.cli.common import DEMO_NOTICE
    from acestep_app.acestep_v1.tiny import TINY_MARKER

    monkeypatch.setenv("ACESTEP_WEIGHTS_DIR", str(tmp_path / "weights"))  # an empty pull cache
    monkeypatch.delenv("ACESTEP_INFRA", raising=False)
    out = tmp_path / "demo.wav"
    with caplog.at_level("WARNING"):
        assert main(["generate", "a song", "--duration", "5", "--steps", "3", "-o", str(out)]) == 0
    assert (tmp_path / "tiny" / "acestep-v1" / TINY_MARKER).is_file()
    assert DEMO_NOTICE in caplog.text
    assert soundfile.info(str(out)).samplerate == 48000


def test_serve_without_weights_uses_the_demo(tmp_path, monkeypatch):
    from acestep_app.cli.common import choose_weights
    from acestep_app.settings import Settings

    monkeypatch.setenv("ACESTEP_WEIGHTS_DIR", str(tmp_path / "weights"))
    settings = Settings()
    assert choose_weights(settings, None, tiny=False) == str(tmp_path / "tiny" / "acestep-v1")
    assert choose_weights(settings, "/models/ace", tiny=False) == "/models/ace"
    (tmp_path / "weights" / "ace_step_transformer").mkdir(parents=True)
    assert choose_weights(settings, None, tiny=False) is None  # the pulled weights, via the settings


def test_engine_switches_override_infra_toml(checkpoint, tmp_path, capsys):
    from acestep_app.cli.common import apply_engine_options
    from acestep_app.settings import Settings

    args = build_parser().parse_args(["generate", "x", "--no-batched-guidance", "--dtype", "bfloat16",
                                      "--compile", "--decode-chunk-frames", "64", "--no-cross-attention-cache",
                                      "--threads", "3"])
    engine = apply_engine_options(Settings(), args).engine
    assert (engine.batched_guidance, engine.dtype, engine.compile, engine.decode_chunk_frames) == (False, "bfloat16", True, 64)
    assert (engine.cross_attention_cache, engine.threads) == (False, 3)
    untouched = apply_engine_options(Settings(), build_parser().parse_args(["generate", "x"])).engine
    assert untouched == Settings().engine
    out = tmp_path / "seq.wav"
    assert main(["generate", "--tags", "pop", "--weights", str(checkpoint), "--duration", "5", "--steps", "3",
                 "--no-batched-guidance", "--decode-chunk-frames", "auto", "-o", str(out)]) == 0
    assert soundfile.info(str(out)).channels == 2


# -- a checkpoint in the official layout has no lyric vocabulary -----------------------------------


@pytest.fixture(scope="module")
def official_layout(tiny_weights, tmp_path_factory):
    """A checkpoint folder as Hugging Face ships ACE-Step-v1-3.5B: no lyric_tokenizer/vocab.json."""
    import shutil

    folder = Path(shutil.copytree(tiny_weights, tmp_path_factory.mktemp("official") / "checkpoint"))
    (folder / "lyric_tokenizer" / "vocab.json").unlink()
    return folder


def check_vocab_message(text: str, folder) -> None:
    assert str(folder / "lyric_tokenizer" / "vocab.json") in text
    assert "acestep-app weights pull --only lyric_vocab" in text and "[engine].lyric_vocab" in text
    assert "Traceback" not in text


def test_generate_on_an_official_layout_without_vocab_names_the_path_and_both_fixes(
        official_layout, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ACESTEP_WEIGHTS_DIR", str(tmp_path / "empty-cache"))
    assert main(["generate", "x", "--weights", str(official_layout), "-o", str(tmp_path / "x.wav")]) == 1
    check_vocab_message(caplog.text, official_layout)
    assert not (tmp_path / "x.wav").exists()


def test_serve_on_an_official_layout_without_vocab_exits_with_the_clear_message(official_layout, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "ACESTEP_WEIGHTS_DIR": str(tmp_path / "empty-cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "acestep_app.cli", "serve", "--weights", str(official_layout),
                           "--data-dir", str(tmp_path / "data"), "--port", "0"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parents[1])
    assert done.returncode == 1
    check_vocab_message(done.stdout + done.stderr, official_layout)


def test_both_fixes_work(official_layout, lyric_vocab, tmp_path, monkeypatch):
    """``[engine].lyric_vocab``, or the vocabulary ``weights pull --only lyric_vocab`` puts in the cache."""
    import shutil

    from acestep_app.settings import Settings
    from acestep_app.weights.store import LYRIC_VOCAB_PATH, Manifest, find_lyric_vocab

    assert "lyric_vocab" in Manifest.load().names()
    assert build_parser().parse_args(["weights", "pull", "--only", "lyric_vocab"]).only == ["lyric_vocab"]
    configured = Settings.from_dict({"engine": {"lyric_vocab": str(lyric_vocab)}})
    assert find_lyric_vocab(official_layout, configured) == lyric_vocab
    cache = tmp_path / "cache"
    (cache / LYRIC_VOCAB_PATH).parent.mkdir(parents=True)
    shutil.copy(lyric_vocab, cache / LYRIC_VOCAB_PATH)
    monkeypatch.setenv("ACESTEP_WEIGHTS_DIR", str(cache))
    assert find_lyric_vocab(official_layout, Settings()) == cache / LYRIC_VOCAB_PATH
