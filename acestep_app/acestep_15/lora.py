"""LoRA adapters on ACE-Step 1.5: diffusers' ``load_lora_weights``, with the scale diffusers drops put back.

Two formats load: the official PEFT adapter folders the ACE-Step 1.5 trainer writes
(``adapter_config.json`` + ``adapter_model.safetensors``, keys ``base_model.model.layers.{i}.{self_attn,
cross_attn}.{q,k,v,o}_proj.lora_{A,B}.weight`` on the DiT decoder), and diffusers-format files (keys on
``AceStepTransformer1DModel``'s names, ``transformer.`` prefix). diffusers' ``AceStepPipeline.lora_state_dict``
maps the official names onto its own (``q_proj`` -> ``to_q``, ``o_proj`` -> ``to_out.0``).

diffusers ignores ``adapter_config.json`` and infers ``lora_alpha = r``, so an official adapter trained
with r 8, alpha 16 would run at scaling 1 instead of PEFT's 2 (facts sheet §2, LoRA). The official 1.5
code applies PEFT's ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA) times its strength slider; so do we:
each adapter's diffusers weight is ``scale * (the adapter's own factor) / (the factor diffusers set)``,
read off the loaded layers. ``[lora].scaling`` does not change this family (its reference is the official
1.5 code, which applies the adapter's own alpha).

Adapters are loaded as PEFT layers once (named by content) and stay loaded, up to :data:`MAX_LOADED`;
a request activates its set with ``set_adapters`` and a request without any runs with the LoRA layers
disabled, which computes exactly the base layers (bit-identical to never loading one).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from acestep_app.errors import LoraError
from acestep_app.lora.adapter import AdapterFormatError, LoraAdapter, layer_scalings, parse_layers, strip_prefix

logger = logging.getLogger(__name__)

MAX_LOADED = 8  # adapters kept loaded as PEFT layers (least recently used ones are deleted)
FAMILY = "acestep-1.5"
_UNIFORM = 1e-6  # relative spread allowed between layers' corrections (float rounding of alpha / r)


@dataclass(frozen=True)
class AdapterUse:
    """One adapter at one scale, and the ``loras`` entry it came from (None: infra.toml or the CLI)."""

    adapter: LoraAdapter
    scale: float
    index: int | None = None


def adapter_name(adapter: LoraAdapter) -> str:
    """The PEFT adapter name of an adapter's content (PEFT names may not hold dots)."""
    return f"lora_{adapter.sha256[:24]}"


