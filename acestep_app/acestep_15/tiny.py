"""A tiny random ACE-Step 1.5 checkpoint in both layouts (``acestep-app weights make-tiny --family acestep-1.5``).

One set of random weights, written twice::

    <dir>/                          the official layout of ACE-Step/Ace-Step1.5
        acestep-v15-turbo/          config.json, model.safetensors, silence_latent.pt
        vae/                        AutoencoderOobleck
        Qwen3-Embedding-0.6B/       Qwen3Model + a small byte-level BPE tokenizer (no download)
        acestep-5Hz-lm-1.7B/        the planner's tiny random 5 Hz LM (``planner.tiny``)
        TINY_CHECKPOINT.txt
    <dir>/diffusers/                the same weights as AceStepPipeline.save_pretrained writes them
        model_index.json, transformer/, condition_encoder/, vae/, text_encoder/, tokenizer/, scheduler/,
        audio_tokenizer/, audio_token_detokenizer/, TINY_CHECKPOINT.txt

Sizes follow diffusers' own tiny ACE-Step test pipeline (32-wide, 2 layers) with the real rates: a
48 kHz stereo Oobleck with the real downsampling ratios (25 latents per second) and a 5-frame FSQ pooling
window with the real levels, so durations, planner codes and audio files mean what they mean at full size.
The weights are random: the audio is noise, and the marker file says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import (
    DEFAULT_DIT_FOLDER,
    DIT_CONFIG,
    DIT_WEIGHTS,
    SILENCE_LATENT,
    TEXT_ENCODER_FOLDER,
    VAE_FOLDER,
    join_official_state_dict,
)
from .planner.config import DEFAULT_LM, LM_CHECKPOINTS
from .planner.tiny import write_tiny_planner_lm

TINY_MARKER = "TINY_CHECKPOINT.txt"
DIFFUSERS_FOLDER = "diffusers"
SAMPLE_RATE = 48000
ACOUSTIC_DIM = 8
WIDTH = 32
SILENCE_FRAMES = 15000  # 600 s at 25 Hz, as the official silence latent

ATTENTION = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 16,
             "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "attention_bias": False, "attention_dropout": 0.0}
TRANSFORMER = {"hidden_size": WIDTH, "intermediate_size": 64, "num_hidden_layers": 2, "in_channels": 3 * ACOUSTIC_DIM,
               "audio_acoustic_hidden_dim": ACOUSTIC_DIM, "patch_size": 2, **ATTENTION}
CONDITION_ENCODER = {"hidden_size": WIDTH, "intermediate_size": 64, "text_hidden_dim": WIDTH,
                     "timbre_hidden_dim": ACOUSTIC_DIM, "num_lyric_encoder_hidden_layers": 2,
                     "num_timbre_encoder_hidden_layers": 2, **ATTENTION}
FSQ_LEVELS = [8, 8, 8, 5, 5, 5]  # 64000 codes, as the planner's <|audio_code_N|> vocabulary
AUDIO_TOKENIZER = {"hidden_size": WIDTH, "intermediate_size": 64, "audio_acoustic_hidden_dim": ACOUSTIC_DIM,
                   "pool_window_size": 5, "fsq_dim": WIDTH, "fsq_input_levels": FSQ_LEVELS,
                   "num_attention_pooler_hidden_layers": 1, **ATTENTION}
DETOKENIZER = {"hidden_size": WIDTH, "intermediate_size": 64, "audio_acoustic_hidden_dim": ACOUSTIC_DIM,
               "pool_window_size": 5, "num_attention_pooler_hidden_layers": 1, **ATTENTION}
# The encoder ends in mean and scale halves: its width is twice the latent width (128 -> 64 at full size).
VAE = {"encoder_hidden_size": 2 * ACOUSTIC_DIM, "downsampling_ratios": [2, 4, 4, 6, 10], "channel_multiples": [1, 2, 2, 4, 4],
       "decoder_channels": 4, "decoder_input_channels": ACOUSTIC_DIM, "audio_channels": 2,
       "sampling_rate": SAMPLE_RATE}
TEXT_ENCODER = {"hidden_size": WIDTH, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 4096}

TOKENIZER_TEXT = """\
# Instruction
Fill the audio semantic mask based on the given conditions:
Repaint the mask area based on the given conditions:
Generate audio semantic tokens based on the given conditions:
# Caption
pop rock funk soul jazz blues hip-hop electronic ambient lo-fi piano guitar drums bass synth strings vocals
female male choir upbeat chill dreamy dark happy sad energetic melodic acoustic cinematic
# Metas
- bpm: 120
- timesignature: 4
- keyscale: C major A minor
- duration: 30 seconds
# Languages
en zh ja ko es fr de unknown
# Lyric
[verse] [chorus] [bridge] [intro] [outro] [Instrumental]
la la la hello world the night is young we sing along
"""

MARKER_TEXT = """\
This is a TINY RANDOM ACE-Step 1.5 checkpoint written by acestep_app.acestep_15.tiny.write_tiny_checkpoint.
It has the official folder layout of ACE-Step/Ace-Step1.5 at the top and the diffusers layout in diffusers/,
with toy sizes and random weights, for tests and smoke runs only: everything it generates is noise.
Download the real weights with `acestep-app weights pull`.
"""


def write_tiny_checkpoint(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint under ``directory`` in both layouts; returns ``directory`` (official layout).

    Same seed, same weights. Takes a few seconds and ~2 MB.
    """
    import torch

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipeline = build_tiny_pipeline(torch.Generator().manual_seed(seed))
    write_diffusers_layout(pipeline, root / DIFFUSERS_FOLDER)
    write_official_layout(pipeline, root)
    write_tiny_planner_lm(root / LM_CHECKPOINTS[DEFAULT_LM].folder, seed=seed)
    return root


