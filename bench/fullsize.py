"""Official-size (or mid-size) ACE-Step pipelines and a Qwen3-4B-shaped writer LLM, random weights, in memory.

Speed does not depend on weight values, so a GPU figure needs no download. The models are
built on the meta device and materialised straight onto the target device, in the target dtype,
with random values. No full-precision CPU copy is made, and nothing is written to disk. Buffers
(the vocoder's mel tables) are computed normally and moved over, in float32 as
``from_pretrained`` keeps them.

The configs are the official ``config.json`` values (``ace_step_transformer``, ``music_dcae_f8c8``,
``music_vocoder``, ``umt5-base``; Qwen3-4B-Instruct-2507 for the writer). ``mid`` uses the bench's
mid-size configs (``bench/midsize.py``). The tokenizers are tiny stand-ins: the text encoder still
runs at the official width and depth, over a few dozen tokens as for real tags.

    from fullsize import build_pipeline
    pipeline = build_pipeline("full", device="cuda", dtype=torch.bfloat16)
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import midsize

TRANSFORMER_CONFIG = {
    "in_channels": 8, "num_layers": 24, "inner_dim": 2560, "attention_head_dim": 128, "num_attention_heads": 20,
    "mlp_ratio": 2.5, "out_channels": 8, "max_position": 32768, "rope_theta": 1000000.0,
    "speaker_embedding_dim": 512, "text_embedding_dim": 768, "ssl_encoder_depths": [8, 8],
    "ssl_names": ["mert", "m-hubert"], "ssl_latent_dims": [1024, 768], "patch_size": [16, 1], "max_height": 16,
    "max_width": 32768, "lyric_encoder_vocab_size": 6693, "lyric_hidden_size": 1024,
}  # fmt: skip

DCAE_CONFIG = {
    "in_channels": 2, "latent_channels": 8, "attention_head_dim": 32,
    "encoder_block_out_channels": [128, 256, 512, 1024], "decoder_block_out_channels": [128, 256, 512, 1024],
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "encoder_layers_per_block": [2, 2, 3, 3], "decoder_layers_per_block": [3, 3, 3, 3],
    "encoder_qkv_multiscales": [[], [], [5], [5]], "decoder_qkv_multiscales": [[], [], [5], [5]],
    "decoder_act_fns": "silu", "decoder_norm_types": "rms_norm", "downsample_block_type": "Conv",
    "upsample_block_type": "interpolate", "scaling_factor": 0.41407,
}  # fmt: skip

VOCODER_CONFIG = {
    "depths": [3, 3, 9, 3], "dims": [128, 256, 384, 512], "drop_path_rate": 0.0, "input_channels": 128,
    "kernel_sizes": [7], "pre_conv_kernel_size": 13, "post_conv_kernel_size": 13,
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5], [1, 3, 5]], "resblock_kernel_sizes": [3, 7, 11, 13],
    "upsample_initial_channel": 1024, "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4, 4],
    "upsample_rates": [4, 4, 2, 2, 2, 2, 2], "num_mels": 512,  # the head reads the backbone's last width (dims[-1])
}  # fmt: skip

UMT5_CONFIG = {
    "vocab_size": 256384, "d_model": 768, "d_kv": 64, "d_ff": 2048, "num_layers": 12, "num_decoder_layers": 12,
    "num_heads": 12, "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "dropout_rate": 0.0, "tie_word_embeddings": False,
    "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
}  # fmt: skip

QWEN3_4B_CONFIG = {  # Qwen/Qwen3-4B-Instruct-2507
    "vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 262144,
    "rope_theta": 5000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu",
}  # fmt: skip

TINY_QWEN3_CONFIG = {  # same architecture, toy widths: the CPU stand-in
    "vocab_size": 151936, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 4096,
    "rope_theta": 5000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu",
}  # fmt: skip

CONFIGS = ("full", "mid")


def configs(name: str) -> dict[str, dict]:
    """Component configs of the ``full`` (official) or ``mid`` (bench mid-size) pipeline."""
    if name == "full":
        return {"transformer": TRANSFORMER_CONFIG, "dcae": DCAE_CONFIG, "vocoder": VOCODER_CONFIG, "umt5": UMT5_CONFIG}
    if name == "mid":
        umt5 = {**midsize.UMT5_CONFIG, "vocab_size": 256}
        return {"transformer": midsize.transformer_config(2), "dcae": midsize.DCAE_CONFIG,
                "vocoder": midsize.VOCODER_CONFIG, "umt5": umt5}  # fmt: skip
    raise ValueError(f"config must be one of {CONFIGS}, got {name!r}")


def materialise(factory: Callable[[], nn.Module], device: torch.device | str, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """Build ``factory()`` with parameters on the meta device, then give each parameter random values
    directly on ``device`` in ``dtype``. Buffers are built normally and moved, keeping their dtype."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = factory()
    generator = torch.Generator(device).manual_seed(seed)
    made: dict[int, nn.Parameter] = {}  # tied parameters (shared embeddings) stay one tensor
    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is None:
                continue
            if id(parameter) not in made:
                values = torch.empty(parameter.shape, device=device, dtype=dtype)
                made[id(parameter)] = nn.Parameter(_randomise(name, values, generator), requires_grad=False)
            module._parameters[name] = made[id(parameter)]
    return model.to(device).eval()


def _randomise(name: str, values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Variance-preserving normal weights (std 1/sqrt(fan in)); norm scales and weight-norm gains 1, biases 0."""
    if values.dim() >= 2 and not name.endswith("weight_g"):
        fan_in = max(1, values[0].numel())
        return values.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
    return values.fill_(0.0 if name.endswith("bias") else 1.0)


def build_pipeline(config: str, device: torch.device | str, dtype: torch.dtype, seed: int = 0):
    """An ``AceStepPipeline`` of the named configs with random weights, built on ``device`` in ``dtype``."""
    from diffusers import AutoencoderDC
    from transformers import UMT5Config, UMT5EncoderModel

    from acestep_app.acestep_v1.models.autoencoder import MusicDCAE
    from acestep_app.acestep_v1.lyrics.tokenizer import LyricTokenizer, write_demo_vocab
    from acestep_app.acestep_v1.models.text_encoder import TextEncoder
    from acestep_app.acestep_v1.models.transformer import ACEStepTransformer2DModel
    from acestep_app.acestep_v1.models.vocoder import ADaMoSHiFiGANV1
    from acestep_app.acestep_v1.pipeline import AceStepPipeline
    from acestep_app.acestep_v1.tiny import train_tag_tokenizer

    parts = configs(config)
    with tempfile.TemporaryDirectory() as scratch:  # the demo lyric vocab is a file format; read back at once
        vocab = Path(scratch) / "vocab.json"
        write_demo_vocab(vocab)
        lyric_tokenizer = LyricTokenizer.from_file(vocab)
    transformer = materialise(lambda: ACEStepTransformer2DModel(**parts["transformer"]), device, dtype, seed)
    umt5 = materialise(lambda: UMT5EncoderModel(UMT5Config(**parts["umt5"])), device, dtype, seed + 1)
    dcae = materialise(lambda: AutoencoderDC(**parts["dcae"]), device, dtype, seed + 2)
    vocoder = materialise(lambda: ADaMoSHiFiGANV1(**parts["vocoder"]), device, dtype, seed + 3)
    return AceStepPipeline(
        transformer=transformer,
        text_encoder=TextEncoder(umt5, _fast_tokenizer(train_tag_tokenizer())),
        lyric_tokenizer=lyric_tokenizer,
        autoencoder=MusicDCAE(dcae, vocoder),
        device=device,
        dtype=dtype,
    )


def _fast_tokenizer(tokenizer):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def build_writer_llm(config: str, device: torch.device | str, dtype: torch.dtype, seed: int = 0):
    """A random Qwen3 causal LM: Qwen3-4B's shape (``full``) or a toy one (``tiny``)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    values = QWEN3_4B_CONFIG if config == "full" else TINY_QWEN3_CONFIG
    model = materialise(lambda: Qwen3ForCausalLM(Qwen3Config(**values)), device, dtype, seed)
    model.tie_weights()  # lm_head shares the embedding, as in the real model
    model.generation_config.pad_token_id = 0
    return model


def budget_lyrics(duration: float) -> str:
    """Lyrics as long as the song writer's line budget for ``duration`` allows (realistic lyric token counts)."""
    from acestep_app.songwriter.song import LINES_PER_SECTION, LyricBudget

    line = "walking down the empty street tonight under neon light"
    lines = LyricBudget(duration).max_lines
    sections = []
    for start in range(0, lines, LINES_PER_SECTION):
        label = "[chorus]" if (start // LINES_PER_SECTION) % 2 else "[verse]"
        sections.append("\n".join([label] + [line] * min(LINES_PER_SECTION, lines - start)))
    return "\n\n".join(sections)


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def timed(function: Callable, *args, **kwargs):
    """``(result, seconds)``, synchronising CUDA before the clock stops."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - started
