"""LoRA on ACE-Step 1.5: official PEFT folders and diffusers-format files through diffusers' load_lora_weights,
with the alpha/r scale diffusers drops put back; switching; adapters that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acestep_app.acestep_15 import checkpoint
from acestep_app.acestep_15.generation import Renderer
from acestep_app.acestep_15.lora import AdapterUse, PipelineAdapters
from acestep_app.acestep_15.tiny import DIFFUSERS_FOLDER
from acestep_app.errors import LoraError
from acestep_app.lora.adapter import find_weights_file, load_adapter, read_config_file
from lora_files import adapter_tensors, linear_shapes, official_15_adapter, write_adapter

ARGUMENTS = {"prompt": "dreamy synth-pop", "lyrics": "[verse]\nneon rivers", "audio_duration": 1.0,
             "num_inference_steps": 3}
SEED = 5
# The same float32 CPU computation on both sides; they differ only in where the LoRA scale is multiplied in
# (into PEFT's per-layer scaling once, or by diffusers around each forward): a few float32 ulps per LoRA term,
# carried through 3 steps and the VAE. Audio peaks at 0.89 (-1 dBFS), so 1e-5 is ~100 ulps at full scale.
ATOL = 1e-5


def parsed(folder):
    return load_adapter(find_weights_file(folder), folder.name, read_config_file(folder))


@pytest.fixture(scope="module")
def ours(tiny15_checkpoint):
    return checkpoint.load_pipeline(tiny15_checkpoint)


@pytest.fixture(scope="module")
def loaded(ours):
    """The one adapter set of ``ours`` (as an engine holds one per pipeline)."""
    return PipelineAdapters(ours)


@pytest.fixture(scope="module")
def adapters(ours, tmp_path_factory):
    from diffusers import AceStepPipeline

    root = tmp_path_factory.mktemp("adapters15")
    transformer = ours.transformer
    official = official_15_adapter(root / "official", transformer, rank=4, alpha=8, seed=1)
    rslora = official_15_adapter(root / "rslora", transformer, rank=4, alpha=6, seed=2, use_rslora=True)
    shapes = linear_shapes(transformer, ("to_q", "to_v", "gate_proj"))
    diffusers_file = root / "diffusers"  # written by diffusers itself, its LoraConfig in the header
    AceStepPipeline.save_lora_weights(diffusers_file, transformer_lora_layers=adapter_tensors(shapes, rank=2, seed=3),
                                      transformer_lora_adapter_metadata={"r": 2, "lora_alpha": 6, "use_rslora": False,
                                                                         "target_modules": ["to_q", "to_v", "gate_proj"]})
    v1 = write_adapter(root / "v1", adapter_tensors({"transformer_blocks.0.attn.to_q": (32, 32)}))
    return {"official": official, "rslora": rslora, "diffusers": diffusers_file, "v1": v1}


def render(pipeline, **extra) -> np.ndarray:
    return Renderer(pipeline)(seed=[SEED], **ARGUMENTS, **extra).waveforms[0]


def reference_render(tiny15_checkpoint, folder, attention_scale: float) -> np.ndarray:
    """diffusers alone: its pipeline, its load_lora_weights on the adapter as published, the scale passed in."""
    from diffusers import AceStepPipeline

    pipeline = AceStepPipeline.from_pretrained(tiny15_checkpoint / DIFFUSERS_FOLDER)
    pipeline.load_lora_weights(str(folder), weight_name=find_weights_file(folder).name)
    generator = torch.Generator("cpu").manual_seed(SEED)
    return pipeline(generator=generator, attention_kwargs={"scale": attention_scale}, **ARGUMENTS).audios[0].numpy()


@pytest.mark.parametrize(("name", "scale", "corrected"), [
    ("official", 0.6, 0.6 * 8 / 4),  # PEFT's alpha / r, which diffusers drops for official folders
    ("rslora", 0.6, 0.6 * 6 / 2),  # rsLoRA: alpha / sqrt(r)
    ("diffusers", 0.6, 0.6),  # diffusers reads the header's alpha itself: nothing to correct
])
def test_an_adapter_at_scale_s_equals_diffusers_with_the_scale_corrected(tiny15_checkpoint, ours, loaded, adapters,
                                                                         name, scale, corrected):
    loaded.use([AdapterUse(parsed(adapters[name]), scale)])
    try:
        audio = render(ours)
    finally:
        loaded.use([])
    expected = reference_render(tiny15_checkpoint, adapters[name], corrected)
    np.testing.assert_allclose(audio, expected, rtol=0, atol=ATOL)
    assert not np.allclose(audio, render(ours), rtol=0, atol=1e-3)  # the adapter does change the audio


def test_switching_a_b_none_equals_fresh_runs(tiny15_checkpoint, ours, loaded, adapters):
    loaded.use([])
    plain = render(ours)
    a, b = (AdapterUse(parsed(adapters[name]), 0.8) for name in ("official", "diffusers"))
    sequence = []
    for uses in ([a], [b], [], [a, b]):
        loaded.use(uses)
        sequence.append(render(ours))
    loaded.use([])
    assert np.array_equal(sequence[2], plain)  # LoRA layers disabled compute exactly the base layers
    assert np.array_equal(plain, render(checkpoint.load_pipeline(tiny15_checkpoint)))  # = never loaded
    for uses, expected in zip(([a], [b], [a, b]), (sequence[0], sequence[1], sequence[3])):
        fresh = checkpoint.load_pipeline(tiny15_checkpoint)
        PipelineAdapters(fresh).use(uses)
        assert np.array_equal(render(fresh), expected)
    assert loaded.use([]) == 0.0  # the same set again: nothing to do


def test_adapters_that_do_not_fit_are_refused_before_loading(tiny15_checkpoint, adapters):
    fresh = checkpoint.load_pipeline(tiny15_checkpoint)
    loaded = PipelineAdapters(fresh)
    with pytest.raises(LoraError, match="no Linear layer of that name in the ACE-Step 1.5 DiT") as caught:
        loaded.use([AdapterUse(parsed(adapters["v1"]), 1.0, index=2)])
    assert caught.value.detail()["loc"] == ["body", "loras", 2, "path"]
    assert not fresh.get_list_adapters().get("transformer")


def test_engine_support_applies_deploy_time_adapters_and_checks_request_ones_first(tiny15_checkpoint, adapters,
                                                                                  tmp_path):
    """What the 1.5 engine holds: infra.toml's adapters active on every request; a request's checked up front."""
    from types import SimpleNamespace

    from acestep_app.acestep_15.lora import LoraSupport
    from acestep_app.lora.schema import LoraWeight
    from acestep_app.settings import Settings
    from local_http import LocalServer, body_route

    settings = Settings.from_dict({
        "lora": {"per_request": True, "cache_dir": str(tmp_path / "cache"),
                 "adapters": [{"path": str(adapters["official"]), "scale": 0.6, "model": "acestep-1.5"},
                              {"path": str(adapters["v1"]), "model": "acestep-v1"}]},  # another family's: ignored
        "security": {"allow_private_urls": True}})
    fresh = checkpoint.load_pipeline(tiny15_checkpoint)
    support = LoraSupport.load(fresh, settings)
    np.testing.assert_allclose(render(fresh), reference_render(tiny15_checkpoint, adapters["official"], 0.6 * 8 / 4),
                               rtol=0, atol=ATOL)
    with LocalServer({"/v1.safetensors": body_route(find_weights_file(adapters["v1"]).read_bytes())}) as server:
        request = SimpleNamespace(loras=[LoraWeight(path=server.url("/v1.safetensors"))])
        with pytest.raises(LoraError, match="does not fit the ACE-Step 1.5 DiT") as caught:
            support.plan(request, [])
    assert caught.value.index == 0 and len(fresh.get_list_adapters()["transformer"]) == 1
    [deployed] = support.describe()["deploy"]
    assert deployed.endswith(" @ 0.6") and support.describe()["active"] == [deployed]


def test_the_15_engine_applies_a_requests_adapter_for_that_request_only(tiny15_checkpoint, adapters, tmp_path):
    from acestep_app.acestep_15.schema import TextToMusicInput
    from acestep_app.engine.family import get_family
    from acestep_app.lora.schema import with_loras
    from acestep_app.settings import Settings
    from local_http import LocalServer, body_route

    settings = Settings.from_dict({
        "app": {"families": ["acestep-1.5"]}, "engine": {"device": "cpu", "prompt_backend": "fallback"},
        "models": {"acestep-1.5": {"weights_dir": str(tiny15_checkpoint), "planner": "none"}},
        "lora": {"per_request": True, "cache_dir": str(tmp_path / "cache")}, "security": {"allow_private_urls": True}})
    engine = get_family("acestep-1.5").load_engine(settings)
    request = with_loras(TextToMusicInput)
    body = {"prompt": "dreamy synth-pop", "lyrics": "[verse]\nneon nights", "duration": 1.0, "num_inference_steps": 2,
            "seed": 5}
    weights = find_weights_file(adapters["diffusers"]).read_bytes()
    with LocalServer({"/style.safetensors": body_route(weights)}) as server:
        plain = engine.text_to_music(request(**body)).waveform
        styled = engine.text_to_music(request(**body, loras=[{"path": server.url("/style.safetensors")}]))
        again = engine.text_to_music(request(**body)).waveform
    assert np.array_equal(plain, again) and not np.array_equal(plain, styled.waveform)
    assert styled.timings["lora"] > 0 and any(line.startswith("LoRA loras[0] @ 1") for line in styled.logs)
