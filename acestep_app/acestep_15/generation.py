"""One ACE-Step 1.5 render on diffusers' ``AceStepPipeline``: request fields -> pipeline arguments -> audio.

Everything here calls the pipeline's public ``__call__``; nothing of it is re-implemented:

* **Seeds.** A seed ``s`` is ``torch.Generator("cpu").manual_seed(s)``: the DiT's initial noise is drawn on
  the CPU, so a seed gives the same noise on any device. The pipeline samples the VAE posterior of
  source and reference audio from torch's global RNG, so tasks with audio inputs run under
  ``torch.random.fork_rng`` seeded with ``s`` too: the returned seed replays the same audio.
* **Defaults.** Arguments a request leaves at the pipeline's defaults are passed at those defaults,
  so ``render`` of a plain request equals ``AceStepPipeline.__call__`` with the same prompt, lyrics,
  duration, steps and generator. On turbo checkpoints ``guidance_scale`` is passed as 1.0: the pipeline
  ignores guidance there anyway (and would log a warning per request).
* **Repaint strength.** At 1 the window is regenerated from noise, exactly the pipeline's repaint. Below
  1 the pipeline starts from the source's latents noised to level ``strength`` (flow matching:
  ``x_t = (1 - t) x_0 + t * noise``) and integrates the same shifted schedule scaled into
  ``[strength, 0]``, passed as ``latents`` and ``timesteps``: SDEdit inside the repaint task.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

StepCallback = Callable[[int, int], None]  # (step, total)


@dataclass(frozen=True)
class Conditions:
    """What the DiT is conditioned on (the planner's plan, or the request's own fields)."""

    prompt: str
    lyrics: str
    duration: float | None
    vocal_language: str = "en"
    bpm: int | None = None
    key_scale: str | None = None
    time_signature: str | None = None
    audio_codes: str = ""

    def pipeline_arguments(self) -> dict[str, Any]:
        arguments = {"prompt": self.prompt, "lyrics": self.lyrics, "audio_duration": self.duration,
                     "vocal_language": self.vocal_language, "bpm": self.bpm, "keyscale": self.key_scale,
                     "timesignature": self.time_signature}  # fmt: skip
        if self.audio_codes:
            arguments["audio_codes"] = self.audio_codes
        return arguments


@dataclass
class Rendered:
    """One pipeline call's audio (a ``(2, N)`` float32 CPU tensor per seed) and what it cost."""

    seeds: list[int]
    waveforms: list
    sample_rate: int
    num_forwards: int
    timings: dict[str, float] = field(default_factory=dict)


def sampling_arguments(request, *, is_turbo: bool) -> dict[str, Any]:
    """The request's sampler fields as pipeline arguments (guidance 1.0 on turbo: the pipeline ignores it)."""
    return {
        "num_inference_steps": request.num_inference_steps,
        "guidance_scale": 1.0 if is_turbo else request.guidance_scale,
        "shift": request.shift,
    }


def strength_schedule(num_inference_steps: int, shift: float, strength: float) -> list[float]:
    """The pipeline's shifted schedule (``t = s*u / (1 + (s-1)*u)`` over ``u`` = 1..1/N), scaled to start at ``strength``."""
    steps = [1.0 - index / num_inference_steps for index in range(num_inference_steps)]
    return [strength * shift * u / (1.0 + (shift - 1.0) * u) for u in steps]


