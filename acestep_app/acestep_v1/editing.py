"""ACE-Step v1 editing tasks on latents: retake, repaint, extend, audio-to-audio and FlowEdit.

The task objects are what ``AceStepPipeline.__call__(..., task=...)`` takes; the functions below are
the latent-space algorithms of the editing spec (§3-5), free of model and conditioning code: the
pipeline hands them a velocity function. Frame numbers use the reference's ``fr(s)``, which
truncates toward zero (``fr(-1.0) = -10``).

Where the reference crashes or silently drops input, :class:`Extend` does the sensible thing
instead (README, "Editing endpoints: decisions"); :class:`Repaint` keeps the reference's frame
arithmetic so that reference cases reproduce, except that it never crashes either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from acestep_app.acestep_v1.sampling import COND, NULL, GuidanceConfig, Guider, VelocityFn

NUM_TRAIN_TIMESTEPS = 1000
LATENT_RATE = 44100 / 512 / 8  # latent frames per second
MAX_FRAMES = 2583  # fr(240 s): the longest song the model was trained on
EDIT_PRESETS = {"remix": (0.2, 0.4), "lyrics": (0.6, 1.0)}  # FlowEdit (n_min, n_max), the UI's presets

Seeds = int | Sequence[int] | None
NoiseSource = Callable[[int], torch.Tensor]  # frames -> the next (B, 8, 16, frames) draw of a generator set


def latent_frames(seconds: float) -> int:
    """The reference's frame count for ``seconds`` (44.1 kHz, 4096 samples per frame), truncated toward 0."""
    return int(seconds * 44100 / 512 / 8)


# -- tasks --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retake:
    """A variation of a text2music run: the start noise is turned by ``variance`` towards a second draw.

    ``seed`` feeds the second ("retake") generators; variance 0 is text2music, 1 an unrelated song.
    """

    variance: float = 0.5
    seed: Seeds = None


@dataclass(frozen=True)
class Repaint:
    """Regenerate seconds [start, end) of ``source`` (C, N) at ``sample_rate``; the rest is kept.

    Reference semantics (§3.2): a range covering the whole source is a :class:`Retake` of its length; a
    negative ``start`` or an ``end`` past the source becomes an extend, with the reference's pad
    arithmetic (the right pad is shortened by the left one). ``variance`` (0-1) sets how much of the
    range changes: the first ``(1 - variance)`` of the steps are skipped and the region starts from
    the source noised to that level.

    ``within_source`` reads the range our way instead (:func:`plan_inpaint`): clamped to the source,
    an end at the source's end covering its last partial frame, the whole song repainted rather
    than retaken, and variance 0 returning the source rather than noise.
    """

    source: torch.Tensor
    sample_rate: int
    start: float
    end: float
    variance: float = 0.5
    seed: Seeds = None
    within_source: bool = False


@dataclass(frozen=True)
class Extend:
    """Add ``before`` / ``after`` seconds of new music around ``source``; the source frames are kept.

    Unlike the reference, each side gets the length asked for (the right pad is not shortened by the
    left one), a side may be longer than the source, and nothing is trimmed at 240 s (callers bound
    the total). The right pad is ``fr(D + after) - L``, exactly what the reference adds when ``before`` is 0.
    """

    source: torch.Tensor
    sample_rate: int
    before: float = 0.0
    after: float = 0.0
    variance: float = 1.0
    seed: Seeds = None


@dataclass(frozen=True)
class AudioToAudio:
    """Start from ``reference`` noised to ``1 - strength`` and denoise the rest of the way (§4)."""

    reference: torch.Tensor
    sample_rate: int
    strength: float = 0.5


@dataclass(frozen=True)
class FlowEdit:
    """Edit ``source`` from its (tags, lyrics) to (target_tags, target_lyrics) with FlowEdit (§5).

    Steps [n_min * N, n_max * N) are edit steps (``n_avg`` noise draws each), later ones sample from
    the edited latent with the target condition. ``seed`` feeds the one generator FlowEdit uses.
    Batch size 1 only; always APG, no ERG, Euler schedule whatever the scheduler.
    """

    source: torch.Tensor
    sample_rate: int
    target_tags: str
    target_lyrics: str
    n_min: float = 0.0
    n_max: float = 1.0
    n_avg: int = 1
    seed: Seeds = None


