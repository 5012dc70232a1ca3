"""ACE-Step 1.5 on diffusers' AceStepPipeline: both checkpoint layouts, the key mapping, seeds, tasks.

Every comparison here is between runs of the same float32 CPU code on the same inputs, which are
deterministic: equal means bit-equal unless a tolerance says why not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acestep_app.acestep_15 import checkpoint
from acestep_app.acestep_15.generation import Renderer, stereo_tensor, strength_schedule
from acestep_app.acestep_15.tiny import DIFFUSERS_FOLDER, SAMPLE_RATE, TINY_MARKER
from acestep_app.errors import WeightsError

CAPTION = "dreamy synth-pop, female vocal"
LYRICS = "[verse]\nneon rivers in the night\n[chorus]\nhold on"
MODULES = ("transformer", "condition_encoder", "audio_tokenizer", "audio_token_detokenizer")


@pytest.fixture(scope="module")
def pipelines(tiny15_checkpoint):
    from diffusers import AceStepPipeline

    reference = AceStepPipeline.from_pretrained(tiny15_checkpoint / DIFFUSERS_FOLDER)
    return reference, checkpoint.load_pipeline(tiny15_checkpoint), checkpoint.load_pipeline(
        tiny15_checkpoint / DIFFUSERS_FOLDER)


def _reference_audio(pipeline, seed: int, **arguments) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipeline(generator=generator, **arguments).audios[0].numpy()


def test_make_tiny_writes_both_layouts(tiny15_checkpoint):
    official = checkpoint.find_layout(tiny15_checkpoint)
    assert (official.kind, official.dit_folder) == ("official", checkpoint.DEFAULT_DIT_FOLDER)
    for name in ("config.json", "model.safetensors", "silence_latent.pt"):
        assert (official.dit_dir / name).is_file()
    assert (tiny15_checkpoint / "vae" / "config.json").is_file()
    assert (tiny15_checkpoint / "Qwen3-Embedding-0.6B" / "tokenizer.json").is_file()
    assert checkpoint.find_layout(tiny15_checkpoint / DIFFUSERS_FOLDER).kind == "diffusers"
    assert (tiny15_checkpoint / TINY_MARKER).is_file() and (tiny15_checkpoint / DIFFUSERS_FOLDER / TINY_MARKER).is_file()
    silence = torch.load(official.dit_dir / "silence_latent.pt", weights_only=True)
    assert silence.shape == (1, 8, 15000)  # stored [1, C, T] like the official file


def test_official_layout_loads_the_same_modules_as_the_diffusers_layout(pipelines):
    reference, official, diffusers_layout = pipelines
    for loaded in (official, diffusers_layout):
        for name in MODULES:
            expected, actual = getattr(reference, name).state_dict(), getattr(loaded, name).state_dict()
            assert expected.keys() == actual.keys(), name
            for key in expected:
                assert torch.equal(expected[key], actual[key]), f"{name}.{key}"
        assert torch.equal(
            torch.cat([p.flatten() for p in reference.text_encoder.parameters()]),
            torch.cat([p.flatten() for p in loaded.text_encoder.parameters()]),
        )
        assert loaded.is_turbo and loaded.sample_rate == SAMPLE_RATE and loaded.latents_per_second == 25


def test_both_layouts_render_what_diffusers_renders(pipelines):
    reference, official, diffusers_layout = pipelines
    arguments = {"prompt": CAPTION, "lyrics": LYRICS, "audio_duration": 1.0, "num_inference_steps": 3}
    expected = _reference_audio(reference, 7, **arguments)
    for loaded in (official, diffusers_layout):
        rendered = Renderer(loaded)(seed=[7], **arguments)
        assert np.array_equal(rendered.waveforms[0], expected)
        assert rendered.num_forwards == 3 and rendered.sample_rate == SAMPLE_RATE
    assert expected.shape == (2, SAMPLE_RATE)


def test_official_keys_map_onto_diffusers_names():
    tensor = torch.zeros(1)
    official = {
        "decoder.layers.0.self_attn.q_proj.weight": tensor,
        "decoder.layers.0.cross_attn.o_proj.weight": tensor,
        "decoder.layers.0.self_attn.k_norm.weight": tensor,
        "decoder.proj_in.1.weight": tensor,
        "decoder.proj_out.1.bias": tensor,
        "encoder.lyric_encoder.layers.3.self_attn.v_proj.weight": tensor,
        "encoder.text_projector.weight": tensor,
        "tokenizer.attention_pooler.layers.0.self_attn.q_norm.weight": tensor,
        "detokenizer.proj_out.weight": tensor,
        "null_condition_emb": tensor,
    }
    components = checkpoint.split_official_state_dict(official)
    assert sorted(components["transformer"]) == [
        "layers.0.cross_attn.to_out.0.weight", "layers.0.self_attn.norm_k.weight", "layers.0.self_attn.to_q.weight",
        "proj_in_conv.weight", "proj_out_conv.bias",
    ]  # fmt: skip
    assert sorted(components["condition_encoder"]) == [
        "lyric_encoder.layers.3.self_attn.to_v.weight", "null_condition_emb", "text_projector.weight"]
    assert list(components["audio_tokenizer"]) == ["attention_pooler.layers.0.self_attn.norm_q.weight"]
    assert list(components["audio_token_detokenizer"]) == ["proj_out.weight"]  # not the DiT's proj_out.1
    assert checkpoint.join_official_state_dict(components).keys() == official.keys()


def test_unknown_official_keys_are_refused():
    with pytest.raises(WeightsError, match="no known module"):
        checkpoint.split_official_state_dict({"decoder.x": torch.zeros(1), "lm_head.weight": torch.zeros(1)})


def test_an_official_dit_folder_without_its_silence_latent_is_refused(tiny15_checkpoint, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny15_checkpoint, copy, ignore=shutil.ignore_patterns(DIFFUSERS_FOLDER))
    (copy / checkpoint.DEFAULT_DIT_FOLDER / "silence_latent.pt").unlink()
    with pytest.raises(WeightsError, match="silence_latent.pt is missing"):
        checkpoint.load_pipeline(copy)
    with pytest.raises(WeightsError, match="not an ACE-Step 1.5 checkpoint"):
        checkpoint.find_layout(tmp_path / "nothing")


def test_batched_takes_render_each_seed_as_its_single_take(pipelines):
    _, official, _ = pipelines
    renderer, arguments = Renderer(official), {"prompt": CAPTION, "lyrics": LYRICS, "audio_duration": 0.6,
                                               "num_inference_steps": 2}
    batched = renderer(seed=[3, 4], batch_size=2, **arguments)
    singles = [renderer(seed=[seed], **arguments).waveforms[0] for seed in (3, 4)]
    assert batched.seeds == [3, 4] and batched.num_forwards == 2
    for row, single in zip(batched.waveforms, singles):
        # Same noise per row; batch size changes only GEMM blocking: float32 rounding (~1e-7 relative) through
        # a 2-layer DiT, the VAE decoder and the peak normalisation leaves differences far below 1e-4.
        np.testing.assert_allclose(row, single, atol=1e-4)
    assert not np.allclose(singles[0], singles[1])


def test_steps_are_reported_and_a_raising_report_cancels(pipelines):
    _, official, _ = pipelines
    seen = []
    Renderer(official)(seed=[1], callback=lambda step, total: seen.append((step, total)), prompt=CAPTION,
                       audio_duration=0.4, num_inference_steps=3)
    assert seen == [(1, 3), (2, 3), (3, 3)]

    def cancel(step, total):
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        Renderer(official)(seed=[1], callback=cancel, prompt=CAPTION, audio_duration=0.4, num_inference_steps=3)


def _source(seconds: float = 1.0, rate: int = 24000) -> np.ndarray:  # 24 kHz: a cheap 1:2 resample
    time = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * time).astype(np.float32)
    return np.stack([tone, tone])


def test_repaint_at_full_strength_is_the_pipelines_repaint_and_replays_from_its_seed(pipelines):
    reference, official, _ = pipelines
    source = stereo_tensor(_source(), 24000, SAMPLE_RATE)
    arguments = {"prompt": CAPTION, "lyrics": LYRICS, "num_inference_steps": 2, "task_type": "repaint",
                 "src_audio": source, "repainting_start": 0.2, "repainting_end": 0.6, "audio_duration": 1.0}
    first = Renderer(official)(seed=[9], global_seed=True, **arguments).waveforms[0]
    again = Renderer(official)(seed=[9], global_seed=True, **arguments).waveforms[0]
    assert np.array_equal(first, again)  # the VAE's posterior sample follows the seed too
    with torch.random.fork_rng():
        torch.manual_seed(9)
        expected = _reference_audio(reference, 9, **arguments)
    assert np.array_equal(first, expected)


def test_partial_repaint_strength_starts_from_the_noised_source(pipelines):
    _, official, _ = pipelines
    schedule = strength_schedule(8, 3.0, 0.5)
    # float64 schedule arithmetic: approx's relative 1e-6
    assert schedule[0] == pytest.approx(0.5) and schedule == sorted(schedule, reverse=True) and schedule[-1] > 0
    assert strength_schedule(8, 3.0, 1.0)[:3] == pytest.approx([1.0, 0.9545, 0.9], abs=1e-4)  # facts §2's table
    source = stereo_tensor(_source(), 24000, SAMPLE_RATE)
    arguments = {"prompt": CAPTION, "num_inference_steps": 4, "task_type": "repaint", "src_audio": source,
                 "repainting_start": 0.0, "audio_duration": 1.0}
    renderer = Renderer(official)
    light = renderer(seed=[2], global_seed=True, strength=0.25, **arguments)
    half = renderer(seed=[2], global_seed=True, strength=0.5, **arguments)
    full = renderer(seed=[2], global_seed=True, **arguments)
    assert light.num_forwards == half.num_forwards == full.num_forwards == 4
    assert not np.array_equal(light.waveforms[0], half.waveforms[0])
    assert not np.array_equal(half.waveforms[0], full.waveforms[0])
    with pytest.raises(ValueError, match="strength"):
        renderer(seed=[2], strength=0.0, **arguments)


def test_cover_uses_source_and_reference_and_blends_below_full_strength(pipelines):
    _, official, _ = pipelines
    source = stereo_tensor(_source(), 24000, SAMPLE_RATE, seconds=0.8)
    reference_audio = stereo_tensor(_source(0.5, 16000), 16000, SAMPLE_RATE)
    assert source.shape == (2, int(0.8 * SAMPLE_RATE))
    arguments = {"prompt": CAPTION, "lyrics": LYRICS, "num_inference_steps": 2, "task_type": "cover",
                 "src_audio": source, "reference_audio": reference_audio, "audio_duration": 0.8}
    full = Renderer(official)(seed=[5], global_seed=True, **arguments)
    blended = Renderer(official)(seed=[5], global_seed=True, audio_cover_strength=0.5, **arguments)
    assert full.num_forwards == 2 and blended.num_forwards == 4  # a text-only pass blended in at every step
    assert full.waveforms[0].shape == (2, int(0.8 * SAMPLE_RATE))
    assert not np.array_equal(full.waveforms[0], blended.waveforms[0])


def test_an_xl_shaped_dit_over_a_narrower_condition_encoder_loads_from_the_official_layout(tmp_path):
    """The XL DiT (hidden 2560) reads a 2048-wide condition encoder; widths come from the weights' shapes."""
    from diffusers import AceStepTransformer1DModel

    from acestep_app.acestep_15 import tiny

    pipeline = tiny.build_tiny_pipeline(torch.Generator().manual_seed(1))
    wide = {**tiny.TRANSFORMER, "hidden_size": 48, "intermediate_size": 96, "num_attention_heads": 6,
            "num_key_value_heads": 3, "encoder_hidden_size": tiny.WIDTH}
    pipeline.register_modules(transformer=AceStepTransformer1DModel(**wide, is_turbo=True, model_version="turbo"))
    tiny.write_official_layout(pipeline, tmp_path)
    loaded = checkpoint.load_pipeline(tmp_path)
    assert loaded.transformer.config.hidden_size == 48 and loaded.transformer.config.encoder_hidden_size == tiny.WIDTH
    assert loaded.condition_encoder.config.hidden_size == tiny.WIDTH
    for name, tensor in pipeline.transformer.state_dict().items():
        assert torch.equal(loaded.transformer.state_dict()[name], tensor), name
    audio = Renderer(loaded)(seed=[0], prompt=CAPTION, audio_duration=0.4, num_inference_steps=2).waveforms[0]
    assert audio.shape == (2, int(0.4 * SAMPLE_RATE))
