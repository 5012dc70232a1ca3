"""write_tiny_checkpoint: official layout, small and fast, deterministic, and loadable by every strict loader."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from acestep_app.acestep_v1.models.autoencoder import MusicDCAE
from acestep_app.acestep_v1.lyrics.tokenizer import LyricTokenizer
from acestep_app.acestep_v1.models.text_encoder import TextEncoder
from acestep_app.acestep_v1.models.transformer import ACEStepTransformer2DModel
from acestep_app.acestep_v1.tiny import TINY_MARKER, write_tiny_checkpoint

WEIGHTS = "diffusion_pytorch_model.safetensors"
EXPECTED_FILES = [
    "ace_step_transformer/config.json",
    f"ace_step_transformer/{WEIGHTS}",
    "music_dcae_f8c8/config.json",
    f"music_dcae_f8c8/{WEIGHTS}",
    "music_vocoder/config.json",
    f"music_vocoder/{WEIGHTS}",
    "umt5-base/config.json",
    "umt5-base/model.safetensors",
    "umt5-base/tokenizer.json",
    "umt5-base/tokenizer_config.json",
    "umt5-base/special_tokens_map.json",
    "lyric_tokenizer/vocab.json",
    TINY_MARKER,
]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    started = time.perf_counter()
    root = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint", seed=0)
    return root, time.perf_counter() - started


@pytest.fixture(scope="module")
def tiny(written):
    return written[0]


def test_layout_size_and_speed(written):
    root, seconds = written
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted(EXPECTED_FILES)
    total_bytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total_bytes < 12 * 2**20, f"{total_bytes / 2**20:.1f} MB"
    assert seconds < 10, f"took {seconds:.1f} s"  # about 1 s on an idle CPU
    marker = (root / TINY_MARKER).read_text()
    assert "random" in marker.lower() and "noise" in marker.lower()


def test_same_seed_same_weights_other_seed_differs(tiny, tmp_path):
    again = write_tiny_checkpoint(tmp_path / "again", seed=0)
    other = write_tiny_checkpoint(tmp_path / "other", seed=1)
    for folder in ("ace_step_transformer", "music_dcae_f8c8", "music_vocoder"):
        first, second = load_file(tiny / folder / WEIGHTS), load_file(again / folder / WEIGHTS)
        assert all(torch.equal(first[k], second[k]) for k in first), folder
        third = load_file(other / folder / WEIGHTS)
        assert not all(torch.equal(first[k], third[k]) for k in first), folder


def test_transformer_loads_strictly_and_runs(tiny):
    model = ACEStepTransformer2DModel.from_pretrained(tiny / "ace_step_transformer")
    config = json.loads((tiny / "ace_step_transformer" / "config.json").read_text())
    assert config["_class_name"] == "ACEStepTransformer2DModel"
    demo_vocab = json.loads((tiny / "lyric_tokenizer" / "vocab.json").read_text())
    largest_id = max(demo_vocab["model"]["vocab"].values())
    assert model.config.lyric_encoder_vocab_size == largest_id + 1

    lyrics = LyricTokenizer.from_file(tiny / "lyric_tokenizer" / "vocab.json")
    ids, mask = lyrics.ids_and_mask(["[verse]\nhello world"])
    text = TextEncoder.from_pretrained(tiny / "umt5-base")
    states, text_mask = text.encode(["funk, pop, 105 BPM"])
    with torch.no_grad():
        encoded, encoded_mask = model.encode(states, text_mask, torch.zeros(1, 512), ids, mask)
        latent = torch.randn(1, 8, 16, 4, generator=torch.Generator().manual_seed(0))
        velocity = model.decode(latent, torch.ones(1, 4), encoded, encoded_mask, torch.tensor([500.0]), 4)
    assert velocity.shape == latent.shape and torch.isfinite(velocity).all()


def test_umt5_tokenizer_and_encoder(tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny / "umt5-base")
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("funk, pop, soul, 105 BPM")["input_ids"]
    assert ids[-1] == 1 and 2 not in ids  # EOS appended; tag words are in the vocabulary
    encoder = TextEncoder.from_pretrained(tiny / "umt5-base")
    states, mask = encoder.encode(["jazz piano", "lo-fi, chill, 80 bpm, dreamy"])
    assert states.shape[:2] == mask.shape and states.shape[-1] == 40
    null_states, _ = encoder.encode(["jazz piano", "lo-fi, chill, 80 bpm, dreamy"], erg=True)
    assert not torch.equal(states, null_states)


def test_autoencoder_loads_strictly_and_decodes_noise(tiny):
    autoencoder = MusicDCAE.from_pretrained(tiny)
    wave = autoencoder.decode(torch.randn(1, 8, 16, 3, generator=torch.Generator().manual_seed(0)), sample_rate=48000)
    assert wave.shape == (1, 2, 13375) and torch.isfinite(wave).all()
    assert 0.01 < wave.abs().max() <= 1.0  # audible noise, not silence
