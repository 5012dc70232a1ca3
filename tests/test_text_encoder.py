"""UMT5 text encoder: reference parity (conditional and ERG null embedding), no lasting model
mutation, concurrent conditional/ERG calls, strict loading and dtype."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load_file, save_file

from acestep_app.errors import WeightsError
from acestep_app.acestep_v1.models.text_encoder import TextEncoder

# Reference parity: the fixtures' README suggests 1e-4 for a reimplementation (another op order): eps 1.2e-7
# x hidden states up to ~3.5 x a few hundred reordered sums (measured 4.5e-6).
ATOL = 1e-4


@pytest.fixture(scope="module")
def umt5_dir(tiny_checkpoint):
    return tiny_checkpoint / "umt5-base"


@pytest.fixture(scope="module")
def encoder(umt5_dir):
    return TextEncoder.from_pretrained(umt5_dir)


@pytest.fixture(scope="module")
def case(cases_dir):
    meta = json.loads((cases_dir / "text_encoder.json").read_text())
    tensors = load_file(cases_dir / "text_encoder.safetensors")
    assert set(meta["tensors"]) <= set(tensors)
    return meta["prompts"], tensors


def test_tokenization_matches_reference(encoder, case):
    prompts, expected = case
    input_ids, attention_mask = encoder.tokenize(prompts)
    assert torch.equal(input_ids, expected["input_ids"])
    assert torch.equal(attention_mask, expected["attention_mask"])


def test_conditional_embedding_matches_reference(encoder, case):
    prompts, expected = case
    hidden, mask = encoder.encode(prompts)
    assert mask.dtype == torch.long
    assert torch.equal(mask, expected["attention_mask_out"])
    torch.testing.assert_close(hidden, expected["last_hidden_state"], atol=ATOL, rtol=ATOL)


def test_erg_null_embedding_matches_reference(encoder, case):
    prompts, expected = case
    hidden, mask = encoder.encode(prompts, erg=True)
    assert torch.equal(mask, expected["attention_mask_out"])
    torch.testing.assert_close(hidden, expected["last_hidden_state_null_erg"], atol=ATOL, rtol=ATOL)
    assert (hidden - expected["last_hidden_state"]).abs().max() > 1e-2


def test_erg_leaves_model_unchanged(encoder, case):
    prompts, _ = case
    before, _ = encoder.encode(prompts)
    encoder.encode(prompts, erg=True)
    after, _ = encoder.encode(prompts)
    assert torch.equal(before, after)


def test_concurrent_conditional_and_erg_calls(encoder, case):
    prompts, _ = case
    plain, _ = encoder.encode(prompts)
    weakened, _ = encoder.encode(prompts, erg=True)
    flags = [False, True] * 4
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda erg: encoder.encode(prompts, erg=erg)[0], flags))
    for erg, hidden in zip(flags, results):
        # the same computation in another thread: equal up to a few ulps of values ~3.5 (measured 0)
        torch.testing.assert_close(hidden, weakened if erg else plain, atol=1e-6, rtol=0)


def test_single_prompt_is_not_padded(encoder, case):
    prompts, expected = case
    hidden, mask = encoder.encode(prompts[1:])
    length = int(expected["attention_mask"][1].sum())
    assert mask.shape == (1, length) and bool(mask.all())
    torch.testing.assert_close(hidden[0], expected["last_hidden_state"][1, :length], atol=ATOL, rtol=ATOL)


def test_truncates_to_256_tokens(encoder):
    _, mask = encoder.encode([", ".join(["guitar"] * 400)])
    assert mask.shape == (1, 256)


def test_bfloat16_loading(umt5_dir, case):
    prompts, expected = case
    encoder = TextEncoder.from_pretrained(umt5_dir, torch_dtype=torch.bfloat16)
    hidden, _ = encoder.encode(prompts)
    assert hidden.dtype == torch.bfloat16
    reference = expected["last_hidden_state"]
    # bf16 keeps 8 significant bits: a rounding is off by up to 2**-8 (2.3e-3 rms) relative, and N
    # independent roundings add up to ~2.3e-3 x sqrt(N) in relative L2:
    # embeddings and the encoder's layers, up to ~100 roundings -> ~0.023.
    assert (hidden.float() - reference).norm() / reference.norm() < 0.05


def _tampered_copy(umt5_dir, tmp_path, edit):
    target = tmp_path / "umt5-base"
    shutil.copytree(umt5_dir, target)
    weights = load_file(target / "model.safetensors")
    edit(weights)
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_missing_key_raises_weights_error(umt5_dir, tmp_path):
    key = "encoder.block.3.layer.1.DenseReluDense.wo.weight"
    target = _tampered_copy(umt5_dir, tmp_path, lambda weights: weights.pop(key))
    with pytest.raises(WeightsError, match=key.replace(".", r"\.")):
        TextEncoder.from_pretrained(target)


def test_unexpected_key_raises_weights_error(umt5_dir, tmp_path):
    target = _tampered_copy(umt5_dir, tmp_path, lambda weights: weights.update({"encoder.extra.weight": torch.zeros(2)}))
    with pytest.raises(WeightsError, match=r"encoder\.extra\.weight"):
        TextEncoder.from_pretrained(target)


def test_mismatched_shape_raises_weights_error(umt5_dir, tmp_path):
    key = "encoder.block.0.layer.0.SelfAttention.q.weight"
    target = _tampered_copy(umt5_dir, tmp_path, lambda weights: weights.update({key: torch.zeros(3, 3)}))
    with pytest.raises(WeightsError):
        TextEncoder.from_pretrained(target)
