"""The cross-attention K/V cache: cached keys and values give the uncached numbers (plain, bucketed,
compiled, sequential and batched guidance), one cache lives for one request only, and mismatched
cached tensors are refused (tiny checkpoint, CPU, float32)."""

from __future__ import annotations

import pytest
import torch

from acestep_app.acestep_v1.acceleration import AccelerationOptions, accelerate_transformer
from acestep_app.acestep_v1.models.transformer import ACEStepTransformer2DModel, CrossAttentionCache
from acestep_app.acestep_v1.pipeline import AceStepPipeline
from conftest import encode_forward_case

SHORT = {"duration": 2.0, "num_inference_steps": 4, "seed": 3, "decode": False}
LYRICS = "[verse]\nHello world, this is a song\n\n[chorus]\nla la la"


@pytest.fixture(scope="module")
def model(transformer_dir):
    return ACEStepTransformer2DModel.from_pretrained(transformer_dir).eval()


@pytest.fixture(scope="module")
def inputs(model, cases_dir):
    return encode_forward_case(model, cases_dir)


@pytest.fixture(scope="module")
def pipeline(tiny_checkpoint, lyric_vocab):
    return AceStepPipeline.from_pretrained(tiny_checkpoint, lyric_vocab=lyric_vocab)


@torch.no_grad()
def _decode(model, inputs, key_values=None):
    latent, attention_mask, states, mask, timestep = inputs
    return model.decode(
        latent, attention_mask, states, mask, timestep, latent.shape[-1],
        erg_diffusion=torch.tensor([False, True]), cross_key_values=key_values,
    )


@torch.no_grad()
def test_cached_decode_equals_uncached_exactly(model, inputs):
    key_values = model.cross_attention_key_values(inputs[2])
    assert len(key_values) == len(model.transformer_blocks)
    assert torch.equal(_decode(model, inputs, key_values), _decode(model, inputs))


@torch.no_grad()
def test_cached_decode_with_shape_buckets_equals_uncached(transformer_dir, inputs):
    bucketed = ACEStepTransformer2DModel.from_pretrained(transformer_dir).eval()
    bucketed.enable_shape_buckets(frames=16, tokens=8)
    key_values = bucketed.cross_attention_key_values(inputs[2])
    assert key_values[0][0].shape[2] % 8 == 0  # padded like decode pads
    assert torch.equal(_decode(bucketed, inputs, key_values), _decode(bucketed, inputs))


@torch.no_grad()
def test_compiled_blocks_take_cached_key_values(transformer_dir, model, inputs):
    compiled = ACEStepTransformer2DModel.from_pretrained(transformer_dir).eval()
    accelerate_transformer(compiled, AccelerationOptions(compile=True, compile_backend="aot_eager"))
    cached = _decode(compiled, inputs, compiled.cross_attention_key_values(inputs[2]))
    # The compiled graph orders float32 sums its own way: eps 1.2e-7 x outputs up to ~2 x 24 blocks = 6e-6
    # (measured 7e-7).
    torch.testing.assert_close(cached, _decode(model, inputs), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_cache_computes_once_per_key(model, inputs):
    states = inputs[2]
    cache = CrossAttentionCache(model)
    first = cache.get(("cond",), states)
    assert cache.get(("cond",), states) is first
    assert cache.get(("cond", "null"), torch.cat([states, states])) is not first
    assert len(cache) == 2


@torch.no_grad()
def test_cache_refuses_a_different_sequence_under_the_same_key(model, inputs):
    cache = CrossAttentionCache(model)
    cache.get(("cond",), inputs[2])
    with pytest.raises(ValueError, match="one cache per request"):
        cache.get(("cond",), inputs[2][:, :-1])


@torch.no_grad()
def test_decode_refuses_key_values_of_another_shape(model, inputs):
    key_values = model.cross_attention_key_values(inputs[2][:, :-1])
    with pytest.raises(ValueError, match="cross_key_values"):
        _decode(model, inputs, key_values)
    with pytest.raises(ValueError, match="entries"):
        _decode(model, inputs, model.cross_attention_key_values(inputs[2])[:-1])


@pytest.mark.parametrize("batched", [False, True])
def test_pipeline_with_cache_equals_without(pipeline, batched):
    cached = pipeline("pop, upbeat", LYRICS, batched_guidance=batched, cache_cross_attention=True, **SHORT)
    plain = pipeline("pop, upbeat", LYRICS, batched_guidance=batched, cache_cross_attention=False, **SHORT)
    assert torch.equal(cached.latents, plain.latents)
    assert cached.num_forwards == plain.num_forwards


def test_each_request_gets_fresh_keys_and_values(pipeline, monkeypatch):
    """A second request with other tags and lyrics never sees the first request's keys and values."""
    created: list[CrossAttentionCache] = []
    original_init = CrossAttentionCache.__init__

    def recording_init(self, transformer):
        original_init(self, transformer)
        created.append(self)

    monkeypatch.setattr(CrossAttentionCache, "__init__", recording_init)
    pipeline("pop, upbeat", LYRICS, **SHORT)
    second = pipeline("dark ambient, slow", "[verse]\nnight rain", **SHORT)
    expected = pipeline("dark ambient, slow", "[verse]\nnight rain", cache_cross_attention=False, **SHORT)
    assert len(created) == 2 and created[0] is not created[1]
    assert torch.equal(second.latents, expected.latents)


def _clip(seconds: float, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(2, int(seconds * 44100), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("kind", ["flow_edit", "repaint", "extend"])
def test_editing_tasks_with_cache_equal_without(pipeline, kind, batched):
    """Edits reuse keys/values per branch set (FlowEdit: per side too; repaint/extend: across frame counts)."""
    from acestep_app.acestep_v1.editing import Extend, FlowEdit, Repaint

    clip = _clip(1.5)
    task = {
        "flow_edit": FlowEdit(clip, 44100, "jazz", "[verse]\nbe bop", n_min=0.0, n_max=0.6, n_avg=2, seed=3),
        "repaint": Repaint(clip, 44100, 0.5, 1.0, variance=0.7, seed=1),
        "extend": Extend(clip, 44100, 1.0, 1.0, seed=2),
    }[kind]
    options = {"num_inference_steps": 4, "seed": 1, "decode": False, "batched_guidance": batched, "task": task}
    cached = pipeline("lofi, piano", LYRICS, cache_cross_attention=True, **options)
    plain = pipeline("lofi, piano", LYRICS, cache_cross_attention=False, **options)
    assert torch.equal(cached.latents, plain.latents)