class PipelineAdapters:
    """The adapters an ``AceStepPipeline`` holds as PEFT layers, and which are active with which weight."""

    def __init__(self, pipeline, max_loaded: int = MAX_LOADED):
        self.pipeline = pipeline
        self.max_loaded = max_loaded
        self.key: tuple = ()
        self._loaded: OrderedDict[str, float] = OrderedDict()  # adapter name -> weight correction

    def check(self, use: AdapterUse) -> tuple[dict, LoraAdapter]:
        """diffusers' state dict of ``use.adapter`` and the adapter on diffusers' module names, checked against
        the transformer (:class:`LoraError` naming the entry when it does not fit)."""
        from diffusers import AceStepPipeline
        from torch import nn

        try:
            state_dict = AceStepPipeline.lora_state_dict(str(use.adapter.path))
            layers = parse_layers(state_dict)
        except (AdapterFormatError, ValueError, OSError) as error:
            raise LoraError(use.index, f"not a usable ACE-Step 1.5 LoRA adapter: {error}") from None
        # diffusers loads only `transformer.` keys: files on the DiT's own names (no prefix, or PEFT's) get it
        prefix = strip_prefix(list(state_dict))
        state_dict = {f"transformer.{key[len(prefix):]}": value for key, value in state_dict.items()}
        modules = dict(self.pipeline.transformer.named_modules())
        misfits = []
        for name, layer in layers.items():
            module = modules.get(name)
            if hasattr(module, "get_base_layer"):  # already wrapped by a loaded adapter
                module = module.get_base_layer()
            if not isinstance(module, nn.Linear):
                misfits.append(f"{name} (no Linear layer of that name in the ACE-Step 1.5 DiT)")
            elif tuple(layer.down.shape[1:]) != (module.in_features,) or layer.up.shape[0] != module.out_features:
                misfits.append(f"{name} (adapter {layer.up.shape[0]}x{layer.down.shape[1]}, "
                               f"model {module.out_features}x{module.in_features})")
        if misfits:
            shown = "; ".join(misfits[:3]) + (f"; and {len(misfits) - 3} more" if len(misfits) > 3 else "")
            raise LoraError(use.index, f"the adapter does not fit the ACE-Step 1.5 DiT: {shown}")
        return state_dict, dataclasses.replace(use.adapter, layers=layers)

    def use(self, uses: Sequence[AdapterUse]) -> float:
        """Activate ``uses`` (loading what is not loaded yet); returns the seconds it took (0: already active)."""
        key = tuple((use.adapter.sha256, float(use.scale)) for use in uses)
        if key == self.key:
            return 0.0
        started = time.perf_counter()
        weights: dict[str, float] = {}
        for use in uses:
            name = self._load(use)
            weights[name] = weights.get(name, 0.0) + use.scale * self._loaded[name]
        if weights:
            self.pipeline.enable_lora()
            self.pipeline.set_adapters(list(weights), list(weights.values()))
        elif self._loaded:
            self.pipeline.disable_lora()
        self.key = key
        self._evict(keep=set(weights))
        return time.perf_counter() - started

    def is_loaded(self, adapter: LoraAdapter) -> bool:
        return adapter_name(adapter) in self._loaded

    def _load(self, use: AdapterUse) -> str:
        name = adapter_name(use.adapter)
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return name
        state_dict, adapter = self.check(use)
        with warnings.catch_warnings():  # several adapters in one model is the point here
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            self.pipeline.load_lora_weights(state_dict, adapter_name=name)
        try:
            self._loaded[name] = self._correction(adapter, name, use.index)
        except LoraError:
            self.pipeline.delete_adapters(name)
            raise
        return name

    def _correction(self, adapter: LoraAdapter, name: str, index: int | None) -> float:
        """The adapter's own factor (PEFT's alpha / r) over the factor diffusers set; the same on every layer."""
        wanted = layer_scalings(adapter, 1.0, "adapter")
        modules = dict(self.pipeline.transformer.named_modules())
        missed = [module for module in wanted if name not in getattr(modules.get(module), "scaling", {})]
        if missed:
            raise LoraError(index, f"diffusers loaded no LoRA layer for {', '.join(missed[:3])}")
        ratios = [factor / modules[module].scaling[name] for module, factor in wanted.items()]
        if max(ratios) - min(ratios) > _UNIFORM * max(abs(ratio) for ratio in ratios):
            raise LoraError(index, "the adapter's layers have different alpha/rank ratios, which one adapter "
                                   "weight cannot express on ACE-Step 1.5")
        return ratios[0]

    def _evict(self, keep: set[str]) -> None:
        while len(self._loaded) > self.max_loaded:
            name = next((candidate for candidate in self._loaded if candidate not in keep), None)
            if name is None:
                return
            self.pipeline.delete_adapters(name)
            del self._loaded[name]
            logger.info("LoRA %s unloaded from the 1.5 DiT (more than %d loaded)", name, self.max_loaded)


class LoraSupport:
    """The 1.5 engine's adapters: infra.toml's active on every request, a request's ``loras`` on top.

    Same contract as the v1 family's: ``plan(request, logs)`` fetches and checks the request's adapters before
    the engine lock (:class:`LoraError` names the entry); ``use(plan)`` activates them under it.
    """

    def __init__(self, adapters: PipelineAdapters, library, settings, deploy: list[AdapterUse]):
        self.adapters = adapters
        self.library = library
        self.settings = settings
        self.deploy = deploy

    @classmethod
    def load(cls, pipeline, settings) -> LoraSupport:
        from acestep_app.errors import WeightsError
        from acestep_app.lora.library import AdapterLibrary

        library = AdapterLibrary(settings)
        adapters = PipelineAdapters(pipeline)
        deploy = []
        for entry in (entry for entry in settings.lora.adapters if entry.model == FAMILY):
            try:
                use = AdapterUse(library.load(entry.path, trusted=True), entry.scale)
                adapters.check(use)
            except LoraError as error:
                raise WeightsError(f"[[lora.adapters]] path = {entry.path!r}: {error.message}") from None
            deploy.append(use)
            logger.info("LoRA on the ACE-Step 1.5 DiT for every request: %s @ %g", entry.path, entry.scale)
        support = cls(adapters, library, settings, deploy)
        support.use([])
        return support

    def plan(self, request, logs: list[str]) -> list[AdapterUse]:
        from acestep_app.lora.schema import request_loras

        uses = []
        for index, lora in enumerate(request_loras(request)):
            use = AdapterUse(self.library.load(lora.path, index=index), lora.scale, index)
            if not self.adapters.is_loaded(use.adapter):
                self.adapters.check(use)
            logs.append(f"LoRA loras[{index}] @ {lora.scale:g}: {use.adapter.describe()}")
            uses.append(use)
        return uses

    def use(self, uses: Sequence[AdapterUse]) -> float:
        return self.adapters.use([*self.deploy, *uses])

    def describe(self) -> dict:
        return {"deploy": [f"{use.adapter.sha256[:12]} @ {use.scale:g}" for use in self.deploy],
                "per_request": self.settings.lora.per_request,
                "active": [f"{sha[:12]} @ {scale:g}" for sha, scale in self.adapters.key]}
