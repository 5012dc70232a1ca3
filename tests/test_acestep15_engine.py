"""The ACE-Step 1.5 engine on the tiny checkpoint: lyrics, thinking, warnings, takes, repaint and cover.

Comparisons are between runs of the same float32 CPU code in this process (deterministic: equal
means bit-equal).
"""

from __future__ import annotations

import numpy as np
import pytest

from acestep_app.acestep_15.engine import AceStep15Engine, repaint_window
from acestep_app.acestep_15.generation import Renderer
from acestep_app.acestep_15.schema import INSTRUMENTAL, CoverInput, RepaintInput, TextToMusicInput
from acestep_app.audio.source import SourceAudio
from acestep_app.errors import InputError
from acestep_app.settings import Settings

CAPTION = "warm lo-fi hip hop, mellow keys"
LYRICS = "[verse]\nslow rain on the window pane\n[chorus]\nstay a while"


def _settings(tmp_path, **sections) -> Settings:
    values = {"engine": {"prompt_backend": "fallback", "device": "cpu"}, "weights": {"cache_dir": str(tmp_path)}}
    values.update(sections)
    return Settings.from_dict(values)


@pytest.fixture(scope="module")
def engine(tiny15_checkpoint, tmp_path_factory):
    """No planner (``planner = "none"``): what a deployment without the 5 Hz LM serves."""
    settings = _settings(tmp_path_factory.mktemp("cache"), models={"acestep-1.5": {"planner": "none"}})
    return AceStep15Engine.load(settings, weights_dir=tiny15_checkpoint)


def _song(seconds: float = 1.0, rate: int = 24000) -> SourceAudio:  # 24 kHz: a cheap 1:2 resample
    time = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 330 * time)).astype(np.float32)
    return SourceAudio(np.stack([tone, tone]), rate)


def test_text_to_music_with_lyrics_renders_what_the_pipeline_renders(engine):
    request = TextToMusicInput(prompt=CAPTION, lyrics=LYRICS, duration=1.0, num_inference_steps=3, seed=11)
    generation = engine.text_to_music(request)
    expected = Renderer(engine.pipeline)(seed=[11], prompt=CAPTION, lyrics=LYRICS, audio_duration=1.0,
                                         num_inference_steps=3).waveforms[0]
    assert np.array_equal(generation.waveform, expected)
    assert generation.seed == 11 and generation.lyrics == LYRICS and generation.tags == CAPTION
    # 25 latents x 1920 samples = 48000 samples at 48 kHz: one second; approx only for the float division
    assert generation.num_forwards == 3 and generation.billable_seconds == pytest.approx(1.0)
    assert generation.extra == {"prompt": CAPTION, "bpm": None, "key_scale": None, "time_signature": None,
                                "vocal_language": "en"}
    assert any("noise" in line for line in generation.logs)  # the tiny checkpoint says so


def test_a_prompt_alone_gets_the_song_writers_lyrics_and_instrumental_is_kept(engine):
    written = engine.text_to_music(TextToMusicInput(prompt=CAPTION, duration=1.0, num_inference_steps=2, seed=1))
    assert written.lyrics.startswith("[verse]") and any("fallback" in line for line in written.logs)
    instrumental = engine.text_to_music(TextToMusicInput(prompt=CAPTION, lyrics=INSTRUMENTAL, duration=1.0,
                                                         num_inference_steps=2, seed=1))
    assert instrumental.lyrics == INSTRUMENTAL and not any("fallback" in line for line in instrumental.logs)


def test_metadata_reaches_the_dit_and_the_response(engine):
    request = TextToMusicInput(prompt=CAPTION, lyrics=LYRICS, duration=1.0, num_inference_steps=2, seed=3, bpm=96,
                               key_scale="F# minor", time_signature="3", vocal_language="ja")
    generation = engine.text_to_music(request)
    expected = Renderer(engine.pipeline)(seed=[3], prompt=CAPTION, lyrics=LYRICS, audio_duration=1.0,
                                         num_inference_steps=2, bpm=96, keyscale="F# minor", timesignature="3",
                                         vocal_language="ja").waveforms[0]
    assert np.array_equal(generation.waveform, expected)
    assert generation.extra["bpm"] == 96 and generation.extra["key_scale"] == "F# minor"


def test_thinking_without_a_planner_is_refused_naming_the_field(engine):
    with pytest.raises(InputError) as raised:
        engine.text_to_music(TextToMusicInput(prompt=CAPTION, lyrics=LYRICS, duration=1.0, thinking=True))
    assert raised.value.field == "thinking" and "planner" in raised.value.message


