"""The fast path end to end keeps the maths: batched guidance vs the reference's sequential loop on
shared cases, the inductor-compiled and the shape-bucketed transformer inside the pipeline, chunked
decoding as the engine configures it, and the bf16 pipeline on CPU (tiny checkpoint).

Component-level checks (compiled blocks with aot_eager, bucketed ``decode``, chunk windows, bf16
transformer / autoencoder) live in test_acceleration.py, test_transformer.py and test_autoencoder.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from acestep_app.acestep_v1.acceleration import AccelerationOptions, accelerate_transformer
from acestep_app.acestep_v1.pipeline import AceStepPipeline
from acestep_app.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Batching, padding and compiling change only the order of float32 sums: eps 1.2e-7 x latents up to ~5
# x 24 blocks x 4 steps = 6e-5 (measured 3.6e-6; the fixtures' README saw a mere thread-count change
# move end-to-end latents by up to 8.4e-6).
BATCHED_TOL = 1e-4
SHORT = {"duration": 2.0, "num_inference_steps": 4, "seed": 7}
LYRICS = "[verse]\nHello world, this is a song\n\n[chorus]\nla la la"


@pytest.fixture(scope="module")
def pipeline(tiny_checkpoint, lyric_vocab):
    return AceStepPipeline.from_pretrained(tiny_checkpoint, lyric_vocab=lyric_vocab)


def _case_call(cases_dir, name: str) -> tuple[tuple[str, str], dict]:
    kw = json.loads((cases_dir / f"{name}.json").read_text())["call_kwargs"]
    seeds = json.loads((cases_dir / f"{name}.json").read_text())["pipeline_input_params"]["actual_seeds"]
    return (kw["prompt"], kw["lyrics"]), {
        "duration": kw["audio_duration"],
        "num_inference_steps": kw["infer_step"],
        "seed": seeds,
        "batch_size": kw["batch_size"],
        "scheduler": kw["scheduler_type"],
        "guidance_type": kw["cfg_type"],
        "granularity_scale": kw["omega_scale"],
        "guidance_interval": kw["guidance_interval"],
        "guidance_interval_decay": kw["guidance_interval_decay"],
        "guidance_scale": kw["guidance_scale"],
        "minimum_guidance_scale": kw["min_guidance_scale"],
        "tag_guidance_scale": kw["guidance_scale_text"],
        "lyric_guidance_scale": kw["guidance_scale_lyric"],
        "use_erg_tag": kw["use_erg_tag"],
        "use_erg_lyric": kw["use_erg_lyric"],
        "use_erg_diffusion": kw["use_erg_diffusion"],
        "decode": False,
    }


@pytest.mark.parametrize(
    "name", ["e2e_euler_apg_defaults_10steps", "e2e_heun_apg_double_condition", "e2e_batch2", "e2e_euler_cfg_star"]
)
def test_batched_guidance_matches_sequential_on_shared_cases(pipeline, cases_dir, name):
    texts, kwargs = _case_call(cases_dir, name)
    sequential = pipeline(*texts, **kwargs, batched_guidance=False)
    batched = pipeline(*texts, **kwargs, batched_guidance=True)
    torch.testing.assert_close(batched.latents, sequential.latents, atol=BATCHED_TOL, rtol=0)
    assert batched.num_forwards < sequential.num_forwards


def test_fal_defaults_cost_27_batched_forwards_instead_of_55(pipeline):
    # 27 Euler steps, guidance interval 0.5: 14 guided steps x 3 branches + 13 conditional-only steps.
    common = {"duration": 0.5, "num_inference_steps": 27, "seed": 0, "decode": False}
    assert pipeline("pop", LYRICS, **common, batched_guidance=False).num_forwards == 55
    assert pipeline("pop", LYRICS, **common, batched_guidance=True).num_forwards == 27


def test_inductor_compiled_pipeline_matches_eager(tiny_checkpoint, lyric_vocab, pipeline):
    torch._dynamo.reset()
    compiled = AceStepPipeline.from_pretrained(tiny_checkpoint, lyric_vocab=lyric_vocab)
    accelerate_transformer(compiled.transformer, AccelerationOptions(compile=True, frame_bucket=32, token_bucket=64))
    # interval 1.0: every step is guided, so one batch shape (3) and two block graphs (with/without ERG).
    call = {**SHORT, "guidance_interval": 1.0, "decode": False}
    expected = pipeline("pop, rock", LYRICS, **call)
    actual = compiled("pop, rock", LYRICS, **call)
    torch.testing.assert_close(actual.latents, expected.latents, atol=BATCHED_TOL, rtol=0)
    torch._dynamo.reset()


def test_shape_bucketed_pipeline_matches_unbucketed(tiny_checkpoint, lyric_vocab, pipeline):
    bucketed = AceStepPipeline.from_pretrained(tiny_checkpoint, lyric_vocab=lyric_vocab)
    bucketed.transformer.enable_shape_buckets(frames=16, tokens=16)  # 21 frames -> 32, tokens padded too
    expected = pipeline("pop, rock", LYRICS, **SHORT, decode=False)
    actual = bucketed("pop, rock", LYRICS, **SHORT, decode=False)
    assert actual.latents.shape[-1] == 21
    torch.testing.assert_close(actual.latents, expected.latents, atol=BATCHED_TOL, rtol=0)


def test_engine_auto_settings_pick_chunked_decode_on_gpu_only():
    from acestep_app.acestep_v1.engine import decode_chunking

    assert Settings().engine.decode_chunk_frames == 0  # the reference's one-pass decode by default
    auto = Settings.from_dict({"engine": {"decode_chunk_frames": "auto"}}).engine
    assert decode_chunking(auto, "cpu") == (None, None)
    chunk, overlap = decode_chunking(auto, "cuda")
    assert chunk and overlap and chunk > 2 * overlap
    explicit = Settings.from_dict({"engine": {"decode_chunk_frames": 64}}).engine
    assert decode_chunking(explicit, "cpu") == (64, None)
    whole = Settings.from_dict({"engine": {"decode_chunk_frames": 0}}).engine
    assert decode_chunking(whole, "cuda") == (None, None)


def test_chunked_pipeline_decode_matches_whole(tiny_checkpoint, lyric_vocab, pipeline):
    latents = pipeline("pop, rock", LYRICS, duration=6.0, num_inference_steps=2, seed=3, decode=False).latents
    chunked = AceStepPipeline.from_pretrained(
        tiny_checkpoint, lyric_vocab=lyric_vocab, decode_chunk_frames=24, decode_overlap_frames=6
    )
    whole = pipeline.decode_latents(latents)
    pieces = chunked.decode_latents(latents)  # 64 frames -> 4 overlapping windows of 24
    assert pieces.shape == whole.shape
    # Only the DCAE's linear attention sums over a window instead of the song: eps 1.2e-7 x waveform <= 1
    # x 24 frames x a few layers ~ 1e-5 (measured 4e-7).
    assert (pieces - whole).abs().max() <= 1e-5 * max(1.0, whole.abs().max().item())


def test_bfloat16_pipeline_runs_on_cpu_close_to_float32(tiny_checkpoint, lyric_vocab, pipeline):
    half = AceStepPipeline.from_pretrained(tiny_checkpoint, lyric_vocab=lyric_vocab, dtype=torch.bfloat16)
    expected = pipeline("pop, rock", LYRICS, **SHORT)
    actual = half("pop, rock", LYRICS, **SHORT)
    assert actual.latents.dtype == torch.bfloat16
    assert actual.waveform.dtype == torch.float32 and torch.isfinite(actual.waveform).all()
    error = (actual.latents.float() - expected.latents).norm() / expected.latents.norm()
    # bf16 keeps 8 significant bits: a rounding is off by up to 2**-8 (2.3e-3 rms) relative, and N
    # independent roundings add up to ~2.3e-3 x sqrt(N) in relative L2:
    # 4 steps x 24 blocks feed their roundings back into the latents, ~300 -> ~0.04 (measured 0.021).
    assert error < 0.05, f"relative latent error {error:.3f}"


def test_bench_compare_runs_and_reports_both_paths(tiny_weights, capsys, monkeypatch):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("bench_script", PROJECT_ROOT / "bench" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up there
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec.loader.exec_module(bench)
    assert bench.main(["--checkpoint", str(tiny_weights), "--durations", "5", "--compare", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "reproduce: .venv/bin/python bench/bench.py --checkpoint" in out
    assert "forwards 27 vs 55" in out
    for stage in ("prompt", "encode", "diffusion", "decode", "wav"):
        assert f"    {stage} " in out


def _load_bench_module(name: str, monkeypatch):
    import importlib.util
    import sys

    monkeypatch.setattr(sys, "path", [str(PROJECT_ROOT / "bench"), *sys.path])
    spec = importlib.util.spec_from_file_location(f"bench_{name}", PROJECT_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_bench_dit_forward_compares_cached_and_uncached(tiny_weights, capsys, monkeypatch):
    bench = _load_bench_module("bench", monkeypatch)
    assert bench.main(["--checkpoint", str(tiny_weights), "--dit-forward", "--durations", "5", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "without K/V cache" in out and "outputs identical: True" in out
    assert "process peak RSS" in out


def test_materialise_builds_random_weights_on_the_device_and_keeps_buffers(monkeypatch):
    from acestep_app.acestep_v1.models.transformer import ACEStepTransformer2DModel
    from acestep_app.acestep_v1.models.vocoder import ADaMoSHiFiGANV1
    from acestep_app.acestep_v1.tiny import TRANSFORMER_CONFIG, VOCODER_CONFIG

    fullsize = _load_bench_module("fullsize", monkeypatch)
    vocoder = fullsize.materialise(lambda: ADaMoSHiFiGANV1(**VOCODER_CONFIG), "cpu", torch.bfloat16)
    reference = ADaMoSHiFiGANV1(**VOCODER_CONFIG)
    assert {p.dtype for p in vocoder.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in vocoder.parameters())
    for (name, buffer), (_, expected) in zip(vocoder.named_buffers(), reference.named_buffers()):
        assert buffer.dtype == torch.float32 and torch.equal(buffer, expected), name
    transformer = fullsize.materialise(lambda: ACEStepTransformer2DModel(**TRANSFORMER_CONFIG), "cpu", torch.float32)
    weight = transformer.transformer_blocks[0].attn.to_q.weight
    # normal(0, 1/sqrt(fan in)) from a seeded generator: 6.5M samples put the std within 0.1% of it;
    # 30% only has to tell it from a zero or unit init.
    assert weight.std().item() == pytest.approx(weight.shape[1] ** -0.5, rel=0.3)
    assert torch.isfinite(transformer.transformer_blocks[0].attn.to_q.bias).all()


def test_full_size_vocoder_turns_mels_into_audio(monkeypatch):
    """The bench's official-size vocoder runs end to end (on the meta device: shapes only, no compute)."""
    from acestep_app.acestep_v1.models.vocoder import ADaMoSHiFiGANV1

    fullsize = _load_bench_module("fullsize", monkeypatch)
    frames = 87
    with torch.device("meta"):
        vocoder = ADaMoSHiFiGANV1(**fullsize.VOCODER_CONFIG)
        audio = vocoder(torch.empty(1, fullsize.VOCODER_CONFIG["input_channels"], frames))
    assert audio.shape == (1, 1, frames * 512)  # hop length 512: the product of the upsample rates


def test_budget_lyrics_follow_the_writer_line_budget(monkeypatch):
    from acestep_app.songwriter.song import LyricBudget

    fullsize = _load_bench_module("fullsize", monkeypatch)
    lyrics = fullsize.budget_lyrics(60)
    sung = [line for line in lyrics.splitlines() if line and not line.startswith("[")]
    assert len(sung) == LyricBudget(60).max_lines
