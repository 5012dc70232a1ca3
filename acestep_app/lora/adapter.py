"""A LoRA adapter file, read and checked: PEFT keys -> one (down, up) pair per adapted Linear.

The format both ACE-Step families share is a safetensors file of PEFT keys
``<module>.lora_A.weight`` (down, ``(r, in)``) and ``<module>.lora_B.weight`` (up, ``(out, r)``),
optionally ``<module>.lora_B.bias`` (``lora_bias=True``) and kohya-style ``<module>.alpha`` scalars.
Keys may carry a ``transformer.`` or ``base_model.model.`` prefix (diffusers' pipeline-level and PEFT's
own ``save_pretrained`` files); it is removed. The adapter's LoRA config (rank, alpha, rsLoRA) comes
from the safetensors header (``lora_adapter_metadata``, written by diffusers >= 0.34) or from the
``adapter_config.json`` beside the file; it only matters for the ``adapter`` scaling (docs/lora.md).

:func:`layer_scalings` turns a request's scale into each layer's factor on ``B @ A``:

* ``reference`` (the default): what the reference ACE-Step v1 loader ends up with. diffusers infers the
  LoraConfig from the tensors (alpha = the most common rank, no rsLoRA) and never reads the file's
  alpha, so a layer of rank ``r`` gets ``scale * r_common / r`` (``scale`` when all ranks agree).
* ``adapter``: the adapter's own training scale, ``scale * alpha / r`` (``alpha / sqrt(r)`` with rsLoRA).

Everything wrong with a file raises :class:`AdapterFormatError` with a reason a user can act on.
"""

from __future__ import annotations

import collections
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

WEIGHT_NAMES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
CONFIG_NAMES = ("adapter_config.json", "config.json")
METADATA_KEY = "lora_adapter_metadata"
KEY_PREFIXES = ("base_model.model.", "transformer.")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
KEY_PATTERN = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias|alpha)$")
MAX_LISTED = 5


class AdapterFormatError(ValueError):
    """The file is not a LoRA adapter this app can apply (the message says why)."""


@dataclass(frozen=True)
class LoraLayer:
    """One adapted Linear: ``W' = W + factor * up @ down`` (and ``b' = b + factor * up_bias``)."""

    down: torch.Tensor  # lora_A, (rank, in_features)
    up: torch.Tensor  # lora_B, (out_features, rank)
    up_bias: torch.Tensor | None = None  # lora_B.bias, (out_features,)
    alpha: float | None = None  # a per-module `.alpha` key

    @property
    def rank(self) -> int:
        return self.down.shape[0]


@dataclass(frozen=True)
class AdapterConfig:
    """The training-time LoRA config the file carries (PEFT's ``LoraConfig`` fields that scale it)."""

    rank: int | None = None
    alpha: float | None = None
    use_rslora: bool = False
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    source: str = "none"  # "safetensors metadata" | "<file name>" | "none"

    @classmethod
    def from_dict(cls, data: dict, source: str) -> AdapterConfig:
        def number(name: str):
            value = data.get(name)
            return value if isinstance(value, int | float) and not isinstance(value, bool) else None

        pattern = data.get("alpha_pattern") or {}
        if not isinstance(pattern, dict):
            raise AdapterFormatError(f"{source}: alpha_pattern must be an object")
        return cls(
            rank=number("r"),
            alpha=number("lora_alpha"),
            use_rslora=bool(data.get("use_rslora", False)),
            alpha_pattern={str(key): float(value) for key, value in pattern.items()},
            source=source,
        )

    def alpha_for(self, module: str) -> float | None:
        """PEFT's rule: an ``alpha_pattern`` key matching the module name's end wins over ``lora_alpha``."""
        for pattern, alpha in self.alpha_pattern.items():
            if re.match(rf"(.*\.)?({pattern})$", module):
                return alpha
        return self.alpha


@dataclass(frozen=True)
class LoraAdapter:
    """A parsed adapter: its layers by module name (no prefix), its config, and its identity."""

    sha256: str
    layers: dict[str, LoraLayer]
    config: AdapterConfig
    path: Path  # the safetensors file it was read from

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers.values()
                   for t in (layer.down, layer.up, layer.up_bias) if t is not None)

    def describe(self) -> str:
        ranks = sorted({layer.rank for layer in self.layers.values()})
        return f"{len(self.layers)} layers, rank {'/'.join(map(str, ranks))} ({self.sha256[:12]})"


