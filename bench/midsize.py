"""A mid-size random ACE-Step checkpoint for CPU benchmarks (official layout, official depths, narrow widths).

The tiny test checkpoint is so small that Python overhead dominates and speed ratios mean nothing;
the official 3.5 B model does not run on a 2-core CPU. This one keeps every official architecture
and depth (24 DiT blocks with 128-wide heads, 6 lyric-encoder blocks, 12 UMT5 blocks, the DCAE and
vocoder stage layout) and cuts the widths, so a 30 s song runs in tens of seconds on 2 cores and the
work is dominated by the same matmuls and convolutions as the real model. Random weights: noise out.
"""

from __future__ import annotations

import json
from pathlib import Path

from acestep_app.acestep_v1.tiny import MARKER_TEXT, write_random_checkpoint

OFFICIAL_HEAD_DIM = 128
TEXT_DIM = 256
LAYOUT_VERSION = 2  # bump when a config below changes: cached checkpoints are rewritten


def transformer_config(heads: int) -> dict:
    """The official DiT config with ``heads`` heads of the official width (official: 20)."""
    return {
        "in_channels": 8,
        "out_channels": 8,
        "num_layers": 24,
        "attention_head_dim": OFFICIAL_HEAD_DIM,
        "num_attention_heads": heads,
        "inner_dim": heads * OFFICIAL_HEAD_DIM,
        "mlp_ratio": 2.5,
        "speaker_embedding_dim": 512,
        "text_embedding_dim": TEXT_DIM,
        "lyric_hidden_size": 256,
        "lyric_encoder_output_size": 256,
        "lyric_encoder_attention_heads": 4,
        "lyric_encoder_linear_units": 1024,
        "lyric_encoder_num_blocks": 6,
        "patch_size": [16, 1],
        "max_height": 16,
    }


DCAE_CONFIG = {  # official block types and decoder depths, channels / 8
    "in_channels": 2,
    "latent_channels": 8,
    "attention_head_dim": 32,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [16, 32, 64, 128],
    "decoder_block_out_channels": [16, 32, 64, 128],
    "encoder_layers_per_block": [1, 1, 1, 1],  # the encoder is never run at inference
    "decoder_layers_per_block": [3, 3, 3, 3],
    "encoder_qkv_multiscales": [[], [], [5], [5]],
    "decoder_qkv_multiscales": [[], [], [5], [5]],
    "upsample_block_type": "interpolate",
    "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu",
    "scaling_factor": 0.41407,
}

VOCODER_CONFIG = {  # official backbone depths and upsampling; channels / 4 (backbone), / 8 (head); 1 of 4 resblocks
    "input_channels": 128,
    "depths": [3, 3, 9, 3],
    "dims": [32, 64, 96, 128],
    "num_mels": 128,
    "upsample_initial_channel": 128,  # the least that survives the seven halvings of the head
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3, 5]],
}

UMT5_CONFIG = {  # official depth (12 blocks), width 256
    "d_model": TEXT_DIM,
    "d_kv": 64,
    "d_ff": 512,
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


def write_midsize_checkpoint(directory: str | Path, heads: int = 2, seed: int = 0) -> Path:
    """Write the mid-size checkpoint (DiT width ``heads * 128``) under ``directory``; reuses a finished one."""
    root = Path(directory)
    stamp = root / "MIDSIZE.json"
    wanted = {"heads": heads, "seed": seed, "version": LAYOUT_VERSION}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return root
    write_random_checkpoint(
        root,
        transformer_config=transformer_config(heads),
        dcae_config=DCAE_CONFIG,
        vocoder_config=VOCODER_CONFIG,
        umt5_config=UMT5_CONFIG,
        seed=seed,
        marker_text=MARKER_TEXT.replace("TINY", "MID-SIZE"),
    )
    stamp.write_text(json.dumps(wanted))
    return root
