"""Load ACE-Step 1.5 checkpoints into diffusers' ``AceStepPipeline``, in either of their two layouts.

* **diffusers layout** (``model_index.json`` at the root, e.g. ``ACE-Step/acestep-v15-xl-turbo-diffusers``):
  ``AceStepPipeline.from_pretrained`` reads it as it is.
* **official layout** (``ACE-Step/Ace-Step1.5`` and the per-variant DiT repos)::

      <root>/acestep-v15-turbo/   config.json, model.safetensors (or a sharded index), silence_latent.pt
      <root>/vae/                 AutoencoderOobleck
      <root>/Qwen3-Embedding-0.6B/ the text encoder and its tokenizer

  The DiT folder holds one state dict for four diffusers modules. Its keys map onto diffusers' names by
  prefix (``decoder.`` -> ``transformer``, ``encoder.`` -> ``condition_encoder``, ``tokenizer.`` ->
  ``audio_tokenizer``, ``detokenizer.`` -> ``audio_token_detokenizer``, ``null_condition_emb`` -> the
  condition encoder's) and by attention names (``q_proj k_proj v_proj o_proj q_norm k_norm`` ->
  ``to_q to_k to_v to_out.0 norm_q norm_k``; the DiT's ``proj_in.1.``/``proj_out.1.`` ->
  ``proj_in_conv.``/``proj_out_conv.``). ``silence_latent.pt`` is stored [1, C, T] and becomes the
  condition encoder's ``silence_latent`` buffer [1, T, C]. The mapping happens at load time, in memory.

Module widths are read from the weights' shapes (the XL DiT's condition encoder is narrower than the DiT,
and its config names are not published), the rest of each module's config from the DiT's ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError

MODEL_INDEX = "model_index.json"
DIT_CONFIG = "config.json"
DIT_WEIGHTS = "model.safetensors"
DIT_WEIGHTS_INDEX = "model.safetensors.index.json"
SILENCE_LATENT = "silence_latent.pt"
VAE_FOLDER = "vae"
TEXT_ENCODER_FOLDER = "Qwen3-Embedding-0.6B"
DEFAULT_DIT_FOLDER = "acestep-v15-turbo"

COMPONENT_PREFIXES = {
    "decoder.": "transformer",
    "encoder.": "condition_encoder",
    "tokenizer.": "audio_tokenizer",
    "detokenizer.": "audio_token_detokenizer",
}
NULL_CONDITION_KEY = "null_condition_emb"
ATTENTION_RENAMES = (
    (".q_proj.", ".to_q."),
    (".k_proj.", ".to_k."),
    (".v_proj.", ".to_v."),
    (".o_proj.", ".to_out.0."),
    (".q_norm.", ".norm_q."),
    (".k_norm.", ".norm_k."),
)
TRANSFORMER_RENAMES = (("proj_in.1.", "proj_in_conv."), ("proj_out.1.", "proj_out_conv."))


@dataclass(frozen=True)
class CheckpointLayout:
    kind: str  # "diffusers" | "official"
    root: Path
    dit_folder: str | None = None  # official layout: the DiT folder under root

    @property
    def dit_dir(self) -> Path | None:
        return self.root / self.dit_folder if self.dit_folder else None


def find_layout(root: str | Path, dit_folder: str | None = None) -> CheckpointLayout:
    """Which layout ``root`` holds; official checkpoints use ``dit_folder`` (or the one DiT folder present)."""
    root = Path(root)
    if (root / MODEL_INDEX).is_file():
        return CheckpointLayout("diffusers", root)
    candidates = [dit_folder] if dit_folder else [DEFAULT_DIT_FOLDER, *_dit_folders(root)]
    for folder in candidates:
        if (root / folder / DIT_CONFIG).is_file():
            return CheckpointLayout("official", root, folder)
    wanted = dit_folder or f"{DEFAULT_DIT_FOLDER}/ (or another DiT folder)"
    raise WeightsError(
        f"{root} is not an ACE-Step 1.5 checkpoint: no {MODEL_INDEX} (diffusers layout) and no "
        f"{wanted}{DIT_CONFIG} (official layout)"
    )


def _dit_folders(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / SILENCE_LATENT).is_file() and (p / DIT_CONFIG).is_file())


def is_diffusers_layout(root: str | Path) -> bool:
    return (Path(root) / MODEL_INDEX).is_file()


# --------------------------------------------------------------------------------------------------
# key mapping


def _rename(key: str, renames) -> str:
    for old, new in renames:
        key = key.replace(old, new)
    return key


def split_official_state_dict(state_dict: dict) -> dict[str, dict]:
    """The official DiT state dict as one state dict per diffusers module (keys renamed)."""
    components: dict[str, dict] = {name: {} for name in COMPONENT_PREFIXES.values()}
    unknown = []
    for key, tensor in state_dict.items():
        if key == NULL_CONDITION_KEY:
            components["condition_encoder"][NULL_CONDITION_KEY] = tensor
            continue
        prefix = next((p for p in COMPONENT_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
            continue
        name = COMPONENT_PREFIXES[prefix]
        new_key = _rename(key[len(prefix):], ATTENTION_RENAMES)
        if name == "transformer":
            new_key = _rename_at_start(new_key, TRANSFORMER_RENAMES)
        components[name][new_key] = tensor
    if unknown:
        raise WeightsError(f"official ACE-Step 1.5 weights hold keys of no known module: {sorted(unknown)[:8]}")
    return components


def join_official_state_dict(components: dict[str, dict]) -> dict:
    """Inverse of :func:`split_official_state_dict` (writes the official layout of diffusers modules)."""
    joined = {}
    prefix_of = {name: prefix for prefix, name in COMPONENT_PREFIXES.items()}
    inverse_attention = tuple((new, old) for old, new in ATTENTION_RENAMES)
    inverse_transformer = tuple((new, old) for old, new in TRANSFORMER_RENAMES)
    for name, state_dict in components.items():
        for key, tensor in state_dict.items():
            if name == "condition_encoder" and key == NULL_CONDITION_KEY:
                joined[NULL_CONDITION_KEY] = tensor
                continue
            if name == "transformer":
                key = _rename_at_start(key, inverse_transformer)
            joined[prefix_of[name] + _rename(key, inverse_attention)] = tensor
    return joined


def _rename_at_start(key: str, renames) -> str:
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old):]
    return key


# --------------------------------------------------------------------------------------------------
# module configs from the official config.json + the weights' shapes


def _layer_count(state_dict: dict, prefix: str) -> int:
    indices = {int(key[len(prefix):].split(".", 1)[0]) for key in state_dict if key.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def _attention_config(state_dict: dict, attention_prefix: str, head_dim: int) -> dict:
    return {
        "num_attention_heads": state_dict[f"{attention_prefix}to_q.weight"].shape[0] // head_dim,
        "num_key_value_heads": state_dict[f"{attention_prefix}to_k.weight"].shape[0] // head_dim,
    }


def _shared_config(config: dict) -> dict:
    keys = ("head_dim", "rope_theta", "attention_bias", "attention_dropout", "rms_norm_eps", "sliding_window")
    return {key: config[key] for key in keys if key in config}


def transformer_config(config: dict, state_dict: dict) -> dict:
    head_dim = config.get("head_dim", 128)
    hidden_size, in_channels, patch_size = state_dict["proj_in_conv.weight"].shape
    layers = _layer_count(state_dict, "layers.")
    result = {
        **_shared_config(config),
        "hidden_size": hidden_size,
        "intermediate_size": state_dict["layers.0.mlp.gate_proj.weight"].shape[0],
        "num_hidden_layers": layers,
        **_attention_config(state_dict, "layers.0.self_attn.", head_dim),
        "in_channels": in_channels,
        "audio_acoustic_hidden_dim": state_dict["proj_out_conv.weight"].shape[1],
        "patch_size": patch_size,
        "encoder_hidden_size": state_dict["condition_embedder.weight"].shape[1],
        "is_turbo": bool(config.get("is_turbo", False)),
        "model_version": config.get("model_version"),
    }
    layer_types = config.get("layer_types")
    if layer_types:
        result["layer_types"] = list(layer_types)[:layers]
    return result


def condition_encoder_config(config: dict, state_dict: dict) -> dict:
    head_dim = config.get("head_dim", 128)
    hidden_size, text_hidden_dim = state_dict["text_projector.weight"].shape
    return {
        **_shared_config(config),
        "hidden_size": hidden_size,
        "intermediate_size": state_dict["lyric_encoder.layers.0.mlp.gate_proj.weight"].shape[0],
        "text_hidden_dim": text_hidden_dim,
        "timbre_hidden_dim": state_dict["timbre_encoder.embed_tokens.weight"].shape[1],
        "num_lyric_encoder_hidden_layers": _layer_count(state_dict, "lyric_encoder.layers."),
        "num_timbre_encoder_hidden_layers": _layer_count(state_dict, "timbre_encoder.layers."),
        **_attention_config(state_dict, "lyric_encoder.layers.0.self_attn.", head_dim),
    }


def audio_tokenizer_config(config: dict, state_dict: dict) -> dict:
    head_dim = config.get("head_dim", 128)
    hidden_size, acoustic_dim = state_dict["audio_acoustic_proj.weight"].shape
    codebook_dim, fsq_dim = state_dict["quantizer.project_in.weight"].shape
    levels = list(config.get("fsq_input_levels") or [8, 8, 8, 5, 5, 5])
    if len(levels) != codebook_dim:
        raise WeightsError(f"fsq_input_levels {levels} do not match the quantizer's {codebook_dim} dimensions")
    return {
        **_shared_config(config),
        "hidden_size": hidden_size,
        "intermediate_size": state_dict["attention_pooler.layers.0.mlp.gate_proj.weight"].shape[0],
        "audio_acoustic_hidden_dim": acoustic_dim,
        "pool_window_size": config.get("pool_window_size", 5),
        "fsq_dim": fsq_dim,
        "fsq_input_levels": levels,
        "fsq_input_num_quantizers": config.get("fsq_input_num_quantizers", 1),
        "num_attention_pooler_hidden_layers": _layer_count(state_dict, "attention_pooler.layers."),
        **_attention_config(state_dict, "attention_pooler.layers.0.self_attn.", head_dim),
    }


def audio_token_detokenizer_config(config: dict, state_dict: dict) -> dict:
    head_dim = config.get("head_dim", 128)
    acoustic_dim, hidden_size = state_dict["proj_out.weight"].shape
    return {
        **_shared_config(config),
        "hidden_size": hidden_size,
        "intermediate_size": state_dict["layers.0.mlp.gate_proj.weight"].shape[0],
        "audio_acoustic_hidden_dim": acoustic_dim,
        "pool_window_size": state_dict["special_tokens"].shape[1],
        "num_attention_pooler_hidden_layers": _layer_count(state_dict, "layers."),
        **_attention_config(state_dict, "layers.0.self_attn.", head_dim),
    }


CONFIG_BUILDERS = {
    "transformer": transformer_config,
    "condition_encoder": condition_encoder_config,
    "audio_tokenizer": audio_tokenizer_config,
    "audio_token_detokenizer": audio_token_detokenizer_config,
}


# --------------------------------------------------------------------------------------------------
# loading


def read_official_config(dit_dir: Path) -> dict:
    return json.loads((dit_dir / DIT_CONFIG).read_text())


def read_official_state_dict(dit_dir: Path) -> dict:
    """``model.safetensors`` or the shards a ``model.safetensors.index.json`` names."""
    from safetensors.torch import load_file

    single, index = dit_dir / DIT_WEIGHTS, dit_dir / DIT_WEIGHTS_INDEX
    if single.is_file():
        return load_file(single)
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state_dict = {}
        for shard in shards:
            state_dict.update(load_file(dit_dir / shard))
        return state_dict
    raise WeightsError(f"{dit_dir} holds neither {DIT_WEIGHTS} nor {DIT_WEIGHTS_INDEX}")


def read_silence_latent(dit_dir: Path):
    """``silence_latent.pt`` [1, C, T] as the condition encoder's buffer layout [1, T, C]."""
    import torch

    path = dit_dir / SILENCE_LATENT
    if not path.is_file():
        raise WeightsError(f"{path} is missing: the official DiT folder ships the encoded-silence latent there")
    return torch.load(path, map_location="cpu", weights_only=True).transpose(1, 2).contiguous()


def _module_classes():
    from diffusers import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )

    return {
        "transformer": AceStepTransformer1DModel,
        "condition_encoder": AceStepConditionEncoder,
        "audio_tokenizer": AceStepAudioTokenizer,
        "audio_token_detokenizer": AceStepAudioTokenDetokenizer,
    }


def build_official_modules(dit_dir: Path, torch_dtype) -> dict:
    """The four diffusers modules of an official DiT folder, weights loaded (strict)."""
    import torch

    config = read_official_config(dit_dir)
    components = split_official_state_dict(read_official_state_dict(dit_dir))
    components["condition_encoder"]["silence_latent"] = read_silence_latent(dit_dir)
    modules = {}
    for name, cls in _module_classes().items():
        state_dict = components[name]
        if not state_dict:
            if name in ("audio_tokenizer", "audio_token_detokenizer"):
                modules[name] = None  # optional in diffusers: no cover task or planner codes without them
                continue
            raise WeightsError(f"{dit_dir / DIT_WEIGHTS} has no weights for the {name}")
        try:
            kwargs = CONFIG_BUILDERS[name](config, state_dict)
        except KeyError as missing:
            raise WeightsError(f"{dit_dir}: the {name} weights lack {missing}") from None
        # Built on the meta device (no random init of billions of parameters), then given the real tensors;
        # buffers computed in __init__ (the FSQ levels) are rebuilt on the CPU first.
        with torch.device("meta"):
            module = cls(**kwargs)
        _materialize_computed_buffers(module, cls, kwargs)
        try:
            module.load_state_dict(state_dict, strict=True, assign=True)
        except RuntimeError as error:
            raise WeightsError(f"{dit_dir}: the {name} weights do not fit its config: {error}") from None
        modules[name] = _cast(module, torch_dtype).eval()
    return modules


def _cast(module, torch_dtype):
    """Parameters in ``torch_dtype`` (integer buffers stay integer), as ``from_pretrained(dtype=...)`` does."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point() and tensor.dtype != torch_dtype:
            tensor.data = tensor.data.to(torch_dtype)
    return module


def _materialize_computed_buffers(module, cls, kwargs) -> None:
    """Non-persistent buffers (not in any state dict) get their CPU values from a CPU-built twin's submodule."""
    meta_buffers = [name for name, buffer in module.named_buffers() if buffer.is_meta]
    persistent = set(module.state_dict().keys())
    computed = [name for name in meta_buffers if name not in persistent]
    if not computed:
        return
    owners = {name.rsplit(".", 1)[0] for name in computed}
    twin = cls(**kwargs)
    for owner in owners:
        cpu_owner = twin.get_submodule(owner)
        meta_owner = module.get_submodule(owner)
        for buffer_name, buffer in cpu_owner.named_buffers(recurse=False):
            if f"{owner}.{buffer_name}" in computed:
                meta_owner.register_buffer(buffer_name, buffer, persistent=False)


def load_pipeline(root: str | Path, *, dit_folder: str | None = None, torch_dtype=None):
    """An ``AceStepPipeline`` from either layout (CPU, ``torch_dtype`` or float32)."""
    import torch
    from diffusers import AceStepPipeline

    torch_dtype = torch_dtype or torch.float32
    layout = find_layout(root, dit_folder)
    if layout.kind == "diffusers":
        return AceStepPipeline.from_pretrained(layout.root, dtype=torch_dtype)
    return _load_official(layout, torch_dtype)


def _load_official(layout: CheckpointLayout, torch_dtype):
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from transformers import AutoModel, AutoTokenizer

    for folder in (VAE_FOLDER, TEXT_ENCODER_FOLDER):
        if not (layout.root / folder).is_dir():
            raise WeightsError(f"{layout.root / folder} is missing (official ACE-Step 1.5 layout)")
    modules = build_official_modules(layout.dit_dir, torch_dtype)
    text_dir = layout.root / TEXT_ENCODER_FOLDER
    return AceStepPipeline(
        vae=AutoencoderOobleck.from_pretrained(layout.root / VAE_FOLDER, dtype=torch_dtype),
        text_encoder=AutoModel.from_pretrained(text_dir, dtype=torch_dtype),
        tokenizer=AutoTokenizer.from_pretrained(text_dir),
        # ACE-Step's schedule is computed by the pipeline and fed as sigmas in [0, 1] (facts §2).
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
        **modules,
    )
