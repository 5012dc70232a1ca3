"""The one inference core every adapter calls: load once, then ``generate(request) -> Generation``.

fal (deploy/fal_app.py), Modal (deploy/modal_app.py), the local server and the CLI all hold one
``Engine``. It owns the loaded models and nothing about HTTP: adapters turn transport into
``generate`` calls, store the WAV and attach billing from ``Generation.billable_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from acestep_app.serving import billing
from acestep_app.audio.formats import wav_bytes
from acestep_app.errors import WeightsError
from acestep_app.quality.lyric_timing import duration_warning
from acestep_app.acestep_v1.schema import AudioInpaintInput, AudioOutpaintInput, AudioToAudioInput, PromptToAudioInput, TextToAudioInput
from acestep_app.engine.generation import Generation, Progress, ProgressCallback
from acestep_app.settings import Settings
from acestep_app.quality.takes import Take, load_transcriber, rank_takes, sample_takes, take_seeds

if TYPE_CHECKING:
    from acestep_app.acestep_v1.lora import LoraSupport
    from acestep_app.audio.source import SourceAudio

logger = logging.getLogger(__name__)

TINY_MARKER = "TINY_CHECKPOINT.txt"
OFFICIAL_INNER_DIM = 2560
TINY_NOTICE = "tiny random checkpoint loaded: the audio is noise (run `acestep-app weights pull` for the real model)"
INSTRUMENTAL_LYRICS = "[inst]"
AUTO_CHUNK_FRAMES = 256  # 23.8 s of audio per decode window on GPU
AUTO_OVERLAP_FRAMES = 16  # 1.5 s of context per side: past the DCAE and vocoder convolutions' reach

Request = PromptToAudioInput | TextToAudioInput
EditRequest = AudioToAudioInput | AudioInpaintInput | AudioOutpaintInput


class Engine:
    """ACE-Step v1 pipeline + prompt writer, loaded once; ``generate`` is serialised (one GPU)."""

    family = "acestep-v1"

    def __init__(self, pipeline, song_writer, settings: Settings, weights_dir: Path, is_tiny: bool, transcriber=None,
                 loras: LoraSupport | None = None):
        self.pipeline = pipeline
        self.song_writer = song_writer
        self.transcriber = transcriber  # ranks takes when [quality].takes > 1; None: the first take is returned
        self.settings = settings
        self.weights_dir = weights_dir
        self.is_tiny = is_tiny
        if loras is None:
            from acestep_app.acestep_v1.lora import LoraSupport

            loras = LoraSupport.load(pipeline.transformer, settings)
        self.loras = loras
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings | None = None, weights_dir: str | Path | None = None) -> Engine:
        """Load every model once. ``weights_dir`` overrides the settings (else pulled pinned weights)."""
        import torch

        from acestep_app.acestep_v1.acceleration import AccelerationOptions, accelerate_transformer
        from acestep_app.engine.cpu_kernels import use_reference_cpu_kernels
        from acestep_app.engine.devices import configure_torch, resolve_device, resolve_dtype
        from acestep_app.engine.cpu_threads import SMALL_MODEL_PARAMETERS, configure_cpu_threads
        from acestep_app.acestep_v1.lora import LoraSupport
        from acestep_app.acestep_v1.pipeline import AceStepPipeline
        from acestep_app.songwriter.writer import load_song_writer
        from acestep_app.weights.store import ensure_weights, find_lyric_vocab

        settings = settings or Settings.load()
        engine_settings = settings.engine
        if weights_dir is not None:
            settings = settings.model_copy(update={"engine": engine_settings.model_copy(update={"weights_dir": str(weights_dir)})})
            engine_settings = settings.engine
        root = ensure_weights(settings, only=needed_weight_entries(settings))
        if not (root / "ace_step_transformer").is_dir():
            raise WeightsError(f"no ACE-Step checkpoint at {root} (expected ace_step_transformer/ and friends)")
        device = resolve_device(engine_settings.device)
        dtype = resolve_dtype(engine_settings.dtype, device)
        configure_torch(device)
        reference_kernels = (
            device == "cpu" and dtype == torch.bfloat16 and engine_settings.cpu_bf16_kernels == "reference"
        )
        if reference_kernels:  # before anything runs a kernel: the libraries read their caps once
            reference_kernels = use_reference_cpu_kernels()
        started = time.perf_counter()
        chunk_frames, overlap_frames = decode_chunking(engine_settings, device)
        pipeline = AceStepPipeline.from_pretrained(
            root,
            lyric_vocab=find_lyric_vocab(root, settings),
            device=device,
            dtype=dtype,
            decode_chunk_frames=chunk_frames,
            decode_overlap_frames=overlap_frames,
        )
        if reference_kernels:
            pipeline.transformer.set_conv_impl("conv")  # the reference's convolutions (docs/fidelity.md)
        if engine_settings.compile:
            accelerate_transformer(pipeline.transformer, AccelerationOptions.fast(device))
        if device == "cpu":
            parameters = sum(parameter.numel() for parameter in pipeline.transformer.parameters())
            configure_cpu_threads(engine_settings.threads, small_model=parameters < SMALL_MODEL_PARAMETERS)
        llm_dir = engine_settings.llm_dir or root / "llm"
        song_writer = load_song_writer(llm_dir, engine_settings.prompt_backend, device=device)
        transcriber = None
        if settings.quality.takes > 1:
            transcriber = load_transcriber(settings.quality.asr_dir or root / "asr", device=device, dtype=dtype)
        is_tiny = _is_tiny(root, pipeline)
        loras = LoraSupport.load(pipeline.transformer, settings)  # deploy-time adapters merged for good
        logger.info("engine loaded from %s on %s/%s in %.1fs", root, device, dtype, time.perf_counter() - started)
        if is_tiny:
            logger.warning(TINY_NOTICE)
        torch.set_grad_enabled(False)
        return cls(pipeline, song_writer, settings, root, is_tiny, transcriber, loras)

    def describe(self) -> dict:
        return {
            "weights_dir": str(self.weights_dir),
            "device": str(self.pipeline.device),
            "dtype": str(self.pipeline.dtype).removeprefix("torch."),
            "is_tiny": self.is_tiny,
            "song_writer": getattr(self.song_writer, "description", type(self.song_writer).__name__),
            "batched_guidance": self.settings.engine.batched_guidance,
            "cross_attention_cache": self.settings.engine.cross_attention_cache,
            "compile": self.settings.engine.compile,
            "decode_chunk_frames": self.pipeline.decode_chunk_frames,
            "takes": self.settings.quality.takes,
            "transcriber": getattr(self.transcriber, "description", None),
            "loras": self.loras.describe(),
        }

    def warmup(self) -> None:
        """One short prompt-to-audio run (prompt writer, encoders, sampler, decoder), so the first paying
        request meets warm kernels and compiled graphs."""
        self.generate(PromptToAudioInput(prompt="a short warm-up jingle", duration=5, number_of_steps=3, seed=0))
        if self.transcriber is not None:
            self.transcriber.transcribe([np.zeros((2, 48000), dtype=np.float32)], 48000)

    def generate(self, request: Request, on_progress: ProgressCallback | None = None) -> Generation:
        """Run one request. ``on_progress`` gets every sampler step; raising from it cancels the run."""
        from acestep_app.acestep_v1.pipeline import random_seed

        seed = request.seed if request.seed is not None else random_seed()
        logs: list[str] = [TINY_NOTICE] if self.is_tiny else []
        plan = self.loras.plan(request, logs)  # fetched and checked before any model work (LoraError: 422)
        with self._lock:
            lora_seconds = self.loras.use(plan)
            started = time.perf_counter()
            tags, lyrics = self._tags_and_lyrics(request, seed, logs)
            prompt_seconds = time.perf_counter() - started
            warning = duration_warning(lyrics, request.duration)
            if warning:
                logger.warning(warning)
                logs.append(warning)
            seeds = take_seeds(self.settings.quality.takes, seed, seed_given=request.seed is not None, lyrics=lyrics,
                               logs=logs, draw=random_seed)
            sampled = sample_takes(
                self.pipeline,
                seeds,
                batched=self.settings.quality.batch_takes,
                report=_take_reporter(on_progress),
                tags=tags,
                lyrics=lyrics,
                duration=request.duration,
                **self._sampling_arguments(request),
            )
            started = time.perf_counter()
            winner, ranking_logs = (0, []) if len(sampled.takes) == 1 else rank_takes(
                sampled.takes, lyrics, self.transcriber, sampled.sample_rate)
            ranking_seconds = time.perf_counter() - started
        chosen, sample_rate = sampled.takes[winner], sampled.sample_rate
        timings = {"lora": lora_seconds, "prompt": prompt_seconds, **sampled.timings}
        if len(sampled.takes) > 1:
            timings["ranking"] = ranking_seconds
        logs.extend(ranking_logs)
        in_takes = f" in {len(sampled.takes)} takes" if len(sampled.takes) > 1 else ""
        logs.append(
            f"generated {_seconds_of(sampled.takes, sample_rate):.3f}s of audio{in_takes} with "
            f"{sampled.num_forwards} transformer forwards in {sum(timings.values()):.2f}s"
        )
        return Generation(
            waveform=chosen.waveform,
            sample_rate=sample_rate,
            seed=chosen.seed,
            tags=tags,
            lyrics=lyrics,
            billable_seconds=self._billable_seconds(chosen, sampled.takes, sample_rate),
            num_forwards=sampled.num_forwards,
            logs=logs,
            timings=timings,
            takes=sampled.takes if len(sampled.takes) > 1 else [],
        )

    def _sampling_arguments(self, request) -> dict:
        """The pipeline arguments every endpoint shares: the request's sampler fields plus the engine switches."""
        return {
            **sampler_arguments(request),
            "batched_guidance": self.settings.engine.batched_guidance,
            "cache_cross_attention": self.settings.engine.cross_attention_cache,
        }

    def edit(
        self, request: EditRequest, source: SourceAudio, on_progress: ProgressCallback | None = None
    ) -> Generation:
        """Run one editing request (audio-to-audio, inpaint, outpaint) on ``source``.

        ``source`` is the decoded input song. Requests that cannot be served raise ``InputError``
        (422, naming the field); :mod:`acestep_app.acestep_v1.edit_requests` documents how fields map onto the
        tasks. ``on_progress`` gets every executed step; raising from it cancels the run.
        """
        import torch

        from acestep_app.acestep_v1.edit_requests import plan_edit
        from acestep_app.acestep_v1.pipeline import random_seed

        seed = request.seed if request.seed is not None else random_seed()
        logs: list[str] = [TINY_NOTICE] if self.is_tiny else []
        waveform = torch.from_numpy(np.ascontiguousarray(source.waveform, dtype=np.float32))
        plan = plan_edit(request, waveform, source.sample_rate, seed, logs)
        adapters = self.loras.plan(request, logs)
        with self._lock:
            lora_seconds = self.loras.use(adapters)
            output = self.pipeline(
                plan.tags,
                plan.lyrics,
                seed=seed,
                **self._sampling_arguments(request),
                callback=_step_reporter(on_progress),
                task=plan.task,
            )
        result = output.waveform.numpy()
        seconds = result.shape[-1] / output.sample_rate
        logs.append(
            f"{type(plan.task).__name__} of a {source.duration:.3f}s song: {seconds:.3f}s of audio with "
            f"{output.num_forwards} transformer forwards in {sum(output.timings.values()):.2f}s"
        )
        return Generation(
            waveform=result,
            sample_rate=output.sample_rate,
            seed=seed,
            tags=plan.result_tags,
            lyrics=plan.result_lyrics,
            billable_seconds=billing.billable_seconds(result.shape[-1], output.sample_rate),
            num_forwards=output.num_forwards,
            logs=logs,
            timings={"lora": lora_seconds, **output.timings},
        )

    def _billable_seconds(self, chosen: Take, takes: list[Take], sample_rate: int) -> float:
        """``[quality].bill_takes``: the returned take's seconds, or every generated take's."""
        billed = takes if self.settings.quality.bill_takes == "generated" else [chosen]
        return billing.billable_seconds(sum(take.waveform.shape[-1] for take in billed), sample_rate)

    def _tags_and_lyrics(self, request: Request, seed: int, logs: list[str]) -> tuple[str, str]:
        if isinstance(request, TextToAudioInput):
            return request.tags, request.lyrics
        song = self.song_writer.write(
            request.prompt, instrumental=request.instrumental, duration=request.duration, seed=seed
        )
        logs.extend(song.logs)
        lyrics = INSTRUMENTAL_LYRICS if request.instrumental else song.lyrics
        return song.tags, lyrics

    @staticmethod
    def wav_bytes(generation: Generation) -> bytes:
        return wav_bytes(generation.waveform, generation.sample_rate)


