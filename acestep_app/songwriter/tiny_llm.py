"""A tiny random Qwen3 chat model for the song writer's tests and bench (no download, ~1 s).

One decoder layer at width 32 and a 400-token byte-level BPE tokenizer with a ChatML template: the
architecture, tokenizer type and chat format of the real writer (Qwen3-4B-Instruct-2507), at toy
size. Its replies are random text; the song writer's JSON constraint still holds them to the shape.
"""

from __future__ import annotations

from pathlib import Path

import torch

CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Text the tokenizer's merges are learnt from: song-like words, JSON and section headers.
_CORPUS = [
    "A lofi hiphop song with a chill vibe about a sunny day on the boardwalk, female vocals, 85 bpm.",
    "[verse]\n" + "\n".join(f"walking on the boardwalk {i}" for i in range(6)) + "\n[chorus]\nsunny day\nsunny day",
    '{"tags": "lofi, hiphop", "lyrics": "[verse]\\n"}',
]


def write_tiny_llm(directory: str | Path, seed: int = 0) -> Path:
    """Save a 1-layer random Qwen3 and its ChatML tokenizer in the Hugging Face layout; returns the folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    from acestep_app.songwriter.local_llm import CHATML_TEMPLATE

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=CHATML_SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE, clean_up_tokenization_spaces=False,
    )
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Qwen3ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)
