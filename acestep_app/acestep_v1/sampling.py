"""Flow-matching sampling for ACE-Step v1 text2music: schedules, omega-rescaled steps, guidance.

Conventions (spec §6): ``x_sigma = (1 - sigma) * x0 + sigma * noise``; the transformer predicts the
velocity ``dx/dsigma``; its timestep input is ``sigma * 1000``. The schedule comes from diffusers'
flow-match schedulers (shift 3.0), which produce exactly the reference sigmas; the step itself is
ours because the reference rescales each update around its mean ("omega", fal's granularity_scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SHIFT = 3.0
NUM_TRAIN_TIMESTEPS = 1000
SCHEDULERS = ("euler", "heun")
GUIDANCE_TYPES = ("cfg", "apg", "cfg_star")

APG_MOMENTUM = -0.75
APG_NORM_THRESHOLD = 2.5
CFG_STAR_ZERO_STEPS = 1

# Names of the model evaluations a guided step needs; "null" is the unconditional branch.
COND, TEXT_ONLY, NULL = "cond", "text_only", "null"


def omega_factor(granularity_scale: float) -> float:
    """Squash fal's granularity_scale (omega, -100..100) into the update gain (0.9, 1.1)."""
    return 0.9 + 0.2 / (1.0 + math.exp(-0.1 * granularity_scale))


def rescale_update(update: torch.Tensor, gain: float) -> torch.Tensor:
    """Scale the update's deviation from its mean; one scalar mean over the whole batch tensor."""
    mean = update.mean()
    return (update - mean) * gain + mean