def sampler_arguments(request) -> dict:
    """fal's sampler fields of a request, as :class:`~acestep_app.acestep_v1.pipeline.AceStepPipeline` arguments."""
    return {
        "num_inference_steps": request.number_of_steps,
        "scheduler": str(request.scheduler),
        "guidance_type": str(request.guidance_type),
        "granularity_scale": request.granularity_scale,
        "guidance_interval": request.guidance_interval,
        "guidance_interval_decay": request.guidance_interval_decay,
        "guidance_scale": request.guidance_scale,
        "minimum_guidance_scale": request.minimum_guidance_scale,
        "tag_guidance_scale": request.tag_guidance_scale,
        "lyric_guidance_scale": request.lyric_guidance_scale,
    }


def _step_reporter(on_progress: ProgressCallback | None) -> Callable[[int, int], None] | None:
    if on_progress is None:
        return None

    def report(step: int, total: int) -> None:
        on_progress(Progress(step, total, f"step {step}/{total}"))

    return report


def _take_reporter(on_progress: ProgressCallback | None) -> Callable[[int, int, str], None] | None:
    """Steps over all takes, with a message naming the take (``take 2/4: step 5/27``)."""
    if on_progress is None:
        return None

    def report(step: int, total: int, message: str) -> None:
        on_progress(Progress(step, total, message))

    return report


