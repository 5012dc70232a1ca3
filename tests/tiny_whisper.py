"""A tiny random Whisper checkpoint in the transformers layout, so the real transcription path runs offline.

Byte-level vocabulary (the 256 byte symbols, no merges) plus Whisper's special tokens, one encoder and
one decoder layer of width 16, 80 mel bins; its transcripts are random bytes.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|startoftranscript|>", "<|en|>", "<|ja|>", "<|transcribe|>", "<|translate|>",
                  "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order (what byte-level BPE vocabularies use)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(byte) if byte in printable else chr(next(extra)) for byte in range(256)]


def write_tiny_whisper(path: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    path = Path(path)
    tokenizer = WhisperTokenizer(vocab={symbol: index for index, symbol in enumerate(byte_symbols())}, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ["<|endoftext|>", *SPECIAL_TOKENS]}
    end = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=1500, max_target_positions=32, pad_token_id=end, bos_token_id=end, eos_token_id=end,
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=end, pad_token_id=end,
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"], is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|ja|>": ids["<|ja|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
    )
    model.save_pretrained(path)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(path)
    return path
