"""A tiny random ACE-Step checkpoint in the official folder layout (``acestep-app weights make-tiny``).

Every component has the official architecture and file names at toy sizes, so every loader, the
pipeline, the server and the deploy images can be exercised in seconds without the 8 GB download.
The weights are random: the audio is noise. ``TINY_CHECKPOINT.txt`` at the root says so (the
Engine looks for it).

Sizes follow the reference-made test checkpoint: deep enough that every ERG hook point exists
(DiT blocks 15..19, lyric encoder blocks 4 and 5, UMT5 blocks 8 and 9), narrow everywhere else.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers import AutoencoderDC
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import UMT5Config, UMT5EncoderModel

from acestep_app.acestep_v1.lyrics.tokenizer import write_demo_vocab
from acestep_app.acestep_v1.models.transformer import ACEStepTransformer2DModel
from acestep_app.acestep_v1.models.vocoder import ADaMoSHiFiGANV1, WeightNormConv1d

TINY_MARKER = "TINY_CHECKPOINT.txt"
VOCODER_CONV_GAIN = 1.2  # per-channel weight norm that gives noise peaking near 0.2 (HiFi-GAN's init is near-silent)
TEXT_DIM = 40
LYRIC_DIM = 48

TRANSFORMER_CONFIG = {
    "in_channels": 8,
    "out_channels": 8,
    "num_layers": 24,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "inner_dim": 32,
    "mlp_ratio": 2.5,
    "speaker_embedding_dim": 512,  # the pipeline feeds 512-d zero speaker embeddings
    "text_embedding_dim": TEXT_DIM,
    "lyric_hidden_size": LYRIC_DIM,
    "lyric_encoder_output_size": LYRIC_DIM,
    "lyric_encoder_attention_heads": 4,
    "lyric_encoder_linear_units": 96,
    "lyric_encoder_num_blocks": 8,
    "patch_size": [16, 1],
    "max_height": 16,
}

DCAE_CONFIG = {
    "in_channels": 2,
    "latent_channels": 8,
    "attention_head_dim": 8,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [8, 16, 16, 32],
    "decoder_block_out_channels": [8, 16, 16, 32],
    "encoder_layers_per_block": [1, 1, 1, 1],
    "decoder_layers_per_block": [1, 1, 2, 2],
    "encoder_qkv_multiscales": [[], [], [5], [5]],
    "decoder_qkv_multiscales": [[], [], [5], [5]],
    "upsample_block_type": "interpolate",
    "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu",
    "scaling_factor": 0.41407,
}

VOCODER_CONFIG = {
    "input_channels": 128,
    "depths": [1, 1, 2, 1],
    "dims": [16, 16, 24, 32],
    "num_mels": 32,
    "upsample_initial_channel": 128,
    "resblock_kernel_sizes": [3, 7],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
}

UMT5_CONFIG = {
    "d_model": TEXT_DIM,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 12,
    "num_decoder_layers": 12,
    "num_heads": 4,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.0,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}

TAG_WORDS = (
    "pop rock funk soul jazz blues hip-hop rap trap electronic edm house techno trance dubstep ambient "
    "lo-fi classical orchestral cinematic piano guitar acoustic electric bass drums percussion synth "
    "strings violin cello saxophone trumpet flute organ vocals female male choir melodic energetic "
    "upbeat groovy vibrant dynamic chill calm dreamy dark sad happy romantic epic aggressive mellow "
    "slow fast tempo bpm 60 70 80 90 100 105 110 120 128 140 160 major minor key country folk reggae "
    "latin k-pop j-pop metal punk indie disco r&b gospel BPM Pop Rock EDM"
).split()

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in UMT5

MARKER_TEXT = """\
This is a TINY RANDOM ACE-Step v1 checkpoint written by acestep_app.acestep_v1.tiny.write_tiny_checkpoint.
It has the official folder layout and architectures at toy sizes with random weights, for tests and
smoke runs only: everything it generates is noise. Download the real weights with
`acestep-app weights pull`.
"""


def _offset_constant_parameters(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Give parameters that init leaves constant (norm scales 1, biases 0) small random offsets.

    Then a weight that is silently not loaded shows up as a mismatch instead of matching its init.
    """
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() > 1 and bool((parameter == parameter.flatten()[0]).all()):
                noise = torch.randn(parameter.shape, generator=generator) * 0.05
                parameter.add_(noise.to(parameter.dtype))


