"""The lyrics-vs-duration warning: syllables per script, a brisk singing rate, never a refusal."""

from __future__ import annotations

import pytest

from acestep_app.cli import main
from acestep_app.quality.lyric_timing import alphabetic_syllables, duration_warning, fitting_duration, strip_structure, sung_time

LINES = [
    "Morning light across the floor",
    "Coffee steaming by the door",
    "Every window holds the sun",
    "Every shadow starts to run",
    "Take my hand and walk with me",
    "Down the road to where we'll be",
    "Singing softly through the rain",
    "Nothing here will stay the same",
]


def lyric(lines: int) -> str:
    """``lines`` sung lines (7-8 syllables each) in [verse]/[chorus] blocks of four."""
    blocks = []
    for start in range(0, lines, 4):
        tag = "[chorus]" if start // 4 % 2 else "[verse]"
        blocks.append("\n".join([tag, *(LINES[(start + i) % len(LINES)] for i in range(min(4, lines - start)))]))
    return "\n\n".join(blocks)


@pytest.mark.parametrize("word, syllables", [("time", 1), ("table", 2), ("coffee", 2), ("the", 1), ("rhythm", 1),
                                             ("beautiful", 3), ("corazón", 3), ("любовь", 2), ("a", 1)])
def test_alphabetic_syllables_are_vowel_groups(word, syllables):
    assert alphabetic_syllables(word) == syllables


def test_structure_tags_are_not_sung():
    assert strip_structure("[verse]\nla la\n[chorus: loud]\nla").split() == ["la", "la", "la"]
    assert sung_time("[inst]").syllables == 0 and duration_warning("[inst]", 5) is None


def test_each_script_has_its_own_syllables_and_rate():
    # seconds are syllables / rate in float64: exact up to rounding, approx's relative 1e-6
    assert sung_time("我爱你中国").syllables == 5 and sung_time("我爱你中国").seconds == pytest.approx(5 / 4)
    assert sung_time("きょうは").syllables == 3  # ょ joins the mora before it
    assert sung_time("東京へ行こう").seconds == pytest.approx(6 / 6)  # kanji in a kana line: read as Japanese
    assert sung_time("사랑해요").seconds == pytest.approx(4 / 5)
    mixed = sung_time("hello 你好")
    assert mixed.syllables == 4 and mixed.seconds == pytest.approx(2 / 4 + 2 / 4)


def test_forty_lines_in_ten_seconds_warns_with_a_duration_that_fits():
    estimate = sung_time(lyric(40))
    warning = duration_warning(lyric(40), 10)
    assert warning is not None and "10s requested" in warning
    assert f"about {fitting_duration(estimate.seconds):.0f}s would fit" in warning
    assert 60 < estimate.seconds < 90 and fitting_duration(estimate.seconds) % 5 == 0


def test_eight_lines_in_sixty_seconds_do_not_warn():
    assert duration_warning(lyric(8), 60) is None
    assert sung_time(lyric(8)).seconds < 20


def test_lyrics_too_long_for_any_duration_say_so():
    assert "shorten the lyrics" in duration_warning(lyric(200), 240)


@pytest.fixture(scope="module")
def checkpoint(tiny_weights):
    return tiny_weights


def generate(checkpoint, tmp_path, lines: int, duration: float) -> int:
    code = main(["generate", "--tags", "pop", "--lyrics", lyric(lines), "--weights", str(checkpoint),
                 "--duration", str(duration), "--steps", "3", "--seed", "1", "-o", str(tmp_path / "song.wav")])
    return code


def test_cli_warns_once_before_generating_and_still_generates(checkpoint, tmp_path, capsys):
    code = generate(checkpoint, tmp_path, lines=40, duration=10)
    captured = capsys.readouterr()
    assert code == 0 and (tmp_path / "song.wav").is_file()
    assert captured.err.count("warning: the lyrics") == 1 and "would fit" in captured.err


def test_cli_is_quiet_when_the_lyrics_fit(checkpoint, tmp_path, capsys, monkeypatch):
    from acestep_app.acestep_v1.engine import Engine
    from engine_double import EngineDouble

    monkeypatch.setattr(Engine, "load", lambda *args, **kwargs: EngineDouble())  # 60 s of tiny-model audio is slow
    code = generate(checkpoint, tmp_path, lines=8, duration=60)
    assert code == 0 and "warning: the lyrics" not in capsys.readouterr().err


def test_engine_logs_carry_the_warning(tiny_engine):
    from acestep_app.acestep_v1.schema import TextToAudioInput

    generation = tiny_engine.generate(TextToAudioInput(tags="pop", lyrics=lyric(40), duration=10, number_of_steps=3, seed=1))
    assert any(line.startswith("warning: the lyrics") for line in generation.logs)
    assert generation.waveform.size  # warned, not refused