EditTask = Retake | Repaint | Extend | AudioToAudio | FlowEdit


# -- memory layout -----------------------------------------------------------------------------------
# In bfloat16 the DiT's output depends on its input latents' memory format (channels-last latents take
# other convolution kernels and feed block 0 a contiguous stream; docs/fidelity.md). The reference's
# encoded source latents are channels-last, and elementwise ops, F.pad and torch.cat keep the layout of
# their leading operand, so which DiT inputs are channels-last follows from its op order, which the
# functions here keep. Where we build a tensor another way, the layout is set explicitly.


def memory_format_of(latents: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for channels-last (B, C, H, W) latents, else ``torch.contiguous_format``."""
    channels_last = latents.dim() == 4 and latents.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last and not latents.is_contiguous() else torch.contiguous_format


def batch_copies(latents: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` copies of ``latents`` along the batch axis, in the same memory format.

    For a batched guidance forward: ``Tensor.repeat`` returns a contiguous tensor, which would round
    channels-last latents differently from the reference's per-branch (or ``torch.cat``) forwards.
    """
    return torch.cat([latents] * count).contiguous(memory_format=memory_format_of(latents))


# -- retake noise -----------------------------------------------------------------------------------


def retake_weights(variance: float, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of variance * pi / 2 as 0-dim tensors in ``dtype`` (the angle is rounded to it first)."""
    angle = torch.tensor(variance * math.pi / 2, dtype=torch.float32, device=device).to(dtype)
    return angle.cos(), angle.sin()


def mix_noise(first: torch.Tensor, second: torch.Tensor, variance: float) -> torch.Tensor:
    """cos(v pi/2) * first + sin(v pi/2) * second."""
    cos, sin = retake_weights(variance, first.dtype, first.device)
    return cos * first + sin * second


def skipped_steps(num_inference_steps: int, variance: float) -> int:
    """Loop iterations a repaint/extend skips: int(N * (1 - variance)) (negative when variance > 1)."""
    return int(num_inference_steps * (1 - variance))


# -- repaint / extend plans -------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionPlan:
    """Where a repaint/extend regenerates, on the source's latent frames.

    ``left_pad`` / ``right_pad`` new frames go around the source; without pads, frames
    [start, end) of the source are regenerated. ``retake``: the range is the whole source, which
    the reference treats as a retake of the source's length.
    """

    source_frames: int
    left_pad: int = 0
    right_pad: int = 0
    start: int = 0
    end: int = 0
    retake: bool = False

    @property
    def is_extend(self) -> bool:
        return self.left_pad > 0 or self.right_pad > 0

    @property
    def frames(self) -> int:
        return self.left_pad + self.source_frames + self.right_pad


def plan_repaint(start: float, end: float, source_frames: int) -> RegionPlan:
    """The reference's reading of a repaint range in seconds (§3.2, §3.5), pad arithmetic included."""
    first, last = latent_frames(start), latent_frames(end)
    is_extend = first < 0 or last > source_frames
    if last - first == source_frames and not is_extend:
        return RegionPlan(source_frames, retake=True)
    if not is_extend:
        return RegionPlan(source_frames, start=first, end=last)
    left = -first if first < 0 else 0
    right = last - (left + source_frames) if last > source_frames else 0
    if right < 0:
        raise ValueError(
            f"repaint range {start}..{end} s: the right extension ({last - source_frames} frames) is shorter than "
            f"the left one ({left}); the reference computes a negative right pad here and fails"
        )
    return RegionPlan(source_frames, left_pad=left, right_pad=right)


def plan_inpaint(start: float, end: float, source_frames: int, source_seconds: float) -> RegionPlan:
    """Our inpaint range: [start, end) clamped to [0, D]; an end at D covers the source's last frame.

    Never a retake (the whole range is still repainted with ``variance``) and never an extend.
    """
    start, end = (min(max(value, 0.0), source_seconds) for value in (start, end))
    first = source_frames if start >= source_seconds else min(latent_frames(start), source_frames)
    last = source_frames if end >= source_seconds else min(latent_frames(end), source_frames)
    return RegionPlan(source_frames, start=first, end=max(first, last))


def plan_extend(before: float, after: float, source_frames: int, source_seconds: float) -> RegionPlan:
    """Pads for an :class:`Extend`: fr(before) on the left, fr(D + after) - L on the right (never negative)."""
    if before < 0 or after < 0:
        raise ValueError(f"extension lengths must be >= 0, got before={before}, after={after}")
    left = latent_frames(before)
    right = max(0, latent_frames(source_seconds + after) - source_frames) if after > 0 else 0
    return RegionPlan(source_frames, left_pad=left, right_pad=right)


@dataclass
class RegionStart:
    """Tensors of a repaint/extend run (§3.4-3.5): all on the padded frame grid."""

    source: torch.Tensor  # x0: (1, 8, 16, F) source latents, zero frames in the pads
    target_noise: torch.Tensor  # z0: (B, 8, 16, F) the noise the regenerated frames head from
    mask: torch.Tensor  # (B, 8, 16, F) 1 where frames are regenerated, in the latents' dtype
    initial: torch.Tensor  # the state before the first executed step


def region_start(
    plan: RegionPlan,
    source: torch.Tensor,
    first: torch.Tensor,
    second: torch.Tensor,
    variance: float,
    more_noise: NoiseSource,
) -> RegionStart:
    """Build x0, z0 and the mask from the source latents and the two noise draws (of the source's length).

    A pad longer than the source takes further draws from the second generator set (``more_noise``):
    the reference slices its pads out of source-length noise and fails there.
    """
    batch, frames = first.shape[0], plan.frames
    mask = torch.zeros(batch, *first.shape[1:3], frames, dtype=first.dtype, device=first.device)
    if not plan.is_extend:
        mask[..., plan.start : plan.end] = 1
        target = torch.where(mask == 1, mix_noise(first, second, variance), first)
        return RegionStart(source, target, mask, first)
    length = plan.source_frames
    longest = max(length, plan.left_pad, plan.right_pad)
    pad_noise = second if longest == length else torch.cat([second, more_noise(longest - length)], dim=-1)
    pieces, padded = [], [source]
    if plan.left_pad:
        mask[..., : plan.left_pad] = 1
        pieces.append(pad_noise[..., : plan.left_pad])
        padded.insert(0, source.new_zeros(*source.shape[:-1], plan.left_pad))
    pieces.append(first)
    if plan.right_pad:
        mask[..., frames - plan.right_pad :] = 1
        pieces.append(pad_noise[..., longest - plan.right_pad : longest])
        padded.append(source.new_zeros(*source.shape[:-1], plan.right_pad))
    target = torch.cat(pieces, dim=-1)
    # The reference zero-pads the source with F.pad, which keeps its (channels-last) layout.
    padded_source = torch.cat(padded, dim=-1).contiguous(memory_format=memory_format_of(source))
    return RegionStart(padded_source, target, mask, target)


StepCallback = Callable[[int, int, torch.Tensor], None]


def repaint_denoise(
    velocity_fn: VelocityFn,
    start: RegionStart,
    timesteps: torch.Tensor,
    num_inference_steps: int,
    skip: int,
    guidance: GuidanceConfig,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """The masked loop of §3.6 over ``timesteps`` (Heun's doubled list included).

    Iterations before ``skip`` do nothing; at ``skip`` the state becomes the source noised to that
    level (regenerated frames noised towards z0). Each executed step is a plain Euler step on the
    guided velocity (no omega), after which the kept frames are reset to the source noised to the
    next level, so they end exactly on the source.
    """
    window = guidance.window(num_inference_steps)
    guider = Guider(guidance)
    x0, z0, mask = start.source, start.target_noise, start.mask
    latents = start.initial
    zero = timesteps.new_zeros(())
    total = len(timesteps) - max(skip, 0)
    for index, timestep in enumerate(timesteps):
        if index < skip:
            continue
        level = timestep / NUM_TRAIN_TIMESTEPS
        if index == skip:
            latents = x0.clone() + ((1 - level) * x0 + level * z0) - x0
        guided = index in window
        velocities = velocity_fn(latents, timestep, guidance.branches if guided else (COND,))
        velocity = guider.combine(index, window, velocities) if guided else velocities[COND]
        next_level = timesteps[index + 1] / NUM_TRAIN_TIMESTEPS if index + 1 < len(timesteps) else zero
        latents = (latents.float() + (next_level - level) * velocity).to(latents.dtype)
        renoised = (1 - next_level) * x0 + next_level * z0
        latents = torch.where(mask == 1, latents, renoised)
        if callback is not None:
            callback(index - max(skip, 0), total, latents)
    return latents


# -- audio-to-audio -----------------------------------------------------------------------------------


def shift_sigmas(sigmas: torch.Tensor, shift: float = 3.0) -> torch.Tensor:
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def audio_to_audio_sigma_range(strength: float) -> tuple[float, float]:
    """(sigma_max, sigma_min) of the reference's scheduler built with sigma_max = 1 - strength (§4).

    Its training table runs from 1000 (1 - strength) down to 1 and is shifted once; the step
    schedule made from this range is shifted again (reproduced on purpose).
    """
    ends = torch.tensor([NUM_TRAIN_TIMESTEPS * (1 - strength), 1.0], dtype=torch.float32) / NUM_TRAIN_TIMESTEPS
    sigma_max, sigma_min = shift_sigmas(ends).tolist()
    return sigma_max, sigma_min


def audio_to_audio_steps(strength: float, num_inference_steps: int) -> int:
    return int((1 - strength) * num_inference_steps)


def noise_reference(reference: torch.Tensor, noise: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """ref * (1 - sigma) + noise * sigma, the reference latents broadcast over the batch."""
    return reference * (1 - sigma_max) + noise * sigma_max


# -- FlowEdit -------------------------------------------------------------------------------------------

PairVelocityFn = Callable[[torch.Tensor, torch.Tensor, str], Mapping[str, torch.Tensor]]
SOURCE, TARGET = "source", "target"


def flow_edit(
    velocity_fn: PairVelocityFn,
    source: torch.Tensor,
    timesteps: torch.Tensor,
    sigmas: torch.Tensor,
    guidance_scale: float,
    task: FlowEdit,
    noise: Callable[[], torch.Tensor],
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """FlowEdit over the Euler schedule (§5.4). ``velocity_fn(latents, timestep, side)`` returns
    ``{cond, null}`` (only ``cond`` when guidance is off) for side ``source`` or ``target``;
    ``noise()`` is the next draw of the edit generator.
    """
    steps = len(timesteps)
    first, last = int(steps * task.n_min), int(steps * task.n_max)
    if last < first:
        raise ValueError(f"FlowEdit needs n_max >= n_min, got {task.n_min} > {task.n_max}")
    guided = guidance_scale not in (0.0, 1.0)
    apg = GuidanceConfig(guidance_type="apg", guidance_scale=guidance_scale)
    source_guider, target_guider = Guider(apg), Guider(apg)

    def velocity(latents: torch.Tensor, timestep: torch.Tensor, side: str, guider: Guider) -> torch.Tensor:
        out = velocity_fn(latents, timestep, side)
        return guider.apg(out[COND], out[NULL], guidance_scale) if guided else out[COND]

    edited, sampled = source, None
    zero = timesteps.new_zeros(())
    total = steps - min(first, steps)
    for index in range(first, steps):
        timestep = timesteps[index]
        level = timestep / NUM_TRAIN_TIMESTEPS
        next_level = timesteps[index + 1] / NUM_TRAIN_TIMESTEPS if index + 1 < steps else zero
        if index < last:
            delta = torch.zeros_like(source)
            for _ in range(task.n_avg):
                noisy_source = (1 - level) * source + level * noise()
                noisy_target = (edited + noisy_source) - source
                source_velocity = velocity(noisy_source, timestep, SOURCE, source_guider)
                target_velocity = velocity(noisy_target, timestep, TARGET, Guider(apg))
                delta = delta + (1 / task.n_avg) * (target_velocity - source_velocity)
            edited = (edited.float() + (next_level - level) * delta).to(source.dtype)
            current = edited
        else:
            if index == last:
                sigma = sigmas[index]
                sampled = (edited + (sigma * noise() + (1 - sigma) * source)) - source
            target_velocity = velocity(sampled, timestep, TARGET, target_guider)
            sampled = (sampled.float() + (next_level - level) * target_velocity).to(source.dtype)
            current = sampled
        if callback is not None:
            callback(index - first, total, current)
    return sampled if sampled is not None else edited