def _set_weight_norm_gain(vocoder: ADaMoSHiFiGANV1, gain: float) -> None:
    with torch.no_grad():
        for module in vocoder.modules():
            if isinstance(module, WeightNormConv1d):
                module.weight_g.fill_(gain)


def train_tag_tokenizer(vocab_size: int = 160) -> Tokenizer:
    """A small UMT5-style Unigram tokenizer (NFKC, Metaspace, ``$A </s>``) trained on music-tag words."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        unk_token="<unk>",
        initial_alphabet=list(string.ascii_letters + string.digits + ",.-&'/"),
        show_progress=False,
    )
    sentences = [", ".join(TAG_WORDS[i : i + 7]) for i in range(0, len(TAG_WORDS), 3)]
    tokenizer.train_from_iterator(sentences + [" ".join(TAG_WORDS)], trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    return tokenizer


def _write_umt5(directory: Path, generator: torch.Generator, umt5_config: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tag_tokenizer()
    if [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] != [0, 1, 2]:
        raise RuntimeError("tag tokenizer special tokens must take ids 0, 1, 2")
    tokenizer.save(str(directory / "tokenizer.json"))
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {**special, "tokenizer_class": "T5TokenizerFast", "extra_ids": 0, "model_max_length": 512}
    config["clean_up_tokenization_spaces"] = False
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))

    model = UMT5EncoderModel(UMT5Config(vocab_size=tokenizer.get_vocab_size(), **umt5_config))
    _offset_constant_parameters(model, generator)
    model.save_pretrained(directory)


def write_tiny_checkpoint(directory: str | Path, seed: int = 0) -> Path:
    """Write a complete tiny random checkpoint under ``directory``; returns its path.

    Layout: ``ace_step_transformer/``, ``music_dcae_f8c8/``, ``music_vocoder/``, ``umt5-base/``,
    ``lyric_tokenizer/vocab.json`` (a demo lyric vocabulary) and ``TINY_CHECKPOINT.txt``. Same seed,
    same weights. Takes about a second and ~8 MB.
    """
    return write_random_checkpoint(
        directory,
        transformer_config=TRANSFORMER_CONFIG,
        dcae_config=DCAE_CONFIG,
        vocoder_config=VOCODER_CONFIG,
        umt5_config=UMT5_CONFIG,
        seed=seed,
        vocoder_gain=VOCODER_CONV_GAIN,
    )


def write_random_checkpoint(
    directory: str | Path,
    *,
    transformer_config: dict,
    dcae_config: dict,
    vocoder_config: dict,
    umt5_config: dict,
    seed: int = 0,
    vocoder_gain: float | None = None,
    marker_text: str = MARKER_TEXT,
) -> Path:
    """Random weights for the given configs in the official layout (the tiny and the bench checkpoints)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    lyric_vocab = root / "lyric_tokenizer" / "vocab.json"
    lyric_vocab.parent.mkdir(exist_ok=True)
    lyric_vocab_size = write_demo_vocab(lyric_vocab)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        transformer = ACEStepTransformer2DModel(**transformer_config, lyric_encoder_vocab_size=lyric_vocab_size)
        dcae = AutoencoderDC(**dcae_config)
        vocoder = ADaMoSHiFiGANV1(**vocoder_config)
        if vocoder_gain is not None:
            _set_weight_norm_gain(vocoder, vocoder_gain)
        models_by_folder = {"ace_step_transformer": transformer, "music_dcae_f8c8": dcae, "music_vocoder": vocoder}
        for folder, model in models_by_folder.items():
            _offset_constant_parameters(model, generator)
            model.save_pretrained(root / folder)
        _write_umt5(root / "umt5-base", generator, umt5_config)

    (root / TINY_MARKER).write_text(marker_text)
    return root
