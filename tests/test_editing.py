"""Editing tasks and the DCAE encode path against the reference's editing fixtures (same runner as the CLI)."""

import pytest
from conftest import SHARED_DIR

from acestep_app.devtools.parity import cases as parity

EDIT_CASES_DIR = SHARED_DIR / "fixtures" / "acestep-v1-tiny-edit" / "cases"
EDIT_CASES = [path.stem for path in parity.case_files(EDIT_CASES_DIR)]
GUIDED_CASES = [name for name in EDIT_CASES if not name.startswith("dcae_encode")]
RUNS = [(name, "sequential") for name in EDIT_CASES] + [(name, "batched") for name in GUIDED_CASES]


@pytest.fixture(scope="module")
def runners(tiny_checkpoint, lyric_vocab):
    sequential = parity.ParityRunner(tiny_checkpoint, lyric_vocab)
    batched = parity.ParityRunner(tiny_checkpoint, lyric_vocab, batched_guidance=True, pipelines=sequential.pipelines)
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


# -- the tasks on the tiny checkpoint, beyond the reference cases ----------------------------------------

import numpy as np  # noqa: E402
import torch  # noqa: E402

from acestep_app.acestep_v1 import editing  # noqa: E402
from acestep_app.acestep_v1.editing import AudioToAudio, Extend, FlowEdit, Repaint, Retake  # noqa: E402

TAGS, LYRICS = "lofi, piano", "[verse]\nla la la"
FAST = {"num_inference_steps": 3, "seed": 5}


@pytest.fixture(scope="module")
def pipeline(runners):
    return runners["sequential"].pipeline


def _clip(seconds: float, sample_rate: int = 44100, channels: int = 2, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy((0.3 * rng.standard_normal((channels, int(seconds * sample_rate)))).astype(np.float32))


def test_encode_audio_length_and_mono(pipeline):
    stereo = _clip(2.0)
    assert pipeline.encode_audio(stereo, 44100).shape == (1, 8, 16, 22)  # ceil(88200 / 4096)
    mono = stereo[:1]
    assert torch.equal(pipeline.encode_audio(mono, 44100), pipeline.encode_audio(mono.repeat(2, 1), 44100))
    with pytest.raises(ValueError, match="1 or 2 channels"):
        pipeline.encode_audio(_clip(1.0, channels=6), 44100)


def test_retake_weights_are_rounded_like_the_reference():
    cos, sin = editing.retake_weights(0.5, torch.bfloat16, "cpu")
    assert (cos.item(), sin.item()) == (0.70703125, 0.70703125)
    cos, sin = editing.retake_weights(1.0, torch.bfloat16, "cpu")
    assert (cos.item(), sin.item()) == (0.000484466552734375, 1.0)


def test_retake_with_no_variance_is_text2music(pipeline):
    plain = pipeline(TAGS, LYRICS, duration=1.5, decode=False, **FAST)
    retake = pipeline(TAGS, LYRICS, duration=1.5, decode=False, task=Retake(0.0, seed=9), **FAST)
    assert torch.equal(plain.latents, retake.latents)
    assert retake.retake_seeds == [9]


def test_repaint_keeps_the_frames_outside_the_range_exactly(pipeline):
    clip = _clip(3.0)
    source = pipeline.encode_audio(clip, 44100)
    out = pipeline(TAGS, LYRICS, decode=False, task=Repaint(clip, 44100, 1.0, 2.0, variance=0.7, seed=1), **FAST)
    assert out.latents.shape == source.shape
    assert torch.equal(out.latents[..., :10], source[..., :10]) and torch.equal(out.latents[..., 21:], source[..., 21:])
    assert not torch.equal(out.latents[..., 10:21], source[..., 10:21])


def test_repaint_runs_batched_items(pipeline):
    clip = _clip(2.0)
    out = pipeline(
        TAGS, LYRICS, batch_size=2, seed=[1, 2], num_inference_steps=2, decode=False,
        task=Repaint(clip, 44100, 0.5, 1.5, variance=1.0, seed=[3, 4]),
    )  # fmt: skip
    assert out.latents.shape[0] == 2 and not torch.equal(out.latents[0], out.latents[1])


def test_reference_repaint_ranges():
    assert editing.plan_repaint(0.0, 3.1, 33).retake  # fr covers the whole source
    assert editing.plan_repaint(2.0, 4.0, 33) == editing.RegionPlan(33, right_pad=10)  # past the end: extend
    assert editing.plan_repaint(-0.5, 3.5, 27) == editing.RegionPlan(27, left_pad=5, right_pad=5)  # Q8
    with pytest.raises(ValueError, match="negative right pad"):
        editing.plan_repaint(-1.0, 3.5, 33)


def test_extend_adds_both_sides_in_full_and_keeps_the_source(pipeline):
    clip = _clip(2.0)
    source = pipeline.encode_audio(clip, 44100)  # 22 frames
    out = pipeline(TAGS, LYRICS, decode=False, task=Extend(clip, 44100, before=1.0, after=1.0, seed=2), **FAST)
    left = editing.latent_frames(1.0)
    right = editing.latent_frames(2.0 + 1.0) - 22
    assert out.latents.shape[-1] == left + 22 + right
    assert torch.equal(out.latents[..., left : left + 22], source)


def test_extend_longer_than_the_source_does_not_crash(pipeline):
    clip = _clip(1.0)  # 11 frames
    out = pipeline(TAGS, LYRICS, decode=True, task=Extend(clip, 44100, before=2.0, after=3.0, seed=2), **FAST)
    assert out.latents.shape[-1] == editing.latent_frames(2.0) + 11 + editing.latent_frames(4.0) - 11
    assert torch.isfinite(out.waveforms).all()


def test_audio_to_audio_strength_edges(pipeline):
    clip = _clip(1.5)
    reference = pipeline.encode_audio(clip, 44100)
    full = pipeline(TAGS, LYRICS, decode=False, task=AudioToAudio(clip, 44100, strength=1.0), **FAST)
    assert torch.equal(full.latents, reference) and full.num_forwards == 0
    frames = reference.shape[-1]
    duration = (frames + 0.5) * 4096 / 44100
    plain = pipeline(TAGS, LYRICS, duration=duration, decode=False, **FAST)
    none = pipeline(TAGS, LYRICS, decode=False, task=AudioToAudio(clip, 44100, strength=0.0), **FAST)
    # same start noise and schedule; only the encoder's channels-last layout reaches the convolutions, which
    # reorders float32 sums: eps 1.2e-7 x latents ~5 x 24 blocks x 3 steps = 4e-5 (measured 2.4e-7)
    torch.testing.assert_close(none.latents, plain.latents, atol=1e-4, rtol=1e-4)


def test_audio_to_audio_schedule_numbers():
    sigma_max, sigma_min = editing.audio_to_audio_sigma_range(0.3)
    # float32 results: one ulp at 0.875 is 6e-8, at 0.003 it is 2.3e-10
    assert sigma_max == pytest.approx(0.87499994, abs=1e-7) and sigma_min == pytest.approx(0.0029940121, abs=1e-9)
    assert editing.audio_to_audio_steps(0.9, 60) == 5  # int() of 0.0999... * 60


def test_flow_edit_edges(pipeline):
    clip = _clip(1.5)
    source = pipeline.encode_audio(clip, 44100)
    untouched = pipeline(TAGS, LYRICS, decode=False, task=FlowEdit(clip, 44100, "jazz", "", n_min=1.0, seed=1), **FAST)
    assert torch.equal(untouched.latents, source) and untouched.num_forwards == 0
    with pytest.raises(ValueError, match="n_max >= n_min"):
        pipeline(TAGS, LYRICS, task=FlowEdit(clip, 44100, "jazz", "", n_min=0.6, n_max=0.2), **FAST)
    with pytest.raises(ValueError, match="one clip at a time"):
        pipeline(TAGS, LYRICS, batch_size=2, task=FlowEdit(clip, 44100, "jazz", ""), **FAST)


def test_flow_edit_forward_counts(pipeline):
    clip = _clip(1.5)
    task = FlowEdit(clip, 44100, "jazz", "[verse]\nbe bop", n_min=0.0, n_max=0.4, n_avg=2, seed=3)
    steps = {"num_inference_steps": 5, "seed": 1}
    batched = pipeline(TAGS, LYRICS, decode=False, batched_guidance=True, task=task, **steps)
    sequential = pipeline(TAGS, LYRICS, decode=False, batched_guidance=False, task=task, **steps)
    # 2 edit steps x 2 draws x (source + target), then 3 target-only steps; sequential doubles each
    assert batched.num_forwards == 2 * 2 * 2 + 3 and sequential.num_forwards == 2 * batched.num_forwards
    # batching reorders float32 sums: eps 1.2e-7 x latents ~5 x 24 blocks x 5 steps = 7e-5 (measured 5.7e-6)
    torch.testing.assert_close(batched.latents, sequential.latents, atol=1e-4, rtol=1e-4)


def test_progress_counts_the_steps_that_run(pipeline):
    seen = []
    clip = _clip(1.5)
    pipeline(
        TAGS, LYRICS, decode=False, num_inference_steps=10, callback=lambda step, total: seen.append((step, total)),
        task=Repaint(clip, 44100, 0.2, 1.0, variance=0.5),
    )  # fmt: skip
    assert seen == [(step, 5) for step in range(1, 6)]


def test_every_task_runs_in_bfloat16(tiny_checkpoint, lyric_vocab):
    """The GPU dtype: the encoder, the noise mixing and the masked/FlowEdit loops keep bf16 latents."""
    from acestep_app.acestep_v1.pipeline import AceStepPipeline

    bf16 = AceStepPipeline.from_pretrained(tiny_checkpoint, lyric_vocab=lyric_vocab, dtype=torch.bfloat16)
    clip = _clip(1.5, sample_rate=48000)
    tasks = [
        Repaint(clip, 48000, 0.2, 1.0, variance=0.5, seed=1),
        Extend(clip, 48000, before=0.5, after=0.5, seed=2),
        AudioToAudio(clip, 48000, strength=0.5),
        FlowEdit(clip, 48000, "jazz", "", n_min=0.0, n_max=0.5, seed=3),
    ]
    for task in tasks:
        out = bf16(TAGS, LYRICS, task=task, num_inference_steps=3, seed=1)
        assert out.latents.dtype == torch.bfloat16 and torch.isfinite(out.waveforms).all(), type(task).__name__


def test_inpaint_with_no_variance_is_the_source_with_heun_too(pipeline):
    clip = _clip(1.5)
    source = pipeline.encode_audio(clip, 44100)
    task = Repaint(clip, 44100, 0.2, 1.0, variance=0.0, within_source=True)
    out = pipeline(TAGS, LYRICS, decode=False, scheduler="heun", task=task, **FAST)
    assert torch.equal(out.latents, source) and out.num_forwards == 0
