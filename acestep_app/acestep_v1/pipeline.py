"""The ACE-Step v1 text2music pipeline: (tags, lyrics, parameters) -> 48 kHz stereo waveform.

Mirrors the reference ``ACEStepPipeline.__call__`` for text2music (spec §6-7) on our own modules:
UMT5 text encoder, lyric tokenizer, DiT transformer, DCAE + vocoder. One difference by design:
the guided model evaluations of a step (conditional, text-only, unconditional) can run as one
batched forward (``batched_guidance``), with the diffusion ERG applied per sample. The reference
runs them one after the other; both give the same numbers up to float rounding.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from acestep_app.acestep_v1 import editing
from acestep_app.acestep_v1.editing import (
    AudioToAudio, EditTask, Extend, FlowEdit, Repaint, Retake, batch_copies, latent_frames,
)
from acestep_app.acestep_v1.models.transformer import ACEStepTransformer2DModel, CrossAttentionCache
from acestep_app.acestep_v1.sampling import COND, NULL, TEXT_ONLY, FlowMatchSampler, GuidanceConfig, denoise, flow_match_schedule

if TYPE_CHECKING:
    from acestep_app.acestep_v1.models.autoencoder import MusicDCAE
    from acestep_app.acestep_v1.lyrics.tokenizer import LyricTokenizer
    from acestep_app.acestep_v1.models.text_encoder import TextEncoder

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
LATENT_RATE = 44100 / 512 / 8  # latent frames per second of audio
SPEAKER_EMBEDDING_DIM = 512
LYRIC_VOCAB_PATH = Path("lyric_tokenizer") / "vocab.json"
MAX_SEED = 2**32


def random_seed() -> int:
    return random.SystemRandom().randrange(MAX_SEED)


@dataclass(frozen=True)
class SamplingOptions:
    """The sampling parameters of one ``__call__``, handed to the editing tasks."""

    num_inference_steps: int
    scheduler: str
    granularity_scale: float
    guidance: GuidanceConfig
    batch_size: int
    use_erg_tag: bool
    use_erg_lyric: bool
    use_erg_diffusion: bool
    batched_guidance: bool
    cache_cross_attention: bool = True


@dataclass
class Conditioning:
    """Encoder sequences of one request, computed once before the loop (spec §6.4)."""

    states: dict[str, torch.Tensor]  # branch name -> (B, S, C)
    mask: torch.Tensor  # (B, S), shared by every branch as in the reference


@dataclass
class PipelineOutput:
    waveforms: torch.Tensor  # (B, 2, N) float32 on CPU
    sample_rate: int
    latents: torch.Tensor  # (B, 8, 16, T)
    seeds: list[int]
    num_forwards: int
    timings: dict[str, float] = field(default_factory=dict)
    retake_seeds: list[int] = field(default_factory=list)  # the second generator set of an edit task

    @property
    def waveform(self) -> torch.Tensor:
        """The first (usually only) item, ``(2, N)``."""
        return self.waveforms[0]


StepCallback = Callable[[int, int], None]


class AceStepPipeline:
    def __init__(
        self,
        transformer: ACEStepTransformer2DModel,
        text_encoder: TextEncoder,
        lyric_tokenizer: LyricTokenizer,
        autoencoder: MusicDCAE,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        decode_chunk_frames: int | None = None,
        decode_overlap_frames: int | None = None,
    ):
        self.transformer = transformer
        self.text_encoder = text_encoder
        self.lyric_tokenizer = lyric_tokenizer
        self.autoencoder = autoencoder
        self.device = torch.device(device)
        self.dtype = dtype
        self.decode_chunk_frames = decode_chunk_frames
        self.decode_overlap_frames = decode_overlap_frames

    @classmethod
    def from_pretrained(
        cls,
        checkpoint_dir: str | Path,
        lyric_vocab: str | Path | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        decode_chunk_frames: int | None = None,
        decode_overlap_frames: int | None = None,
    ) -> AceStepPipeline:
        """Load every component from an official-layout checkpoint folder, one after the other.

        ``lyric_vocab`` defaults to ``<checkpoint>/lyric_tokenizer/vocab.json`` (where
        ``acestep-app weights pull`` puts the pinned upstream vocabulary). ``decode_chunk_frames``
        (None = whole) and ``decode_overlap_frames`` (None = a quarter of a chunk) bound decode memory.
        Loading is sequential on purpose: diffusers and transformers build models under process-wide
        patches (accelerate's ``init_empty_weights``, the default dtype), so concurrent loaders corrupt
        each other's modules.
        """
        from acestep_app.acestep_v1.models.autoencoder import MusicDCAE
        from acestep_app.acestep_v1.lyrics.tokenizer import LyricTokenizer
        from acestep_app.acestep_v1.models.text_encoder import TextEncoder

        root = Path(checkpoint_dir)
        vocab = Path(lyric_vocab) if lyric_vocab is not None else root / LYRIC_VOCAB_PATH
        transformer = ACEStepTransformer2DModel.from_pretrained(
            root / "ace_step_transformer", torch_dtype=dtype, device=device
        ).eval()
        return cls(
            transformer=transformer,
            text_encoder=TextEncoder.from_pretrained(root / "umt5-base", torch_dtype=dtype, device=device),
            lyric_tokenizer=LyricTokenizer.from_file(vocab),
            autoencoder=MusicDCAE.from_pretrained(root, torch_dtype=dtype, device=device),
            device=device,
            dtype=dtype,
            decode_chunk_frames=decode_chunk_frames,
            decode_overlap_frames=decode_overlap_frames,
        )

    # -- conditioning ----------------------------------------------------------------------

    @torch.inference_mode()
    def encode_conditions(
        self,
        tags: str,
        lyrics: str,
        batch_size: int,
        guidance: GuidanceConfig,
        use_erg_tag: bool = True,
        use_erg_lyric: bool = True,
    ) -> Conditioning:
        text, text_mask = self.text_encoder.encode([tags])
        ids, lyric_mask = self.lyric_tokenizer.ids_and_mask([lyrics], device=self.device)
        text, text_mask = text.to(self.device, self.dtype), text_mask.to(self.device)
        speaker = torch.zeros(1, SPEAKER_EMBEDDING_DIM, device=self.device, dtype=self.dtype)
        no_lyrics = torch.zeros_like(ids)

        def encode(text_states: torch.Tensor, lyric_ids: torch.Tensor, erg_lyric: bool = False) -> torch.Tensor:
            states, _ = self.transformer.encode(text_states, text_mask, speaker, lyric_ids, lyric_mask, erg_lyric)
            return states

        cond, mask = self.transformer.encode(text, text_mask, speaker, ids, lyric_mask)
        states = {COND: cond}
        if use_erg_lyric:
            null_text = self.text_encoder.encode([tags], erg=True)[0].to(self.device, self.dtype) if use_erg_tag else None
            states[NULL] = encode(torch.zeros_like(text) if null_text is None else null_text, ids, erg_lyric=True)
        else:
            states[NULL] = encode(torch.zeros_like(text), no_lyrics)
        if guidance.double_condition:
            states[TEXT_ONLY] = encode(text, ids, erg_lyric=True) if use_erg_lyric else encode(text, no_lyrics)
        return Conditioning(
            states={name: value.expand(batch_size, -1, -1) for name, value in states.items()},
            mask=mask.expand(batch_size, -1),
        )

    def initial_noise(self, seeds: Sequence[int], frames: int) -> torch.Tensor:
        """One generator per item on the pipeline's device, drawn in the model dtype (spec §6.3)."""
        return self.draw_noise(self.noise_generators(seeds), frames)

    def noise_generators(self, seeds: Sequence[int]) -> list[torch.Generator]:
        return [torch.Generator(self.device).manual_seed(seed) for seed in seeds]

    def draw_noise(self, generators: Sequence[torch.Generator], frames: int) -> torch.Tensor:
        """The next (B, 8, 16, frames) draw, one item per generator; later draws continue each stream."""
        draws = [
            torch.randn((1, 8, 16, frames), generator=generator, device=self.device, dtype=self.dtype)
            for generator in generators
        ]
        return torch.cat(draws)

    @torch.inference_mode()
    def encode_audio(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """A mono or stereo clip (C, N) in [-1, 1] at ``sample_rate`` -> latents (1, 8, 16, L), model dtype.

        Mono is duplicated to stereo. L = ceil(N44 / 4096) for N44 samples at 44.1 kHz, one frame more
        than text2music gives for the same duration unless the length divides evenly.
        """
        wave = torch.as_tensor(waveform)
        if wave.ndim == 1:
            wave = wave[None]
        if wave.ndim != 2 or wave.shape[0] not in (1, 2):
            raise ValueError(f"audio must be (channels, samples) with 1 or 2 channels, got shape {tuple(wave.shape)}")
        if wave.shape[0] == 1:
            wave = wave.repeat(2, 1)
        return self.autoencoder.encode(wave[None], sample_rate)

    # -- sampling --------------------------------------------------------------------------

    def _velocity_fn(
        self, conditioning: Conditioning, frames: int, use_erg_diffusion: bool, batched: bool, counter,
        cache: CrossAttentionCache | None = None,
    ):
        transformer = self.transformer

        def key_values(branches: Sequence[str], states: torch.Tensor):
            return None if cache is None else cache.get(tuple(branches), states)

        def run(latents: torch.Tensor, timestep: torch.Tensor, branches: Sequence[str]) -> dict[str, torch.Tensor]:
            batch = latents.shape[0]
            frame_mask = torch.ones(batch, frames, device=latents.device, dtype=latents.dtype)
            steps = timestep.to(torch.float32).expand(batch).to(latents.device)
            erg = [use_erg_diffusion and name == NULL for name in branches]
            if not batched or len(branches) == 1:
                out = {}
                for name, with_erg in zip(branches, erg):
                    counter[0] += 1
                    states = conditioning.states[name]
                    out[name] = transformer.decode(
                        latents, frame_mask, states, conditioning.mask, steps, frames,
                        erg_diffusion=with_erg or None, cross_key_values=key_values((name,), states),
                    )
                return out
            counter[0] += 1
            count = len(branches)
            flags = torch.tensor([flag for flag in erg for _ in range(batch)], device=latents.device)
            states = torch.cat([conditioning.states[name] for name in branches])
            velocity = transformer.decode(
                batch_copies(latents, count),
                frame_mask.repeat(count, 1),
                states,
                conditioning.mask.repeat(count, 1),
                steps.repeat(count),
                frames,
                erg_diffusion=flags,
                cross_key_values=key_values(branches, states),
            )
            return dict(zip(branches, velocity.chunk(count)))

        return run

    @torch.inference_mode()
    def __call__(
        self,
        tags: str,
        lyrics: str,
        *,
        duration: float = 60.0,
        num_inference_steps: int = 27,
        seed: int | Sequence[int] | None = None,
        batch_size: int = 1,
        scheduler: str = "euler",
        guidance_type: str = "apg",
        granularity_scale: float = 10.0,
        guidance_interval: float = 0.5,
        guidance_interval_decay: float = 0.0,
        guidance_scale: float = 15.0,
        minimum_guidance_scale: float = 3.0,
        tag_guidance_scale: float = 5.0,
        lyric_guidance_scale: float = 1.5,
        use_erg_tag: bool = True,
        use_erg_lyric: bool = True,
        use_erg_diffusion: bool = True,
        batched_guidance: bool = True,
        cache_cross_attention: bool = True,
        callback: StepCallback | None = None,
        latents_callback: Callable[[int, torch.Tensor], None] | None = None,
        decode: bool = True,
        task: EditTask | None = None,
    ) -> PipelineOutput:
        """Generate ``batch_size`` songs. Parameters are fal's (spec §7.2 maps them to the reference).

        ``callback(step, total)`` runs after each sampler step; raising from it aborts the run.
        ``cache_cross_attention`` computes each block's cross-attention keys and values of the (fixed)
        encoder sequences once per request instead of at every step; same numbers.
        ``task`` turns the run into an edit (:mod:`acestep_app.acestep_v1.editing`: Retake, Repaint, Extend,
        AudioToAudio, FlowEdit); with a source or reference clip, its length sets the output length
        and ``duration`` is unused.
        """
        timings: dict[str, float] = {}
        seeds = _resolve_seeds(seed, batch_size)
        guidance = GuidanceConfig(
            guidance_type=guidance_type,
            guidance_scale=guidance_scale,
            guidance_interval=guidance_interval,
            guidance_interval_decay=guidance_interval_decay,
            minimum_guidance_scale=minimum_guidance_scale,
            tag_guidance_scale=tag_guidance_scale,
            lyric_guidance_scale=lyric_guidance_scale,
        )
        def on_step(index: int, total: int, current: torch.Tensor) -> None:
            if latents_callback is not None:
                latents_callback(index, current)
            if callback is not None:
                callback(index + 1, total)

        if task is not None:
            options = SamplingOptions(
                num_inference_steps, scheduler, granularity_scale, guidance, batch_size,
                use_erg_tag, use_erg_lyric, use_erg_diffusion, batched_guidance, cache_cross_attention,
            )  # fmt: skip
            return self._edit(task, tags, lyrics, seeds, duration, options, on_step, decode)

        started = time.perf_counter()
        conditioning = self.encode_conditions(tags, lyrics, batch_size, guidance, use_erg_tag, use_erg_lyric)
        timings["encode"] = time.perf_counter() - started

        started = time.perf_counter()
        frames = latent_frames(duration)
        latents = self.initial_noise(seeds, frames)
        sampler = FlowMatchSampler(scheduler, num_inference_steps, granularity_scale, device=self.device)
        counter = [0]
        cache = CrossAttentionCache(self.transformer) if cache_cross_attention else None
        velocity_fn = self._velocity_fn(conditioning, frames, use_erg_diffusion, batched_guidance, counter, cache)
        latents = denoise(velocity_fn, latents, sampler, guidance, on_step)
        timings["diffusion"] = time.perf_counter() - started
        return self._output(latents, seeds, counter[0], timings, decode)

    # -- editing tasks (acestep_app.acestep_v1.editing) ------------------------------------------------

    def _edit(
        self,
        task: EditTask,
        tags: str,
        lyrics: str,
        seeds: list[int],
        duration: float,
        options: SamplingOptions,
        on_step: editing.StepCallback,
        decode: bool,
    ) -> PipelineOutput:
        timings: dict[str, float] = {}
        counter = [0]
        cache = CrossAttentionCache(self.transformer) if options.cache_cross_attention else None
        retake_seeds = _resolve_seeds(task.seed, options.batch_size) if hasattr(task, "seed") else []
        started = time.perf_counter()
        clip = getattr(task, "source", getattr(task, "reference", None))
        clip_latents = None if clip is None else self.encode_audio(clip, task.sample_rate)
        timings["encode_audio"] = time.perf_counter() - started

        started = time.perf_counter()
        if isinstance(task, FlowEdit):
            latents = self._flow_edit(task, tags, lyrics, clip_latents, retake_seeds, options, counter, on_step, cache)
        else:
            guidance = options.guidance
            conditioning = self.encode_conditions(
                tags, lyrics, options.batch_size, guidance, options.use_erg_tag, options.use_erg_lyric
            )
            timings["encode"] = time.perf_counter() - started
            started = time.perf_counter()
            manual = self.noise_generators(seeds)
            retake = self.noise_generators(retake_seeds)

            def velocity_fn(frames: int):
                return self._velocity_fn(
                    conditioning, frames, options.use_erg_diffusion, options.batched_guidance, counter, cache
                )

            if isinstance(task, AudioToAudio):
                latents = self._audio_to_audio(task, clip_latents, manual, velocity_fn, options, on_step)
            elif isinstance(task, Retake):
                frames = latent_frames(duration)
                first, second = self.draw_noise(manual, frames), self.draw_noise(retake, frames)
                start = editing.mix_noise(first, second, task.variance)
                latents = self._sample(start, velocity_fn(frames), options, on_step)
            else:
                latents = self._repaint(task, clip_latents, manual, retake, velocity_fn, options, on_step)
        timings["diffusion"] = time.perf_counter() - started
        return self._output(latents, seeds, counter[0], timings, decode, retake_seeds)

    def _sample(self, latents: torch.Tensor, velocity_fn, options: SamplingOptions, on_step, sigma_range=None):
        """The text2music loop (omega, Heun, guidance window) from ``latents``."""
        sampler = FlowMatchSampler(
            options.scheduler, options.num_inference_steps, options.granularity_scale, self.device, sigma_range
        )
        return denoise(velocity_fn, latents, sampler, options.guidance, on_step)

    def _repaint(self, task: Repaint | Extend, source, manual, retake, velocity_fn, options, on_step) -> torch.Tensor:
        frames = source.shape[-1]
        seconds = task.source.shape[-1] / task.sample_rate
        if isinstance(task, Extend):
            plan = editing.plan_extend(task.before, task.after, frames, seconds)
        elif task.within_source:
            plan = editing.plan_inpaint(task.start, task.end, frames, seconds)
        else:
            plan = editing.plan_repaint(task.start, task.end, frames)
        first, second = self.draw_noise(manual, frames), self.draw_noise(retake, frames)
        if plan.retake:  # the range is the whole clip: the reference ignores the source (spec §3.2)
            return self._sample(editing.mix_noise(first, second, task.variance), velocity_fn(frames), options, on_step)
        start = editing.region_start(
            plan, source, first, second, task.variance, lambda count: self.draw_noise(retake, count)
        )
        timesteps, _ = flow_match_schedule(options.scheduler, options.num_inference_steps, self.device)
        skip = editing.skipped_steps(options.num_inference_steps, task.variance)
        if isinstance(task, Repaint) and task.within_source and (task.variance <= 0 or skip >= len(timesteps)):
            return start.source.expand_as(first).clone()  # variance 0: nothing changes (the reference returns noise)
        return editing.repaint_denoise(
            velocity_fn(plan.frames), start, timesteps, options.num_inference_steps, skip, options.guidance, on_step
        )

    def _audio_to_audio(self, task: AudioToAudio, reference, manual, velocity_fn, options, on_step) -> torch.Tensor:
        frames = reference.shape[-1]
        noise = self.draw_noise(manual, frames)
        sigma_range = editing.audio_to_audio_sigma_range(task.strength)
        latents = editing.noise_reference(reference, noise, sigma_range[0])
        steps = editing.audio_to_audio_steps(task.strength, options.num_inference_steps)
        if steps <= 0:  # strength ~1: the noised reference is the result (spec §4)
            return latents
        options = dataclasses.replace(options, num_inference_steps=steps)
        return self._sample(latents, velocity_fn(frames), options, on_step, sigma_range)

    def encode_edit_conditions(self, tags: str, lyrics: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """FlowEdit's (states, mask) per branch: no ERG; the null branch has zero text, speaker and lyrics,
        and its lyric mask is zero too (unlike text2music's null branch)."""
        text, text_mask = self.text_encoder.encode([tags])
        ids, lyric_mask = self.lyric_tokenizer.ids_and_mask([lyrics], device=self.device)
        text, text_mask = text.to(self.device, self.dtype), text_mask.to(self.device)
        speaker = torch.zeros(1, SPEAKER_EMBEDDING_DIM, device=self.device, dtype=self.dtype)
        return {
            COND: self.transformer.encode(text, text_mask, speaker, ids, lyric_mask),
            NULL: self.transformer.encode(
                torch.zeros_like(text), text_mask, speaker, torch.zeros_like(ids), torch.zeros_like(lyric_mask)
            ),
        }

    def _flow_edit(self, task: FlowEdit, tags, lyrics, source, retake_seeds, options, counter, on_step, cache=None):
        if options.batch_size != 1:
            raise ValueError(f"FlowEdit edits one clip at a time, got batch_size {options.batch_size}")
        guided = options.guidance.guidance_scale not in (0.0, 1.0)
        sides = {
            editing.SOURCE: self.encode_edit_conditions(tags, lyrics),
            editing.TARGET: self.encode_edit_conditions(task.target_tags, task.target_lyrics),
        }
        frames = source.shape[-1]
        branches = (COND, NULL) if guided else (COND,)
        batched = options.batched_guidance

        def key_values(key: tuple, states: torch.Tensor):
            return None if cache is None else cache.get(key, states)

        def velocity_fn(latents: torch.Tensor, timestep: torch.Tensor, side: str) -> dict[str, torch.Tensor]:
            conditions = [sides[side][name] for name in branches]
            frame_mask = torch.ones(1, frames, device=latents.device, dtype=latents.dtype)
            steps = timestep.to(torch.float32).expand(1).to(latents.device)
            if not batched or len(branches) == 1:
                counter[0] += len(branches)
                return {
                    name: self.transformer.decode(
                        latents, frame_mask, states, mask, steps, frames,
                        cross_key_values=key_values((side, name), states),
                    )
                    for name, (states, mask) in zip(branches, conditions)
                }
            counter[0] += 1
            count = len(branches)
            batch_states = torch.cat([states for states, _ in conditions])
            velocity = self.transformer.decode(
                batch_copies(latents, count),
                frame_mask.repeat(count, 1),
                batch_states,
                torch.cat([mask for _, mask in conditions]),
                steps.repeat(count),
                frames,
                cross_key_values=key_values((side, *branches), batch_states),
            )
            return dict(zip(branches, velocity.chunk(count)))

        generator = self.noise_generators(retake_seeds[:1])
        timesteps, sigmas = flow_match_schedule("euler", options.num_inference_steps, self.device)
        return editing.flow_edit(
            velocity_fn,
            source,
            timesteps,
            sigmas,
            options.guidance.guidance_scale,
            task,
            lambda: self.draw_noise(generator, frames),
            on_step,
        )

    def _output(self, latents, seeds, num_forwards, timings, decode, retake_seeds=None) -> PipelineOutput:
        waveforms = torch.empty(0)
        if decode:
            started = time.perf_counter()
            waveforms = self.decode_latents(latents)
            timings["decode"] = time.perf_counter() - started
        return PipelineOutput(
            waveforms=waveforms,
            sample_rate=SAMPLE_RATE,
            latents=latents,
            seeds=seeds,
            num_forwards=num_forwards,
            timings=timings,
            retake_seeds=retake_seeds or [],
        )

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        audio = self.autoencoder.decode(
            latents,
            sample_rate=SAMPLE_RATE,
            chunk_frames=self.decode_chunk_frames,
            overlap_frames=self.decode_overlap_frames,
        )
        return audio.to(device="cpu", dtype=torch.float32)


def _resolve_seeds(seed: int | Sequence[int] | None, batch_size: int) -> list[int]:
    """int -> the same seed for every item; list -> per item (last repeated); None -> random."""
    if seed is None:
        return [random_seed() for _ in range(batch_size)]
    if isinstance(seed, int):
        return [seed] * batch_size
    seeds = list(seed)
    if not seeds:
        return [random_seed() for _ in range(batch_size)]
    return (seeds + [seeds[-1]] * batch_size)[:batch_size]
