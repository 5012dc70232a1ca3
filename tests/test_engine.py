"""The Engine on a tiny checkpoint: the one core behind fal, Modal, the local server and the CLI."""

import io

import numpy as np
import pytest
import soundfile

from acestep_app.serving.billing import billable_seconds
from acestep_app.acestep_v1.engine import INSTRUMENTAL_LYRICS, TINY_NOTICE, Engine
from acestep_app.acestep_v1.pipeline import latent_frames
from acestep_app.acestep_v1.schema import PromptToAudioInput, TextToAudioInput
from acestep_app.settings import Settings

SHORT = {"duration": 5, "number_of_steps": 3}


@pytest.fixture(scope="module")
def engine(tiny_weights):
    return Engine.load(Settings(), weights_dir=tiny_weights)


def test_text_to_audio_returns_48k_stereo_of_the_latent_length(engine):
    generation = engine.generate(TextToAudioInput(tags="lofi, piano", lyrics="[verse]\nla la", seed=7, **SHORT))
    expected_samples = -(-latent_frames(5) * 4096 * 48000 // 44100)  # ceil, as the resampler does
    assert generation.waveform.shape == (2, expected_samples)
    assert generation.waveform.dtype == np.float32 and np.isfinite(generation.waveform).all()
    assert generation.sample_rate == 48000
    assert (generation.seed, generation.tags, generation.lyrics) == (7, "lofi, piano", "[verse]\nla la")
    # billed to the millisecond: 236,287 samples at 48 kHz are 4.92265 s
    assert generation.billable_seconds == billable_seconds(expected_samples, 48000) == pytest.approx(4.923, abs=1e-3)


def test_same_seed_same_audio_and_the_drawn_seed_is_returned(engine, fixed_seeds):
    request = TextToAudioInput(tags="rock", seed=123, **SHORT)
    first, second = engine.generate(request), engine.generate(request)
    assert np.array_equal(first.waveform, second.waveform)
    unseeded = engine.generate(TextToAudioInput(tags="rock", **SHORT))
    assert unseeded.seed == 1  # the first seed fixed_seeds hands out
    replay = engine.generate(TextToAudioInput(tags="rock", seed=unseeded.seed, **SHORT))
    assert np.array_equal(unseeded.waveform, replay.waveform)


def test_prompt_to_audio_writes_tags_and_lyrics_and_says_how(engine):
    generation = engine.generate(PromptToAudioInput(prompt="dreamy synthwave about night drives", seed=1, **SHORT))
    assert generation.tags and "[" in generation.lyrics
    assert any("fallback" in line for line in generation.logs)
    assert TINY_NOTICE in generation.logs


def test_instrumental_prompt_uses_the_inst_lyric(engine):
    generation = engine.generate(PromptToAudioInput(prompt="ambient drone", instrumental=True, seed=2, **SHORT))
    assert generation.lyrics == INSTRUMENTAL_LYRICS


def test_progress_reports_every_step_and_can_cancel(engine):
    seen = []
    engine.generate(TextToAudioInput(tags="jazz", seed=3, scheduler="heun", **SHORT), seen.append)
    assert [p.step for p in seen] == list(range(1, 6)) and seen[-1].total == 5  # heun: 2N - 1 evaluations

    class Cancelled(Exception):
        pass

    def cancel(progress):
        raise Cancelled

    with pytest.raises(Cancelled):
        engine.generate(TextToAudioInput(tags="jazz", seed=3, **SHORT), cancel)
    assert engine.generate(TextToAudioInput(tags="jazz", seed=3, **SHORT)).waveform.size  # still serving


def test_batched_and_sequential_guidance_agree(engine):
    request = TextToAudioInput(tags="funk, 105 bpm", lyrics="[chorus]\noh oh", seed=5, **SHORT)
    batched = engine.generate(request)
    engine.settings = engine.settings.model_copy(
        update={"engine": engine.settings.engine.model_copy(update={"batched_guidance": False})}
    )
    try:
        sequential = engine.generate(request)
    finally:
        engine.settings = engine.settings.model_copy(
            update={"engine": engine.settings.engine.model_copy(update={"batched_guidance": True})}
        )
    assert sequential.num_forwards > batched.num_forwards == 3
    # Batching reorders float32 sums: latents ~5 move by eps 1.2e-7 x 5 x 24 blocks x 3 steps = 4e-5 at most
    # (1e-5 relative), and the decoder grows a relative difference up to ~10x (test_takes) on a waveform
    # of ~0.2: ~2e-5 (measured 1.7e-7).
    np.testing.assert_allclose(batched.waveform, sequential.waveform, atol=1e-4)


def test_wav_bytes_is_a_float_wav(engine):
    generation = engine.generate(TextToAudioInput(tags="pop", seed=9, **SHORT))
    data, rate = soundfile.read(io.BytesIO(engine.wav_bytes(generation)), dtype="float32")
    assert rate == 48000 and data.shape == generation.waveform.T.shape
    np.testing.assert_array_equal(data, generation.waveform.T)


def test_describe_reports_the_tiny_checkpoint(engine):
    info = engine.describe()
    assert info["is_tiny"] is True and info["device"] == "cpu" and info["dtype"] == "float32"


def test_shared_fixture_checkpoint_loads_with_an_explicit_vocab(tiny_checkpoint, lyric_vocab):
    settings = Settings.from_dict({"engine": {"weights_dir": str(tiny_checkpoint), "lyric_vocab": str(lyric_vocab)}})
    engine = Engine.load(settings)
    assert engine.is_tiny
    assert engine.generate(TextToAudioInput(tags="pop", lyrics="[inst]", seed=0, **SHORT)).waveform.shape[0] == 2


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from acestep_app.errors import WeightsError

    with pytest.raises(WeightsError, match="no ACE-Step checkpoint"):
        Engine.load(Settings(), weights_dir=tmp_path)


def test_only_the_needed_weights_are_pulled():
    from acestep_app.acestep_v1.engine import needed_weight_entries
    from acestep_app.weights.store import Manifest

    assert set(needed_weight_entries(Settings())) == set(Manifest.load().names()) - {"asr"}
    for update in ({"prompt_backend": "openai"}, {"prompt_backend": "fallback"}, {"llm_dir": "/models/qwen"}):
        settings = Settings.from_dict({"engine": update})
        assert needed_weight_entries(settings) == ["acestep", "lyric_vocab"]
    ranked = Settings.from_dict({"quality": {"takes": 4}})
    assert set(needed_weight_entries(ranked)) == set(Manifest.load().names())  # the ASR model only with takes > 1
    assert "asr" not in needed_weight_entries(Settings.from_dict({"quality": {"takes": 4, "asr_dir": "/models/asr"}}))


def test_warmup_runs_the_whole_prompt_to_audio_path(engine, monkeypatch):
    requests = []
    original = engine.generate
    monkeypatch.setattr(engine, "generate", lambda request, on_progress=None: requests.append(request) or original(request))
    engine.warmup()
    assert len(requests) == 1 and isinstance(requests[0], PromptToAudioInput)