class FlowMatchSampler:
    """Euler or Heun flow-matching steps over the shifted schedule, with the omega rescale.

    ``timesteps`` lists the model evaluations in order (Heun: ``2N - 1`` of them, each inner
    timestep twice); call :meth:`step` once per evaluation.
    """

    def __init__(
        self,
        scheduler: str,
        num_inference_steps: int,
        granularity_scale: float,
        device=None,
        sigma_range: tuple[float, float] | None = None,
    ):
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        self.scheduler = scheduler
        self.num_inference_steps = num_inference_steps
        self.gain = omega_factor(granularity_scale)
        self.timesteps, self.sigmas = flow_match_schedule(scheduler, num_inference_steps, device, sigma_range)
        self._index = 0
        self._heun_state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.timesteps)

    def skip_to(self, index: int) -> None:
        """Continue from evaluation ``index`` (a Heun index must be a predictor, i.e. even)."""
        if self.scheduler == "heun" and index % 2:
            raise ValueError("a Heun run can only resume at a predictor step (even index)")
        self._index = index
        self._heun_state = None

    def step(self, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """Advance ``sample`` by one evaluation; math in float32, result in the velocity's dtype."""
        k = self._index
        self._index += 1
        sample = sample.to(torch.float32)
        if self.scheduler == "euler":
            update = (self.sigmas[k + 1] - self.sigmas[k]) * velocity
            return (sample + rescale_update(update, self.gain)).to(velocity.dtype)
        return self._heun_step(k, velocity, sample)

    def _heun_step(self, k: int, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        if self._heun_state is None:  # predictor (first order)
            sigma, sigma_next = self.sigmas[k], self.sigmas[k + 1]
            derivative = (sample - (sample - velocity * sigma)) / sigma
            dt = sigma_next - sigma
            if k + 1 < len(self.timesteps):  # the last step (to sigma 0) has no corrector
                self._heun_state = (derivative, dt, sample)
        else:  # corrector: the model ran at sigma_next on the predicted sample
            sigma_next = self.sigmas[k]
            derivative = (sample - (sample - velocity * sigma_next)) / sigma_next
            previous_derivative, dt, sample = self._heun_state
            derivative = 0.5 * (previous_derivative + derivative)
            self._heun_state = None
        return (sample + rescale_update(derivative * dt, self.gain)).to(velocity.dtype)


def flow_match_schedule(
    scheduler: str, num_inference_steps: int, device=None, sigma_range: tuple[float, float] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(timesteps, sigmas)`` in float32 as the reference schedulers produce them (sigmas end in 0).

    ``sigma_range`` (max, min) replaces the training table's range the steps are spaced over (the
    schedule is still shifted), as audio-to-audio does.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

    cls = FlowMatchEulerDiscreteScheduler if scheduler == "euler" else FlowMatchHeunDiscreteScheduler
    schedule = cls(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=SHIFT)
    if sigma_range is not None:
        schedule.sigma_max, schedule.sigma_min = sigma_range
    schedule.set_timesteps(num_inference_steps, device=device)
    return schedule.timesteps.to(torch.float32), schedule.sigmas.to(torch.float32)


@dataclass(frozen=True)
class GuidanceConfig:
    """fal's guidance parameters, with the reference's meaning (spec §6.4-6.8)."""

    guidance_type: str = "apg"
    guidance_scale: float = 15.0
    guidance_interval: float = 0.5
    guidance_interval_decay: float = 0.0
    minimum_guidance_scale: float = 3.0
    tag_guidance_scale: float = 5.0
    lyric_guidance_scale: float = 1.5

    def __post_init__(self) -> None:
        if self.guidance_type not in GUIDANCE_TYPES:
            raise ValueError(f"guidance_type must be one of {GUIDANCE_TYPES}, got {self.guidance_type!r}")

    @property
    def enabled(self) -> bool:
        """The reference turns every kind of guidance off at guidance_scale exactly 0 or 1."""
        return self.guidance_scale not in (0.0, 1.0)

    @property
    def double_condition(self) -> bool:
        """Tag + lyric guidance replaces cfg/apg/cfg_star when both scales exceed 1."""
        return self.tag_guidance_scale > 1.0 and self.lyric_guidance_scale > 1.0

    @property
    def branches(self) -> tuple[str, ...]:
        """Model evaluations of a guided step, in the reference's order."""
        return (COND, TEXT_ONLY, NULL) if self.double_condition else (COND, NULL)

    def window(self, num_inference_steps: int) -> range:
        """Loop indices that are guided: the middle ``guidance_interval`` share of the requested steps.

        As in the reference, the window is computed on the requested step count even for Heun,
        whose loop runs ``2N - 1`` times, so Heun guides indices in the first half of its loop.
        """
        if not self.enabled:
            return range(0)
        start = int(num_inference_steps * (1 - self.guidance_interval) / 2)
        end = int(num_inference_steps * (self.guidance_interval / 2 + 0.5))
        return range(start, end)

    def scale_at(self, index: int, window: range) -> float:
        """Single-condition guidance scale at loop index ``index``, decayed linearly if asked."""
        if self.guidance_interval_decay <= 0:
            return self.guidance_scale
        span = len(window) - 1
        progress = (index - window.start) / span if span > 0 else 0.0
        drop = (self.guidance_scale - self.minimum_guidance_scale) * progress * self.guidance_interval_decay
        return self.guidance_scale - drop


class Guider:
    """Combines a guided step's model evaluations into one velocity; holds the APG momentum."""

    def __init__(self, config: GuidanceConfig):
        self.config = config
        self._momentum: torch.Tensor | None = None

    def combine(self, index: int, window: range, velocities: Mapping[str, torch.Tensor]) -> torch.Tensor:
        config = self.config
        cond, null = velocities[COND], velocities[NULL]
        if config.double_condition:
            tag, lyric = config.tag_guidance_scale, config.lyric_guidance_scale
            return (1 - tag) * null + (tag - lyric) * velocities[TEXT_ONLY] + lyric * cond
        scale = config.scale_at(index, window)
        if config.guidance_type == "cfg":
            return null + scale * (cond - null)
        if config.guidance_type == "cfg_star":
            return cfg_zero_star(cond, null, scale, index)
        return self.apg(cond, null, scale)

    def apg(self, cond: torch.Tensor, null: torch.Tensor, scale: float) -> torch.Tensor:
        """Adaptive projected guidance; the difference carries this guider's momentum across calls."""
        difference = cond - null
        if self._momentum is not None:
            difference = difference + APG_MOMENTUM * self._momentum
        self._momentum = difference
        dims = (-1, -2)
        norm = difference.norm(p=2, dim=dims, keepdim=True)
        difference = difference * torch.minimum(torch.ones_like(norm), APG_NORM_THRESHOLD / norm)
        unit = F.normalize(cond.double(), dim=dims)
        difference64 = difference.double()
        parallel = (difference64 * unit).sum(dim=dims, keepdim=True) * unit
        orthogonal = (difference64 - parallel).to(difference.dtype)
        return cond + (scale - 1) * orthogonal


def cfg_zero_star(cond: torch.Tensor, null: torch.Tensor, scale: float, index: int) -> torch.Tensor:
    """CFG-zero*: project the unconditional prediction, and predict zero for the first steps."""
    if index <= CFG_STAR_ZERO_STEPS:
        return torch.zeros_like(cond)
    batch = cond.shape[0]
    flat_cond, flat_null = cond.reshape(batch, -1), null.reshape(batch, -1)
    dot = (flat_cond * flat_null).sum(dim=1, keepdim=True)
    alpha = (dot / (flat_null.pow(2).sum(dim=1, keepdim=True) + 1e-8)).view(batch, *([1] * (cond.dim() - 1)))
    return null * alpha + scale * (cond - null * alpha)


VelocityFn = Callable[[torch.Tensor, torch.Tensor, Sequence[str]], Mapping[str, torch.Tensor]]
StepCallback = Callable[[int, int, torch.Tensor], None]


def denoise(
    velocity_fn: VelocityFn,
    latents: torch.Tensor,
    sampler: FlowMatchSampler,
    guidance: GuidanceConfig,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the text2music loop from initial noise to final latents.

    ``velocity_fn(latents, timestep, branches)`` returns one velocity per requested branch
    (``cond``, ``text_only``, ``null``); it decides whether they run batched or one by one.
    ``callback(index, total, latents)`` runs after every step (it may raise to cancel).
    """
    window = guidance.window(sampler.num_inference_steps)
    guider = Guider(guidance)
    total = len(sampler)
    for index, timestep in enumerate(sampler.timesteps):
        guided = index in window
        velocities = velocity_fn(latents, timestep, guidance.branches if guided else (COND,))
        velocity = guider.combine(index, window, velocities) if guided else velocities[COND]
        latents = sampler.step(velocity, latents)
        if callback is not None:
            callback(index, total, latents)
    return latents


def count_forwards(scheduler: str, num_inference_steps: int, guidance: GuidanceConfig, batched: bool) -> int:
    """Transformer forwards one request costs (batched guidance: one per loop iteration)."""
    iterations = 2 * num_inference_steps - 1 if scheduler == "heun" else num_inference_steps
    if batched:
        return iterations
    guided = len(guidance.window(num_inference_steps))
    return iterations + guided * (len(guidance.branches) - 1)