def test_thinking_hands_the_planners_metadata_and_codes_to_the_dit(tiny15_checkpoint, tmp_path):
    engine = AceStep15Engine.load(_settings(tmp_path), weights_dir=tiny15_checkpoint)  # the tiny planner LM
    request = TextToMusicInput(prompt=CAPTION, lyrics=LYRICS, duration=2.0, thinking=True, num_inference_steps=2,
                               seed=8, bpm=100)
    generation = engine.text_to_music(request)
    assert engine.describe()["planner"] and generation.extra["bpm"] == 100  # given metadata is kept
    assert "bpm" not in generation.extra["planned"] and generation.extra["audio_code_count"] == 10
    # the DiT renders the codes' length: 5 codes per second, 25 latents per second, 1920 samples each
    assert generation.duration == pytest.approx(2.0, abs=0.2)
    again = engine.text_to_music(request)
    assert np.array_equal(again.waveform, generation.waveform)  # the seed drives the planner too


def test_lyrics_longer_than_the_duration_are_warned_about(engine):
    long_lyrics = "[verse]\n" + "\n".join(["walking down the empty street tonight under neon light"] * 12)
    generation = engine.text_to_music(TextToMusicInput(prompt=CAPTION, lyrics=long_lyrics, duration=2.0,
                                                       num_inference_steps=2, seed=1))
    assert any(line.startswith("warning: the lyrics") for line in generation.logs)


def test_takes_sample_several_seeds_and_return_one(tiny15_checkpoint, tmp_path):
    engine = AceStep15Engine.load(_settings(tmp_path, quality={"takes": 2}), weights_dir=tiny15_checkpoint)
    generation = engine.text_to_music(TextToMusicInput(prompt=CAPTION, lyrics=LYRICS, duration=1.0,
                                                       num_inference_steps=2))
    assert len(generation.takes) == 2 and generation.seed == generation.takes[0].seed
    assert any("takes not ranked" in line for line in generation.logs)  # the tiny checkpoint has no ASR model
    replay = engine.text_to_music(TextToMusicInput(prompt=CAPTION, lyrics=LYRICS, duration=1.0,
                                                   num_inference_steps=2, seed=generation.seed))
    assert np.array_equal(replay.waveform, generation.waveform)


def test_repaint_keeps_the_length_and_replays_from_its_seed(engine):
    request = RepaintInput(source_audio_url="unused", prompt=CAPTION, lyrics=LYRICS, start_time=0.2, end_time=0.6,
                           num_inference_steps=2, seed=4)
    first, again = engine.repaint(request, _song()), engine.repaint(request, _song())
    assert first.waveform.shape == (2, engine.renderer.sample_rate)  # the source, resampled to 48 kHz
    assert np.array_equal(first.waveform, again.waveform) and first.num_forwards == 2
    partial = engine.repaint(request.model_copy(update={"repaint_strength": 0.5}), _song())
    assert not np.array_equal(partial.waveform, first.waveform)


@pytest.mark.parametrize(("start", "end", "field"), [(1.5, -1.0, "start_time"), (0.5, 0.4, "end_time")])
def test_repaint_spans_outside_the_song_are_refused(start, end, field):
    request = RepaintInput(source_audio_url="unused", prompt=CAPTION, start_time=start, end_time=end)
    with pytest.raises(InputError) as raised:
        repaint_window(request, 1.0)
    assert raised.value.field == field
    assert repaint_window(request.model_copy(update={"start_time": 0.2, "end_time": 5.0}), 1.0) == (0.2, None)


def test_cover_takes_the_requested_length_and_a_timbre_reference(engine):
    request = CoverInput(source_audio_url="unused", prompt=CAPTION, lyrics=LYRICS, duration=0.8, cover_strength=0.5,
                         num_inference_steps=2, seed=6)
    generation = engine.cover(request, _song(), _song(0.5, 16000))
    assert generation.waveform.shape == (2, int(0.8 * engine.renderer.sample_rate))
    assert generation.num_forwards == 4  # cover strength < 1 adds a text-only pass per step


def test_describe_names_the_variant_and_the_checkpoint(engine, tiny15_checkpoint):
    described = engine.describe()
    assert described["variant"] == "turbo" and described["is_turbo"] and described["is_tiny"]
    assert described["weights_dir"] == str(tiny15_checkpoint) and described["cover"] and described["planner"] is None


def test_the_pulled_entries_follow_the_variant_and_the_planner():
    from acestep_app.acestep_15.settings import weight_entries
    from acestep_app.weights.store import Manifest

    def entries(**models) -> list[str]:
        return weight_entries(Settings.from_dict({"models": {"acestep-1.5": models}}))

    assert entries() == ["acestep15", "acestep15_lm"]  # the turbo DiT is in the shared snapshot
    assert entries(variant="sft", planner="4B") == ["acestep15", "acestep15_sft", "acestep15_lm_4b"]
    assert entries(variant="xl-turbo", planner="none") == ["acestep15", "acestep15_xl_turbo"]
    assert entries(weights_dir="/models/acestep-1.5") == []
    names = set(Manifest.load().names())
    for variant in ("turbo", "turbo-shift1", "turbo-shift3", "sft", "base", "xl-turbo"):
        for planner in ("0.6B", "1.7B", "4B"):
            assert set(entries(variant=variant, planner=planner)) <= names