def _seconds_of(takes: list[Take], sample_rate: int) -> float:
    return sum(take.waveform.shape[-1] for take in takes) / sample_rate


def decode_chunking(engine_settings, device: str) -> tuple[int | None, int | None]:
    """``[engine].decode_chunk_frames`` -> (chunk frames, overlap frames) for the pipeline; None = default.

    ``"auto"``: on a GPU, overlapped windows of AUTO_CHUNK_FRAMES (peak decode memory stays flat in
    the duration: a 240 s song decodes in the memory of a 24 s one, for ~20% extra decode work at
    60 s); on a CPU one pass (RAM is plentiful there and the overlap would cost time). ``0``: one pass.
    """
    chunk = engine_settings.decode_chunk_frames
    if chunk == "auto":
        return (AUTO_CHUNK_FRAMES, AUTO_OVERLAP_FRAMES) if str(device).startswith("cuda") else (None, None)
    return (chunk or None, None)


OPTIONAL_WEIGHT_ENTRIES = ("llm", "asr")  # manifest entries pulled only when the settings use them


def real_weights_available(settings: Settings) -> bool:
    """A configured checkpoint folder, or pulled weights in the cache (possibly still incomplete)."""
    from acestep_app.weights.store import weights_cache_dir

    return bool(settings.engine.weights_dir) or (weights_cache_dir(settings) / "ace_step_transformer").is_dir()


def needed_weight_entries(settings: Settings) -> list[str]:
    """Manifest entries to pull: the LLM only when the local prompt writer will load it from the weights dir,
    the ASR model only when takes are ranked and ``[quality].asr_dir`` does not name another."""
    engine_settings, quality = settings.engine, settings.quality
    entries = ["acestep", "lyric_vocab"]
    if engine_settings.prompt_backend == "transformers" and not engine_settings.llm_dir:
        entries.append("llm")
    if quality.takes > 1 and not quality.asr_dir:
        entries.append("asr")
    return entries


def _is_tiny(root: Path, pipeline) -> bool:
    """A random demo checkpoint (make-tiny marker, or any transformer narrower than the official one)."""
    config = pipeline.transformer.config
    return (root / TINY_MARKER).exists() or config.num_attention_heads * config.attention_head_dim != OFFICIAL_INNER_DIM
