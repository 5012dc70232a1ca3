"""Engine.edit on a tiny checkpoint: fal's audio-to-audio, inpaint and outpaint requests, and our decisions."""

import numpy as np
import pytest

from acestep_app.acestep_v1 import edit_requests
from acestep_app.audio.source import SourceAudio
from acestep_app.serving.billing import billable_seconds
from acestep_app.acestep_v1.editing import FlowEdit, latent_frames
from acestep_app.acestep_v1.engine import TINY_NOTICE, Engine
from acestep_app.errors import InputError
from acestep_app.acestep_v1.schema import AudioInpaintInput, AudioOutpaintInput, AudioToAudioInput
from acestep_app.settings import Settings

FAST = {"number_of_steps": 3, "seed": 11}


@pytest.fixture(scope="module")
def engine(tiny_weights):
    return Engine.load(Settings(), weights_dir=tiny_weights)


def _song(seconds: float = 3.0, sample_rate: int = 48000, seed: int = 0) -> SourceAudio:
    rng = np.random.default_rng(seed)
    return SourceAudio((0.2 * rng.standard_normal((2, int(seconds * sample_rate)))).astype(np.float32), sample_rate)


def _samples_48k(frames: int) -> int:
    return -(-frames * 4096 * 48000 // 44100)


def _plan(request, song: SourceAudio, seed: int = 11):
    import torch

    logs: list[str] = []
    plan = edit_requests.plan_edit(request, torch.from_numpy(song.waveform), song.sample_rate, seed, logs)
    return plan, logs


# -- mapping decisions ---------------------------------------------------------------------------------


def test_retake_seed_is_deterministic_and_never_the_seed():
    for seed in (0, 1, 11, 2**32 - 1, 2**31):
        assert edit_requests.retake_seed(seed) == (seed + 0x9E3779B9) % 2**32 != seed


def test_inpaint_times_relative_to_the_end_and_clamped():
    song = _song(4.0)
    request = AudioInpaintInput(
        audio_url="x", tags="rock", start_time=1.5, start_time_relative_to="end", end_time=30, **FAST
    )
    plan, logs = _plan(request, song)
    assert (plan.task.start, plan.task.end) == (2.5, 4.0) and plan.task.within_source
    assert plan.task.seed == edit_requests.retake_seed(11)
    assert any("clamped" in line for line in logs)


def test_inpaint_empty_range_is_a_field_error():
    request = AudioInpaintInput(audio_url="x", tags="rock", start_time=3.0, end_time=2.0, **FAST)
    with pytest.raises(InputError) as raised:
        _plan(request, _song(4.0))
    assert raised.value.field == "end_time"
    past_the_end = AudioInpaintInput(audio_url="x", tags="rock", start_time=10.0, end_time=20.0, **FAST)
    with pytest.raises(InputError):
        _plan(past_the_end, _song(4.0))


def test_outpaint_refuses_nothing_and_too_long():
    nothing = AudioOutpaintInput(audio_url="x", tags="rock", extend_after_duration=0.0, **FAST)
    with pytest.raises(InputError) as raised:
        _plan(nothing, _song(2.0))
    assert raised.value.field == "extend_after_duration"
    too_long = AudioOutpaintInput(
        audio_url="x", tags="rock", extend_before_duration=230.0, extend_after_duration=0, **FAST
    )
    with pytest.raises(InputError) as raised:
        _plan(too_long, _song(20.0, sample_rate=8000))
    assert raised.value.field == "extend_before_duration" and "at most 220.0 s" in raised.value.message


def test_audio_to_audio_keeps_the_original_when_the_target_is_empty():
    request = AudioToAudioInput(
        audio_url="x", original_tags="lofi", original_lyrics="[verse]\nold words", tags="", original_seed=4, **FAST
    )
    plan, logs = _plan(request, _song())
    assert isinstance(plan.task, FlowEdit)
    assert (plan.tags, plan.lyrics) == ("lofi", "[verse]\nold words")
    assert (plan.task.target_tags, plan.task.target_lyrics) == ("lofi", "[verse]\nold words")
    assert (plan.task.n_min, plan.task.n_max, plan.task.seed) == (0.2, 0.4, 11)
    assert any("original_seed" in line for line in logs)
    lyrics_mode = AudioToAudioInput(audio_url="x", original_tags="lofi", tags="jazz", edit_mode="lyrics", **FAST)
    assert (_plan(lyrics_mode, _song())[0].task.n_min, _plan(lyrics_mode, _song())[0].task.n_max) == (0.6, 1.0)


# -- end to end on the tiny checkpoint -------------------------------------------------------------------


def test_inpaint_at_fal_defaults_returns_the_source_length(engine):
    song = _song(3.0)
    generation = engine.edit(AudioInpaintInput(audio_url="x", tags="rock", lyrics="[verse]\nla", **FAST), song)
    frames = edit_requests.source_frames(song.waveform.shape[-1], song.sample_rate)
    assert generation.waveform.shape == (2, _samples_48k(frames)) and np.isfinite(generation.waveform).all()
    assert (generation.seed, generation.tags, generation.lyrics) == (11, "rock", "[verse]\nla")
    assert generation.billable_seconds == billable_seconds(generation.waveform.shape[-1], 48000)
    assert TINY_NOTICE in generation.logs


def test_inpaint_is_reproducible_and_variance_zero_is_the_source(engine):
    song = _song(2.0, seed=3)
    request = AudioInpaintInput(audio_url="x", tags="rock", start_time=0.5, end_time=1.5, **FAST)
    assert np.array_equal(engine.edit(request, song).waveform, engine.edit(request, song).waveform)
    still = engine.edit(request.model_copy(update={"variance": 0.0}), song)
    again = engine.edit(request.model_copy(update={"variance": 0.0, "seed": 99}), song)
    assert np.array_equal(still.waveform, again.waveform)  # no noise reaches the output


def test_outpaint_both_sides_longer_than_the_source(engine):
    song = _song(1.0)
    request = AudioOutpaintInput(
        audio_url="x", tags="rock", extend_before_duration=2.0, extend_after_duration=3.0, **FAST
    )
    generation = engine.edit(request, song)
    frames = edit_requests.source_frames(song.waveform.shape[-1], song.sample_rate)
    right = latent_frames(1.0 + 3.0) - frames
    assert generation.waveform.shape == (2, _samples_48k(latent_frames(2.0) + frames + right))
    assert generation.billable_seconds == pytest.approx(generation.duration, abs=1e-3)  # billed to the millisecond


def test_audio_to_audio_runs_and_reports_the_target(engine):
    request = AudioToAudioInput(
        audio_url="x", original_tags="lofi", tags="jazz, sax", lyrics="[verse]\nnew words", **FAST
    )
    generation = engine.edit(request, _song(2.0))
    assert (generation.tags, generation.lyrics, generation.seed) == ("jazz, sax", "[verse]\nnew words", 11)
    assert generation.num_forwards > 0


def test_progress_and_cancel(engine):
    seen = []
    request = AudioOutpaintInput(audio_url="x", tags="rock", extend_after_duration=1.0, **FAST)
    engine.edit(request, _song(1.0), seen.append)
    assert [p.step for p in seen] == [1, 2, 3] and seen[-1].total == 3

    def cancel(progress):
        raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        engine.edit(AudioInpaintInput(audio_url="x", tags="rock", **FAST), _song(1.0), cancel)