def find_weights_file(folder: Path) -> Path:
    """The adapter's safetensors file in ``folder``: a known name, else the only ``.safetensors`` there."""
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(folder.glob("*.safetensors"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise AdapterFormatError(f"no .safetensors file in the adapter folder (expected {WEIGHT_NAMES[0]})")
    raise AdapterFormatError(f"several .safetensors files and none named {' or '.join(WEIGHT_NAMES)}")


def read_config_file(folder: Path) -> AdapterConfig | None:
    """``adapter_config.json`` (or a ``config.json`` holding a LoRA config, as the v1 RapMachine repo ships)."""
    for name in CONFIG_NAMES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise AdapterFormatError(f"{name} is not valid JSON ({error})") from None
        if isinstance(data, dict) and ("r" in data or "lora_alpha" in data):
            return AdapterConfig.from_dict(data, name)
    return None


def load_adapter(weights: Path, sha256: str, config: AdapterConfig | None = None) -> LoraAdapter:
    """Read and check the safetensors file ``weights``; ``config`` is used when its header has none."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise AdapterFormatError(f"not a valid safetensors file ({error})") from None
    header_config = _metadata_config(metadata)
    return LoraAdapter(sha256=sha256, layers=parse_layers(tensors), config=header_config or config or AdapterConfig(),
                       path=weights)


def _metadata_config(metadata: dict) -> AdapterConfig | None:
    raw = metadata.get(METADATA_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise AdapterFormatError(f"the header's {METADATA_KEY} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise AdapterFormatError(f"the header's {METADATA_KEY} is not a JSON object")
    if any(key.startswith("transformer.") for key in data):  # a pipeline-level file: the config per component
        data = {key.removeprefix("transformer."): value for key, value in data.items() if key.startswith("transformer.")}
    return AdapterConfig.from_dict(data, "safetensors metadata")


def strip_prefix(keys: list[str]) -> str:
    """The prefix every key shares among :data:`KEY_PREFIXES` (``""`` if none)."""
    for prefix in KEY_PREFIXES:
        if keys and all(key.startswith(prefix) for key in keys):
            return prefix
    return ""


def parse_layers(tensors: dict[str, torch.Tensor]) -> dict[str, LoraLayer]:
    """Group PEFT keys into layers and check every shape, dtype and value."""
    if not tensors:
        raise AdapterFormatError("the file holds no tensors")
    prefix = strip_prefix(list(tensors))
    parts: dict[str, dict[str, torch.Tensor]] = collections.defaultdict(dict)
    unknown = []
    for key, tensor in tensors.items():
        match = KEY_PATTERN.match(key[len(prefix):])
        if match is None:
            unknown.append(key)
            continue
        parts[match["module"]][match["part"]] = tensor
    if unknown:
        raise AdapterFormatError(f"unknown keys (not PEFT LoRA keys): {_listed(unknown)}")
    return {module: _layer(module, found) for module, found in parts.items()}


def _layer(module: str, found: dict[str, torch.Tensor]) -> LoraLayer:
    down, up = found.get("lora_A.weight"), found.get("lora_B.weight")
    if down is None or up is None:
        missing = "lora_A.weight" if down is None else "lora_B.weight"
        raise AdapterFormatError(f"{module}: {missing} is missing")
    for name, tensor in found.items():
        if tensor.dtype not in FLOAT_DTYPES:
            raise AdapterFormatError(f"{module}.{name}: dtype {tensor.dtype} is not a float type")
        if tensor.numel() and not torch.isfinite(tensor).all():
            raise AdapterFormatError(f"{module}.{name} holds NaN or infinite values")
    if down.dim() != 2 or up.dim() != 2:
        raise AdapterFormatError(f"{module}: lora_A and lora_B must be matrices, got shapes "
                                 f"{tuple(down.shape)} and {tuple(up.shape)} (only Linear layers are supported)")
    if down.shape[0] != up.shape[1] or down.shape[0] == 0:
        raise AdapterFormatError(f"{module}: rank mismatch, lora_A {tuple(down.shape)} vs lora_B {tuple(up.shape)}")
    bias = found.get("lora_B.bias")
    if bias is not None and tuple(bias.shape) != (up.shape[0],):
        raise AdapterFormatError(f"{module}: lora_B.bias has shape {tuple(bias.shape)}, expected ({up.shape[0]},)")
    alpha = found.get("alpha")
    if alpha is not None and alpha.numel() != 1:
        raise AdapterFormatError(f"{module}.alpha must be one number, got shape {tuple(alpha.shape)}")
    return LoraLayer(down=down, up=up, up_bias=bias, alpha=None if alpha is None else float(alpha.reshape(()).item()))


def layer_scalings(adapter: LoraAdapter, scale: float, scaling: str) -> dict[str, float]:
    """Each layer's factor on ``up @ down`` for ``scale`` under the ``reference`` or ``adapter`` rule."""
    if scaling == "reference":
        common_rank = collections.Counter(layer.rank for layer in adapter.layers.values()).most_common(1)[0][0]
        return {module: scale * common_rank / layer.rank for module, layer in adapter.layers.items()}
    if scaling != "adapter":
        raise ValueError(f"unknown LoRA scaling {scaling!r} (reference | adapter)")
    config = adapter.config
    factors = {}
    for module, layer in adapter.layers.items():
        alpha = layer.alpha if layer.alpha is not None else config.alpha_for(module)
        if alpha is None:  # no config anywhere: alpha = rank, the diffusers/PEFT convention
            alpha = layer.rank
        factors[module] = scale * alpha / (math.sqrt(layer.rank) if config.use_rslora else layer.rank)
    return factors


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")
