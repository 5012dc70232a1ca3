"""Writers of small LoRA adapter files for tests: PEFT keys of a model's Linear layers, random but seeded."""

from __future__ import annotations

import json
from pathlib import Path

V1_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "linear_q", "linear_k", "linear_v", "speaker_embedder")


def linear_shapes(transformer, targets=V1_TARGETS) -> dict[str, tuple[int, int]]:
    """``{module name: (out_features, in_features)}`` of the Linear layers whose names end in a target."""
    from torch import nn

    return {name: (module.out_features, module.in_features) for name, module in transformer.named_modules()
            if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)}


def adapter_tensors(shapes: dict[str, tuple[int, int]], rank: int = 2, seed: int = 0, std: float = 0.05) -> dict:
    """PEFT key -> tensor for every module in ``shapes``: lora_A uniform, lora_B normal (non-zero)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (out_features, in_features) in shapes.items():
        bound = in_features**-0.5
        tensors[f"{name}.lora_A.weight"] = (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound
        tensors[f"{name}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * std
    return tensors


def write_adapter(folder: Path, tensors: dict, config: dict | None = None, metadata: dict | None = None) -> Path:
    """``folder/pytorch_lora_weights.safetensors`` (+ ``adapter_config.json`` when ``config`` is given)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in tensors.items()}, folder / "pytorch_lora_weights.safetensors",
              metadata={"format": "pt", **(metadata or {})})
    if config is not None:
        (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def model_adapter(folder: Path, transformer, rank: int = 2, seed: int = 0, targets=V1_TARGETS) -> Path:
    """A random adapter that fits ``transformer``, written to ``folder``."""
    return write_adapter(folder, adapter_tensors(linear_shapes(transformer, targets), rank, seed))


OFFICIAL_15_NAMES = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out.0": "o_proj"}


def official_15_adapter(folder: Path, transformer, rank: int = 4, alpha: float = 8, seed: int = 0,
                        use_rslora: bool = False) -> Path:
    """A PEFT adapter folder as the ACE-Step 1.5 trainer writes it: ``base_model.model.`` keys with the
    official ``q/k/v/o_proj`` names on the decoder's attention, and its ``adapter_config.json``."""
    shapes = linear_shapes(transformer, tuple(OFFICIAL_15_NAMES))
    tensors = {}
    for key, value in adapter_tensors(shapes, rank, seed).items():
        module, _, part = key.partition(".lora_")
        for ours, official in OFFICIAL_15_NAMES.items():
            if module.endswith("." + ours):
                module = module[: -len(ours)] + official
        tensors[f"base_model.model.{module}.lora_{part}"] = value
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "use_rslora": use_rslora,
              "target_modules": sorted(OFFICIAL_15_NAMES.values()), "lora_dropout": 0.0, "bias": "none"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder
