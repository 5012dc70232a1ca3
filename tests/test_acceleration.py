"""Speed switches keep the maths: shape buckets, compiled transformer (with recompile counts), SDPA
kernel choice, dtype policy and file prefetching, on the tiny checkpoint (CPU, float32)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from acestep_app.acestep_v1.acceleration import (
    AccelerationOptions,
    accelerate_transformer,
    prefetch_files,
    sdpa_backend,
)
from acestep_app.acestep_v1.models.dit_blocks import GLUMBConv
from acestep_app.engine.devices import resolve_dtype
from acestep_app.acestep_v1.models.transformer import ACEStepTransformer2DModel, group_norm_over_frames
from conftest import encode_forward_case

# Padding, compiled graphs and another SDPA kernel only change the order of float32 sums: eps 1.2e-7 x
# outputs up to ~2.5 x 24 blocks (each reorders its attention and GLU sums) = 7e-6 (measured 8e-7).
TOL = 1e-5


@pytest.fixture(scope="module")
def eager(transformer_dir):
    return ACEStepTransformer2DModel.from_pretrained(transformer_dir)


@pytest.fixture(scope="module")
def conditioning(eager, cases_dir):
    _, _, states, mask, timestep = encode_forward_case(eager, cases_dir)
    return states, mask, timestep


def _inputs(frames, seed=0, masked_tail=0):
    latent = torch.randn(2, 8, 16, frames, generator=torch.Generator().manual_seed(seed))
    attention_mask = torch.ones(2, frames)
    if masked_tail:
        attention_mask[1, -masked_tail:] = 0  # a real (reference) mask inside the real frames
    return latent, attention_mask


@torch.no_grad()
def _decode(model, conditioning, frames, masked_tail=0, erg=(False, True)):
    states, mask, timestep = conditioning
    latent, attention_mask = _inputs(frames, masked_tail=masked_tail)
    return model.decode(latent, attention_mask, states, mask, timestep, frames, erg_diffusion=torch.tensor(erg))


@pytest.mark.parametrize("frames", [20, 27])
def test_bucketed_decode_matches_unpadded(transformer_dir, eager, conditioning, frames):
    bucketed = ACEStepTransformer2DModel.from_pretrained(transformer_dir)
    bucketed.enable_shape_buckets(frames=32, tokens=16)  # pads frames to 32 and 142 tokens to 144
    expected = _decode(eager, conditioning, frames, masked_tail=4)
    actual = _decode(bucketed, conditioning, frames, masked_tail=4)
    assert actual.shape == expected.shape == (2, 8, 16, frames)
    torch.testing.assert_close(actual, expected, atol=TOL, rtol=TOL)


def test_group_norm_over_frames_ignores_padding():
    generator = torch.Generator().manual_seed(0)
    norm = torch.nn.GroupNorm(4, 8, eps=1e-6)
    torch.nn.init.normal_(norm.weight, generator=generator)
    torch.nn.init.normal_(norm.bias, generator=generator)
    x = torch.randn(2, 8, 1, 10, generator=generator)
    padded = torch.cat([x, 100 * torch.randn(2, 8, 1, 6, generator=generator)], dim=-1)
    frame_mask = (torch.arange(16) < 10)[None]
    out = group_norm_over_frames(norm, padded, frame_mask)
    # Group mean and variance over 20 values summed in another order, then rsqrt and the affine:
    # eps 1.2e-7 x outputs up to ~3.5 x a few roundings = ~1e-6 (measured 4.8e-7).
    torch.testing.assert_close(out[..., :10], norm(x), atol=1e-6, rtol=1e-6)


def test_glumbconv_frame_mask_keeps_padding_out_of_the_depthwise_conv():
    torch.manual_seed(0)
    ff = GLUMBConv(8, 20)
    x = torch.randn(1, 10, 8)
    padded = torch.cat([x, torch.randn(1, 6, 8)], dim=1)
    frame_mask = (torch.arange(16) < 10)[None]
    with torch.no_grad():
        # The same 60-term conv sums over outputs of ~0.1: eps 1.2e-7 x 0.1 x 60 = 7e-7 (measured 0).
        torch.testing.assert_close(ff(padded, frame_mask)[:, :10], ff(x), atol=1e-6, rtol=1e-6)
        # Without the mask the last real frame sees the padded neighbour.
        assert (ff(padded)[:, 9] - ff(x)[:, 9]).abs().max() > 1e-3


def _compiled(transformer_dir, **options):
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    model = ACEStepTransformer2DModel.from_pretrained(transformer_dir)
    accelerate_transformer(model, AccelerationOptions(compile=True, compile_backend=counter, **options))
    return model, counter


def test_compiled_blocks_match_eager_and_share_a_bucket(transformer_dir, eager, conditioning):
    model, counter = _compiled(transformer_dir, frame_bucket=32, token_bucket=16)
    assert model.shape_buckets == (32, 16)

    torch.testing.assert_close(_decode(model, conditioning, 20), _decode(eager, conditioning, 20), atol=TOL, rtol=TOL)
    graphs = counter.frame_count
    assert graphs >= 1  # blocks with and without ERG scales: one graph each, shared by all 24 blocks

    # A second duration in the same bucket (27 -> 32 frames) reuses the compiled graphs.
    torch.testing.assert_close(_decode(model, conditioning, 27), _decode(eager, conditioning, 27), atol=TOL, rtol=TOL)
    assert counter.frame_count == graphs


def test_dynamic_shapes_compile_once_for_all_durations(transformer_dir, eager, conditioning):
    model, counter = _compiled(transformer_dir, dynamic_shapes=True)
    assert model.shape_buckets is None  # no padding with symbolic sizes

    torch.testing.assert_close(_decode(model, conditioning, 20), _decode(eager, conditioning, 20), atol=TOL, rtol=TOL)
    graphs = counter.frame_count
    for frames in (37, 70):
        expected = _decode(eager, conditioning, frames)
        torch.testing.assert_close(_decode(model, conditioning, frames), expected, atol=TOL, rtol=TOL)
    assert counter.frame_count == graphs


def test_sdpa_backend_option_keeps_outputs(transformer_dir, eager, conditioning):
    model = accelerate_transformer(
        ACEStepTransformer2DModel.from_pretrained(transformer_dir), AccelerationOptions(sdpa_backend="math")
    )
    torch.testing.assert_close(_decode(model, conditioning, 20), _decode(eager, conditioning, 20), atol=TOL, rtol=TOL)
    with sdpa_backend("auto"):
        pass


def test_options_are_validated(eager):
    with pytest.raises(ValueError, match="dynamic_shapes"):
        AccelerationOptions(cuda_graphs=True, dynamic_shapes=True)
    with pytest.raises(ValueError, match="sdpa_backend"):
        AccelerationOptions(sdpa_backend="fastest")
    with pytest.raises(ValueError, match="CUDA"):
        accelerate_transformer(eager, AccelerationOptions(cuda_graphs=True))
    assert AccelerationOptions.fast("cpu") == AccelerationOptions(compile=True)
    assert AccelerationOptions.fast("cuda:0").cuda_graphs


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype("float32", "cuda") == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8")


def test_prefetch_files_reads_everything(transformer_dir):
    files = sorted(transformer_dir.iterdir())
    assert prefetch_files(files).result(timeout=30) == sum(f.stat().st_size for f in files)
