"""LoRA adapters on the v1 DiT: merged into the adapted Linear weights, undone from an exact copy.

The reference loads an adapter as PEFT wrappers (``base(x) + scaling * B(A(x))``); merging
``W' = W + scaling * B @ A`` is the same function (the fixtures' README measures <= 4.1e-6 on the final
latents in float32) and costs nothing per step, so the sampler, the cross-attention cache and compiled
graphs run unchanged. Each adapter layer names a module of :class:`ACEStepTransformer2DModel`
(``transformer_blocks.{i}.attn.to_q``, ``lyric_encoder.encoders.{i}.self_attn.linear_q``,
``speaker_embedder``...); any ``nn.Linear`` of the transformer may be adapted.

:class:`MergedAdapters` keeps what is merged now. ``use(plan)`` first puts back the original weights of
the previous adapters (copied before they were changed, so "none" after "A" is bit-identical to never
loading), then merges the new ones; a request with the same adapters as the last one costs nothing. If a
merge fails part way, every layer changed so far is restored before the error propagates, so the model
is never left half-modified.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from acestep_app.errors import LoraError
from acestep_app.lora.adapter import LoraAdapter, layer_scalings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterUse:
    """One adapter at one scale, and the ``loras`` entry it came from (None: infra.toml or the CLI)."""

    adapter: LoraAdapter
    scale: float
    index: int | None = None


@dataclass(frozen=True)
class MergePlan:
    """Checked adapters, ready to merge: per module, the (up, down, up_bias, factor) terms to add."""

    key: tuple  # identity of the adapter set: ((sha256, scale), ...) plus the scaling rule
    terms: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]]]

    @property
    def empty(self) -> bool:
        return not self.terms


NO_ADAPTERS = MergePlan(key=(), terms={})


def plan_merge(transformer: nn.Module, uses: Sequence[AdapterUse], scaling: str) -> MergePlan:
    """Check every adapter against ``transformer`` (module names, Linear layers, shapes) before any change.

    Raises:
        LoraError: naming the ``loras`` entry whose adapter does not fit this model.
    """
    if not uses:
        return NO_ADAPTERS
    modules = dict(transformer.named_modules())
    terms: dict[str, list] = {}
    for use in uses:
        misfits = []
        for name, layer in use.adapter.layers.items():
            module = modules.get(name)
            if not isinstance(module, nn.Linear):
                misfits.append(f"{name} (no Linear layer of that name in the ACE-Step v1 transformer)")
            elif layer.down.shape[1] != module.in_features or layer.up.shape[0] != module.out_features:
                misfits.append(f"{name} (adapter {layer.up.shape[0]}x{layer.down.shape[1]}, "
                               f"model {module.out_features}x{module.in_features})")
            elif layer.up_bias is not None and module.bias is None:
                misfits.append(f"{name} (adapter has a bias, the layer has none)")
        if misfits:
            shown = "; ".join(misfits[:3]) + (f"; and {len(misfits) - 3} more" if len(misfits) > 3 else "")
            raise LoraError(use.index, f"the adapter does not fit the ACE-Step v1 transformer: {shown}")
        for name, factor in layer_scalings(use.adapter, use.scale, scaling).items():
            layer = use.adapter.layers[name]
            terms.setdefault(name, []).append((layer.up, layer.down, layer.up_bias, factor))
    key = (scaling, *((use.adapter.sha256, float(use.scale)) for use in uses))
    return MergePlan(key=key, terms=terms)


class MergedAdapters:
    """The adapters merged into one transformer right now, and the original weights to undo them."""

    def __init__(self, transformer: nn.Module):
        self.transformer = transformer
        self.key: tuple = ()
        self._originals: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def use(self, plan: MergePlan) -> float:
        """Make ``plan`` the merged set; returns the seconds the switch took (0 when it was already merged)."""
        if plan.key == self.key:
            return 0.0
        started = time.perf_counter()
        self.restore()
        try:
            self._merge_all(plan, keep_originals=True)
        except BaseException:
            self.restore()
            raise
        self.key = plan.key
        if self.transformer.device.type == "cuda":
            torch.cuda.synchronize(self.transformer.device)
        seconds = time.perf_counter() - started
        logger.debug("LoRA switch to %s in %.3fs (%d layers)", plan.key or "none", seconds, len(plan.terms))
        return seconds

    def merge_for_good(self, plan: MergePlan) -> None:
        """Merge ``plan`` without keeping the originals (deploy-time adapters: they define the base model)."""
        self._merge_all(plan, keep_originals=False)

    def _merge_all(self, plan: MergePlan, keep_originals: bool) -> None:
        modules = dict(self.transformer.named_modules())
        with torch.no_grad():
            for name, terms in plan.terms.items():
                self._merge(name, modules[name], terms, keep_originals)

    def restore(self) -> None:
        """Put every changed layer back exactly as it was loaded."""
        modules = dict(self.transformer.named_modules())
        with torch.no_grad():
            for name, (weight, bias) in self._originals.items():
                modules[name].weight.copy_(weight)
                if bias is not None:
                    modules[name].bias.copy_(bias)
        self._originals.clear()
        self.key = ()

    def _merge(self, name: str, module: nn.Linear, terms, keep_original: bool) -> None:
        weight = module.weight
        has_bias = any(bias is not None for _, _, bias, _ in terms)
        if keep_original:
            self._originals[name] = (weight.detach().clone(), module.bias.detach().clone() if has_bias else None)
        merged = weight.float()
        for up, down, _, factor in terms:
            up, down = (t.to(device=weight.device, dtype=torch.float32) for t in (up, down))
            merged = merged + factor * (up @ down)
        weight.copy_(merged.to(weight.dtype))
        if has_bias:
            bias = module.bias.float()
            for _, _, up_bias, factor in terms:
                if up_bias is not None:
                    bias = bias + factor * up_bias.to(device=bias.device, dtype=torch.float32)
            module.bias.copy_(bias.to(module.bias.dtype))


FAMILY = "acestep-v1"  # the `model` of [[lora.adapters]] entries meant for this family


class LoraSupport:
    """The v1 engine's adapters: infra.toml's merged for good at load, a request's merged while it runs.

    ``plan(request)`` fetches and checks the request's ``loras`` (raising :class:`LoraError` for the
    entry at fault before any model work); ``use(plan)`` switches the merged set under the engine's lock.
    """

    def __init__(self, merged: MergedAdapters, library, settings, deploy: list[str]):
        self.merged = merged
        self.library = library
        self.settings = settings
        self.deploy = deploy

    @classmethod
    def load(cls, transformer: nn.Module, settings) -> LoraSupport:
        from acestep_app.errors import WeightsError
        from acestep_app.lora.library import AdapterLibrary

        library = AdapterLibrary(settings)
        entries = [entry for entry in settings.lora.adapters if entry.model == FAMILY]
        uses, described = [], []
        for entry in entries:
            try:
                adapter = library.load(entry.path, trusted=True)
                plan_merge(transformer, [AdapterUse(adapter, entry.scale)], settings.lora.scaling)
            except LoraError as error:
                raise WeightsError(f"[[lora.adapters]] path = {entry.path!r}: {error.message}") from None
            uses.append(AdapterUse(adapter, entry.scale))
            described.append(f"{entry.path} @ {entry.scale:g}: {adapter.describe()}")
        MergedAdapters(transformer).merge_for_good(plan_merge(transformer, uses, settings.lora.scaling))
        for line in described:
            logger.info("LoRA merged into the model: %s", line)
        return cls(MergedAdapters(transformer), library, settings, described)

    def plan(self, request, logs: list[str]) -> MergePlan:
        from acestep_app.lora.schema import request_loras

        uses = [AdapterUse(self.library.load(lora.path, index=index), lora.scale, index)
                for index, lora in enumerate(request_loras(request))]
        plan = plan_merge(self.merged.transformer, uses, self.settings.lora.scaling)
        for use in uses:
            logs.append(f"LoRA loras[{use.index}] @ {use.scale:g}: {use.adapter.describe()}")
        return plan

    def use(self, plan: MergePlan) -> float:
        return self.merged.use(plan)

    def describe(self) -> dict:
        active = [f"{sha[:12]} @ {scale:g}" for sha, scale in self.merged.key[1:]]
        return {"deploy": self.deploy, "per_request": self.settings.lora.per_request,
                "scaling": self.settings.lora.scaling, "active": active}