def build_tiny_pipeline(generator):
    """The tiny ``AceStepPipeline`` (turbo variant flags), random weights from ``generator``."""
    import torch
    from diffusers import AceStepPipeline, AceStepTransformer1DModel, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = build_tokenizer()
    text_encoder = Qwen3Model(Qwen3Config(vocab_size=len(tokenizer), **TEXT_ENCODER))
    modules = {
        "vae": AutoencoderOobleck(**VAE),
        "text_encoder": text_encoder,
        "transformer": AceStepTransformer1DModel(**TRANSFORMER, is_turbo=True, model_version="turbo"),
        "condition_encoder": AceStepConditionEncoder(**CONDITION_ENCODER),
        "audio_tokenizer": AceStepAudioTokenizer(**AUDIO_TOKENIZER),
        "audio_token_detokenizer": AceStepAudioTokenDetokenizer(**DETOKENIZER),
    }
    for module in modules.values():
        _offset_constant_parameters(module, generator)
        module.eval()
    with torch.no_grad():
        modules["condition_encoder"].silence_latent.copy_(_silence_latent(modules["vae"]))
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    return AceStepPipeline(tokenizer=tokenizer, scheduler=scheduler, **modules)


def build_tokenizer():
    """A byte-level BPE tokenizer (any text encodes) with Qwen's ``<|endoftext|>`` as end and padding token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TOKENIZER_TEXT.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def _silence_latent(vae):
    """The VAE's latent mean of one second of silence, tiled to 600 s ([1, T, C], the buffer layout)."""
    import torch

    with torch.no_grad():
        latent = vae.encode(torch.zeros(1, 2, SAMPLE_RATE)).latent_dist.mean  # [1, C, 25]
    repeats = -(-SILENCE_FRAMES // latent.shape[-1])
    return latent.repeat(1, 1, repeats)[..., :SILENCE_FRAMES].transpose(1, 2).contiguous()


def _offset_constant_parameters(model, generator) -> None:
    """Parameters that init leaves constant (norm scales, zero biases) get small random offsets.

    A weight that silently fails to load then shows up as a mismatch instead of matching its init.
    """
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() > 1 and bool((parameter == parameter.flatten()[0]).all()):
                parameter.add_((torch.randn(parameter.shape, generator=generator) * 0.05).to(parameter.dtype))


def write_diffusers_layout(pipeline, directory: Path) -> Path:
    pipeline.save_pretrained(directory)
    (directory / TINY_MARKER).write_text(MARKER_TEXT)
    return directory


def official_config(pipeline) -> dict:
    """The DiT folder's ``config.json``: the official model's field names for these module sizes."""
    transformer = dict(pipeline.transformer.config)
    encoder = dict(pipeline.condition_encoder.config)
    tokenizer = dict(pipeline.audio_tokenizer.config)
    shared = {key: transformer[key] for key in (*ATTENTION, "hidden_size", "intermediate_size", "num_hidden_layers",
                                                "in_channels", "audio_acoustic_hidden_dim", "patch_size")}
    return {
        "architectures": ["AceStepConditionGenerationModel"],
        "model_type": "acestep",
        **shared,
        "layer_types": list(pipeline.transformer.layer_types),
        "use_sliding_window": True,
        "max_position_embeddings": 32768,
        "text_hidden_dim": encoder["text_hidden_dim"],
        "timbre_hidden_dim": encoder["timbre_hidden_dim"],
        "num_lyric_encoder_hidden_layers": encoder["num_lyric_encoder_hidden_layers"],
        "num_timbre_encoder_hidden_layers": encoder["num_timbre_encoder_hidden_layers"],
        "pool_window_size": tokenizer["pool_window_size"],
        "fsq_dim": tokenizer["fsq_dim"],
        "fsq_input_levels": list(tokenizer["fsq_input_levels"]),
        "fsq_input_num_quantizers": tokenizer["fsq_input_num_quantizers"],
        "num_attention_pooler_hidden_layers": tokenizer["num_attention_pooler_hidden_layers"],
        "is_turbo": bool(transformer["is_turbo"]),
        "model_version": transformer["model_version"],
    }


def write_official_layout(pipeline, root: Path, dit_folder: str = DEFAULT_DIT_FOLDER) -> Path:
    import torch
    from safetensors.torch import save_file

    dit_dir = root / dit_folder
    dit_dir.mkdir(parents=True, exist_ok=True)
    encoder_state = dict(pipeline.condition_encoder.state_dict())
    silence = encoder_state.pop("silence_latent")  # shipped beside the weights, not in them
    components = {
        "transformer": pipeline.transformer.state_dict(),
        "condition_encoder": encoder_state,
        "audio_tokenizer": pipeline.audio_tokenizer.state_dict(),
        "audio_token_detokenizer": pipeline.audio_token_detokenizer.state_dict(),
    }
    state_dict = {key: tensor.contiguous() for key, tensor in join_official_state_dict(components).items()}
    save_file(state_dict, dit_dir / DIT_WEIGHTS)
    (dit_dir / DIT_CONFIG).write_text(json.dumps(official_config(pipeline), indent=2))
    torch.save(silence.transpose(1, 2).contiguous(), dit_dir / SILENCE_LATENT)
    pipeline.vae.save_pretrained(root / VAE_FOLDER)
    pipeline.text_encoder.save_pretrained(root / TEXT_ENCODER_FOLDER)
    pipeline.tokenizer.save_pretrained(root / TEXT_ENCODER_FOLDER)
    (root / TINY_MARKER).write_text(MARKER_TEXT)
    return root