class Renderer:
    """Calls an ``AceStepPipeline`` once per group of seeds; the call shape :func:`~acestep_app.takes.sample_takes` uses.

    ``renderer(seed=[s1, s2], batch_size=2, callback=on_step, **arguments)`` renders one take per seed
    (one generator per row, so a row's noise equals its seed's single-take noise).
    """

    def __init__(self, pipeline):
        self.pipeline = pipeline

    @property
    def is_turbo(self) -> bool:
        return bool(self.pipeline.is_turbo)

    @property
    def sample_rate(self) -> int:
        return int(self.pipeline.sample_rate)

    def __call__(self, *, seed: Sequence[int], batch_size: int | None = None, callback: StepCallback | None = None,
                 global_seed: bool = False, strength: float = 1.0, **arguments) -> Rendered:
        import torch

        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        seeds = list(seed)
        arguments = _batched(arguments, len(seeds))
        generators = [torch.Generator("cpu").manual_seed(value) for value in seeds]
        arguments["generator"] = generators[0] if len(generators) == 1 else generators
        total = arguments["num_inference_steps"]
        started = time.perf_counter()
        with torch.random.fork_rng(devices=_rng_devices(self.pipeline)):
            if global_seed:
                torch.manual_seed(seeds[0])  # the VAE posterior samples of source / reference audio
            if strength < 1.0:
                arguments.update(self._from_source(arguments, strength, seeds))
                total = len(arguments["timesteps"])
            counter = _StepCounter(callback, total)
            output = self.pipeline(**arguments, output_type="pt", callback_on_step_end=counter)
        seconds = time.perf_counter() - started
        forwards = counter.steps * (2 if _blends_cover(arguments) else 1)
        waveforms = [audio.detach().to("cpu", torch.float32) for audio in output.audios]
        return Rendered(seeds, waveforms, self.sample_rate, forwards, {"render": seconds})

    def _from_source(self, arguments: dict, strength: float, seeds: list[int]) -> dict:
        """Start latents (the source noised to ``strength``) and the matching schedule for a partial repaint."""
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        pipeline = self.pipeline
        device, dtype = pipeline.device, pipeline.transformer.dtype
        source, _ = pipeline.prepare_src_latents(device=device, dtype=dtype, batch_size=len(seeds),
                                                 src_audio=arguments["src_audio"])
        generator = arguments["generator"]
        noise = randn_tensor(source.shape, generator=generator, device=device, dtype=dtype)
        latents = (1.0 - strength) * source + strength * noise
        schedule = strength_schedule(arguments["num_inference_steps"], arguments.get("shift", 3.0), strength)
        return {"latents": latents.to(dtype), "timesteps": schedule}


class _StepCounter:
    """``callback_on_step_end``: counts executed steps and reports them (raising from the report cancels)."""

    def __init__(self, report: StepCallback | None, total: int):
        self.report, self.total, self.steps = report, total, 0

    def __call__(self, pipeline, step: int, timestep, callback_kwargs: dict) -> dict:
        self.steps = step + 1
        if self.report is not None:
            self.report(self.steps, self.total)
        return callback_kwargs


def _batched(arguments: dict, batch_size: int) -> dict:
    """Per-row arguments as lists when several seeds share a call (the pipeline batches on ``prompt``)."""
    arguments = dict(arguments)
    if batch_size > 1:
        for name in ("prompt", "lyrics", "vocal_language"):
            if name in arguments:
                arguments[name] = [arguments[name]] * batch_size
    return arguments


def _blends_cover(arguments: dict) -> bool:
    return arguments.get("task_type") == "cover" and arguments.get("audio_cover_strength", 1.0) < 1.0


def _rng_devices(pipeline) -> list:
    return [pipeline.device] if pipeline.device.type == "cuda" else []


def stereo_tensor(waveform: np.ndarray, sample_rate: int, target_rate: int, seconds: float | None = None):
    """``(2, N)`` float32 audio at ``target_rate`` as a torch tensor, cut or zero-padded to ``seconds``."""
    import torch

    from ..audio.resample import resample

    tensor = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    tensor = resample(tensor, int(sample_rate), int(target_rate))
    if seconds is not None:
        length = math.ceil(seconds * target_rate)
        tensor = tensor[..., :length]
        if tensor.shape[-1] < length:
            tensor = torch.nn.functional.pad(tensor, (0, length - tensor.shape[-1]))
    return tensor.contiguous()
