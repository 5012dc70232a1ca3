"""A tiny random 5 Hz LM for tests and the offline demo (no download, about a second).

A one-layer Qwen3 at width 32 and a byte-level BPE tokenizer with the ChatML template, laid out as
the real ACE-Step LM's vocabulary is: the text vocabulary, then ``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>`` (the end of sequence), ``<think>``, ``</think>``, then the audio codes as one
contiguous block, ``<|audio_code_N|>`` at ``first_code_id + N`` in order. The codebook is reduced
(64 codes by default instead of 64,000, the size of the tiny DiT's FSQ codebook 4·4·4); that block
is built by the same loop as a full one, so the id layout is the real one at a smaller N, and the
planner finds the codes by name, as it does in the real vocabulary. Its outputs are random text held
to the formats by the constraints.
"""

from __future__ import annotations

from pathlib import Path

from .values import KEYSCALES, LANGUAGES, audio_code

TINY_CODEBOOK_SIZE = 64
_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_THINK_TOKENS = ("<think>", "</think>")
# Text the tokenizer's merges are learnt from: chain-of-thought lines, captions and lyrics.
_CORPUS = [
    (
        "<think>\nbpm: 120\ncaption: A calm piano melody with soft strings and gentle drums.\nduration: 180\n"
        "keyscale: G major\nlanguage: en\ntimesignature: 4\n</think>"
    ),
    (
        "# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n# Caption\n"
        "An upbeat pop song with bright synths, punchy bass and female vocals.\n\n# Lyric\n[Verse]\n"
        "Walking down the street tonight\nEvery light is shining bright\n\n[Chorus]\nSing along, sing along\n"
    ),
    " ".join(KEYSCALES) + " " + " ".join(LANGUAGES),
    " ".join(str(n) for n in range(30, 301)),
]


def build_planner_tokenizer(codebook_size: int = TINY_CODEBOOK_SIZE):
    """A byte-level BPE tokenizer with the real LM's token layout (see the module docstring) and the
    ChatML template: ``PreTrainedTokenizerFast`` with ``codebook_size`` audio-code tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from acestep_app.songwriter.local_llm import CHATML_TEMPLATE

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_CORPUS * 4, trainer)
    bpe.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in _SPECIAL_TOKENS])
    bpe.add_tokens([AddedToken(token, special=False, normalized=False) for token in _THINK_TOKENS])
    bpe.add_tokens([AddedToken(audio_code(n), special=False, normalized=False) for n in range(codebook_size)])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE, clean_up_tokenization_spaces=False,
    )  # fmt: skip


def write_tiny_planner_lm(directory: str | Path, *, codebook_size: int = TINY_CODEBOOK_SIZE, seed: int = 0) -> Path:
    """Save a tiny random 5 Hz LM (model, tokenizer, chat template) in the Hugging Face layout; returns the folder.

    Args:
        directory: the folder to write (created if missing).
        codebook_size: audio-code tokens in the vocabulary (64,000 in the real LM).
        seed: the weights' seed.
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tokenizer = build_planner_tokenizer(codebook_size)
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=8192,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)
