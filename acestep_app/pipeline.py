"""The ACE-Step v1 text2music pipeline: (tags, lyrics, parameters) -> 48 kHz stereo waveform.

Mirrors the reference ``ACEStepPipeline.__call__`` for text2music (spec §6-7) on our own modules:
UMT5 text encoder, lyric tokenizer, DiT transformer, DCAE + vocoder. One difference by design:
the guided model evaluations of a step (conditional, text-only, unconditional) can run as one
batched forward (``batched_guidance``), with the diffusion ERG applied per sample. The reference
runs them one after the other; both give the same numbers up to float rounding.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .models.transformer import ACEStepTransformer2DModel, CrossAttentionCache
from .sampling import COND, NULL, TEXT_ONLY, FlowMatchSampler, GuidanceConfig, denoise

if TYPE_CHECKING:
    from .models.autoencoder import MusicDCAE
    from .models.lyric_tokenizer import LyricTokenizer
    from .models.text_encoder import TextEncoder

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
LATENT_RATE = 44100 / 512 / 8  # latent frames per second of audio
SPEAKER_EMBEDDING_DIM = 512
LYRIC_VOCAB_PATH = Path("lyric_tokenizer") / "vocab.json"
MAX_SEED = 2**32


def latent_frames(duration: float) -> int:
    """Latent frames the reference generates for ``duration`` seconds (floored, §6.3)."""
    return int(duration * 44100 / 512 / 8)


def random_seed() -> int:
    return random.SystemRandom().randrange(MAX_SEED)


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
        from .models.autoencoder import MusicDCAE
        from .models.lyric_tokenizer import LyricTokenizer
        from .models.text_encoder import TextEncoder

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
        draws = [
            torch.randn(
                (1, 8, 16, frames),
                generator=torch.Generator(self.device).manual_seed(seed),
                device=self.device,
                dtype=self.dtype,
            )
            for seed in seeds
        ]
        return torch.cat(draws)

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
                latents.repeat(count, 1, 1, 1),
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
    ) -> PipelineOutput:
        """Generate ``batch_size`` songs. Parameters are fal's (spec §7.2 maps them to the reference).

        ``callback(step, total)`` runs after each sampler step; raising from it aborts the run.
        ``cache_cross_attention`` computes each block's cross-attention keys and values of the (fixed)
        encoder sequences once per request instead of at every step; same numbers.
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

        def on_step(index: int, total: int, current: torch.Tensor) -> None:
            if latents_callback is not None:
                latents_callback(index, current)
            if callback is not None:
                callback(index + 1, total)

        latents = denoise(velocity_fn, latents, sampler, guidance, on_step)
        timings["diffusion"] = time.perf_counter() - started

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
            num_forwards=counter[0],
            timings=timings,
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
