"""The ACE-Step 1.5 engine: diffusers' ``AceStepPipeline`` loaded once, serving the family's three endpoints.

* ``text_to_music``: lyrics from the request, else from the song writer (the planner writes none in
  generation mode); with ``thinking``, the 5 Hz LM planner turns caption, lyrics, the metadata the
  user gave and the duration into the DiT's metadata and semantic codes, passed to the pipeline as
  ``audio_codes``; without it, the request's own fields are the DiT's conditions.
* ``repaint`` / ``cover``: the pipeline's repaint and cover tasks on the decoded source audio.

Every render goes through :class:`~acestep_app.acestep_15.generation.Renderer` (seeds, step reports,
takes). ``[quality].takes`` > 1 samples several seeds and returns the best-sung take, as for v1.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acestep_app.engine.generation import Generation, Progress, ProgressCallback
from acestep_app.errors import InputError, WeightsError
from acestep_app.quality.lyric_timing import duration_warning
from acestep_app.quality.takes import rank_takes, sample_takes, take_seeds
from acestep_app.serving import billing

from .generation import Conditions, Renderer, sampling_arguments, stereo_tensor
from .schema import INSTRUMENTAL, MAX_DURATION, CoverInput, RepaintInput, TextToMusicInput
from .settings import FAMILY_NAME, AceStep15Settings, family_settings, weights_root
from .tiny import TINY_MARKER
from .variants import variant as find_variant

if TYPE_CHECKING:
    from acestep_app.audio.source import SourceAudio
    from acestep_app.settings import Settings

logger = logging.getLogger(__name__)

TINY_NOTICE = "tiny random ACE-Step 1.5 checkpoint loaded: the audio is noise (run `acestep-app weights pull`)"
SONG_WRITER_INSTRUMENTAL = "[inst]"
OFFICIAL_DIT_WIDTH = 2048  # hidden size of the official 2B DiTs (the XL one is 2560)


class AceStep15Engine:
    """One loaded ACE-Step 1.5 pipeline (+ song writer, planner, transcriber); calls are serialised."""

    family = FAMILY_NAME

    def __init__(self, pipeline, settings: Settings, config: AceStep15Settings, weights_dir: Path, *,
                 is_tiny: bool, song_writer, planner=None, transcriber=None, loras=None):
        from .lora import LoraSupport

        self.pipeline = pipeline
        self.renderer = Renderer(pipeline)
        self.settings = settings
        self.config = config
        self.variant = find_variant(config.variant)
        self.weights_dir = weights_dir
        self.is_tiny = is_tiny
        self.song_writer = song_writer
        self.planner = planner  # turns (caption, lyrics, metadata, duration) into metas + audio codes
        self.transcriber = transcriber
        self.loras = loras or LoraSupport.load(pipeline, settings)  # infra.toml's adapters, then each request's
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings | None = None, weights_dir: str | Path | None = None) -> AceStep15Engine:
        import torch

        from acestep_app.engine.cpu_threads import SMALL_MODEL_PARAMETERS, configure_cpu_threads
        from acestep_app.engine.devices import resolve_device, resolve_dtype
        from acestep_app.quality.takes import load_transcriber
        from acestep_app.songwriter.writer import load_song_writer

        from acestep_app.settings import Settings

        from .checkpoint import load_pipeline
        from .planner.config import load_planner

        settings = settings or Settings.load()
        config = family_settings(settings)
        variant = find_variant(config.variant)
        root = Path(weights_dir) if weights_dir is not None else weights_root(settings, config)
        device = resolve_device(settings.engine.device)
        dtype = resolve_dtype(settings.engine.dtype, device)  # torch's default numerics flags, as diffusers runs
        started = time.perf_counter()
        pipeline = load_pipeline(root, dit_folder=_dit_folder(root, variant.dit_folder), torch_dtype=dtype).to(device)
        pipeline.set_progress_bar_config(disable=True)
        if device == "cpu":
            parameters = sum(parameter.numel() for parameter in pipeline.transformer.parameters())
            configure_cpu_threads(settings.engine.threads, small_model=parameters < SMALL_MODEL_PARAMETERS)
        if pipeline.is_turbo == variant.guided:
            logger.warning("[models.\"%s\"].variant is %s but the checkpoint at %s is %sa turbo DiT",
                           FAMILY_NAME, variant.name, root, "" if pipeline.is_turbo else "not ")
        is_tiny = (root / TINY_MARKER).exists() or pipeline.transformer.config.hidden_size < OFFICIAL_DIT_WIDTH
        song_writer = load_song_writer(settings.engine.llm_dir or _llm_dir(settings), settings.engine.prompt_backend,
                                       device=device)
        planner = load_planner(config, root, device=device)
        transcriber = None
        if settings.quality.takes > 1:
            transcriber = load_transcriber(settings.quality.asr_dir or _asr_dir(settings), device=device, dtype=dtype)
        logger.info("ACE-Step 1.5 (%s) loaded from %s on %s/%s in %.1fs", variant.name, root, device, dtype,
                    time.perf_counter() - started)
        if is_tiny:
            logger.warning(TINY_NOTICE)
        torch.set_grad_enabled(False)
        return cls(pipeline, settings, config, root, is_tiny=is_tiny, song_writer=song_writer, planner=planner,
                   transcriber=transcriber)

    def describe(self) -> dict[str, Any]:
        return {
            "family": FAMILY_NAME,
            "weights_dir": str(self.weights_dir),
            "variant": self.variant.name,
            "is_turbo": bool(self.pipeline.is_turbo),
            "device": str(self.pipeline.device),
            "dtype": str(self.pipeline.transformer.dtype).removeprefix("torch."),
            "is_tiny": self.is_tiny,
            "planner": getattr(self.planner, "name", None),
            "prompt_lyrics": self.config.prompt_lyrics if self.planner is not None else "songwriter",
            "song_writer": getattr(self.song_writer, "description", type(self.song_writer).__name__),
            "cover": self.pipeline.audio_tokenizer is not None,
            "takes": self.settings.quality.takes,
            "loras": self.loras.describe(),
        }

    def warmup(self) -> None:
        """One short render (text encoder, DiT, VAE decoder), so the first paying request meets warm kernels."""
        self.text_to_music(TextToMusicInput(prompt="a short warm-up jingle", lyrics=INSTRUMENTAL, duration=2.0,
                                            num_inference_steps=2, seed=0))

    # -- endpoints ----------------------------------------------------------------------------

    def text_to_music(self, request: TextToMusicInput, on_progress: ProgressCallback | None = None) -> Generation:
        seed = _seed(request.seed)
        logs: list[str] = [TINY_NOTICE] if self.is_tiny else []
        adapters = self.loras.plan(request, logs)  # fetched and checked before any model work (LoraError: 422)
        with self._lock:
            lora_seconds = self.loras.use(adapters)
            started = time.perf_counter()
            lyrics = self._lyrics(request, seed, logs)
            planned: dict[str, Any] = {}
            conditions = self._conditions(request, lyrics, seed, logs, planned)
            timings = {"lora": lora_seconds, "prompt": time.perf_counter() - started}
            self._warn_about_duration(conditions, logs)
            arguments = {**conditions.pipeline_arguments(), **self._sampling(request)}
            seeds = take_seeds(self.settings.quality.takes, seed, seed_given=request.seed is not None,
                               lyrics=conditions.lyrics, logs=logs, draw=lambda: _seed(None))
            sampled = sample_takes(self.renderer, seeds, batched=self.settings.quality.batch_takes,
                                   report=_take_reporter(on_progress), **arguments)
            winner, ranking_logs = (0, []) if len(sampled.takes) == 1 else rank_takes(
                sampled.takes, conditions.lyrics, self.transcriber, sampled.sample_rate)
        logs.extend(ranking_logs)
        chosen = sampled.takes[winner]
        billed = sampled.takes if self.settings.quality.bill_takes == "generated" else [chosen]
        seconds = sum(take.waveform.shape[-1] for take in billed)
        generation = self._generation(chosen.waveform, chosen.seed, conditions, {**timings, **sampled.timings},
                                      sampled.num_forwards, logs, billable_samples=seconds,
                                      takes=sampled.takes if len(sampled.takes) > 1 else [])
        generation.extra.update(planned)
        return generation

    def repaint(self, request: RepaintInput, source: SourceAudio, on_progress: ProgressCallback | None = None
                ) -> Generation:
        start, end = repaint_window(request, source.duration)
        waveform = stereo_tensor(source.waveform, source.sample_rate, self.renderer.sample_rate)
        conditions = _given_conditions(request, request.lyrics, source.duration)
        arguments = {**conditions.pipeline_arguments(), **self._sampling(request), "task_type": "repaint",
                     "src_audio": waveform, "repainting_start": start, "repainting_end": end}
        return self._edit(request, conditions, arguments, on_progress, strength=request.repaint_strength,
                          what=f"repaint of {start:g}-{end if end is not None else source.duration:g} s of a "
                               f"{source.duration:.3f}s song")

    def cover(self, request: CoverInput, source: SourceAudio, reference: SourceAudio | None = None,
              on_progress: ProgressCallback | None = None) -> Generation:
        if self.pipeline.audio_tokenizer is None or self.pipeline.audio_token_detokenizer is None:
            raise WeightsError("this checkpoint has no audio tokenizer / detokenizer weights: the cover task needs them")
        duration = min(request.duration or source.duration, MAX_DURATION)
        rate = self.renderer.sample_rate
        arguments = {"task_type": "cover", "src_audio": stereo_tensor(source.waveform, source.sample_rate, rate, duration),
                     "audio_cover_strength": request.cover_strength}
        if reference is not None:
            arguments["reference_audio"] = stereo_tensor(reference.waveform, reference.sample_rate, rate)
        conditions = _given_conditions(request, request.lyrics, duration)
        arguments = {**conditions.pipeline_arguments(), **self._sampling(request), **arguments}
        timbre = " with a timbre reference" if reference is not None else ""
        return self._edit(request, conditions, arguments, on_progress,
                          what=f"cover of a {source.duration:.3f}s song{timbre}")

    # -- parts --------------------------------------------------------------------------------

    def _edit(self, request, conditions: Conditions, arguments: dict, on_progress, *, what: str,
              strength: float = 1.0) -> Generation:
        seed = _seed(request.seed)
        logs: list[str] = [TINY_NOTICE] if self.is_tiny else []
        adapters = self.loras.plan(request, logs)
        with self._lock:
            lora_seconds = self.loras.use(adapters)
            rendered = self.renderer(seed=[seed], callback=_step_reporter(on_progress), global_seed=True,
                                     strength=strength, **arguments)
        waveform = rendered.waveforms[0].numpy()
        logs.append(f"{what}: {waveform.shape[-1] / rendered.sample_rate:.3f}s of audio with "
                    f"{rendered.num_forwards} transformer forwards in {rendered.timings['render']:.2f}s")
        return self._generation(waveform, seed, conditions, {"lora": lora_seconds, **rendered.timings},
                                rendered.num_forwards, logs, billable_samples=waveform.shape[-1], log_summary=False)

    def _generation(self, waveform, seed: int, conditions: Conditions, timings: dict, num_forwards: int,
                    logs: list[str], *, billable_samples: int, takes=(), log_summary: bool = True) -> Generation:
        rate = self.renderer.sample_rate
        if log_summary:
            in_takes = f" in {len(takes)} takes" if takes else ""
            logs.append(f"generated {waveform.shape[-1] / rate:.3f}s of audio{in_takes} with {num_forwards} "
                        f"transformer forwards in {sum(timings.values()):.2f}s")
        extra = {"prompt": conditions.prompt, "bpm": conditions.bpm, "key_scale": conditions.key_scale,
                 "time_signature": conditions.time_signature, "vocal_language": conditions.vocal_language}
        return Generation(waveform=waveform, sample_rate=rate, seed=seed, tags=conditions.prompt,
                          lyrics=conditions.lyrics, billable_seconds=billing.billable_seconds(billable_samples, rate),
                          num_forwards=num_forwards, logs=logs, timings=timings, takes=list(takes), extra=extra)

    def _sampling(self, request) -> dict[str, Any]:
        return sampling_arguments(request, is_turbo=self.renderer.is_turbo)

    def _lyrics(self, request: TextToMusicInput, seed: int, logs: list[str]) -> str:
        """The request's lyrics; none given: the planner's inspire mode (``prompt_lyrics = "planner"``, where a
        planner is loaded), else, or when it writes none, the song writer's."""
        if request.lyrics.strip():
            return request.lyrics
        if self.planner is not None and self.config.prompt_lyrics == "planner":
            from .planner.requests import prompt_lyrics, sampling_config

            sketch = prompt_lyrics(self.planner, request, seed=seed, sampling=sampling_config(request))
            if sketch.lyrics.strip():
                logs.append(f"lyrics written by the planner's inspire mode ({sketch.tokens} tokens, "
                            f"{sketch.seconds:.2f}s)")
                return sketch.lyrics
            logs.append("the planner wrote no lyrics: the song writer writes them")
        song = self.song_writer.write(request.prompt, instrumental=False, duration=request.duration, seed=seed)
        logs.extend(song.logs)
        return INSTRUMENTAL if song.lyrics.strip() == SONG_WRITER_INSTRUMENTAL else song.lyrics

    def _conditions(self, request: TextToMusicInput, lyrics: str, seed: int, logs: list[str],
                    extra: dict) -> Conditions:
        if not request.thinking:
            return _given_conditions(request, lyrics, request.duration)
        if self.planner is None:
            raise InputError("thinking", "needs the 5 Hz LM planner, which this deployment has not loaded; "
                             "send thinking: false (or set [models.\"acestep-1.5\"].planner)")
        from .planner.requests import conditions, plan_request, planner_report, sampling_config

        plan = self.planner.plan(plan_request(request, lyrics=lyrics), seed=seed, sampling=sampling_config(request))
        logs.extend(plan.logs)
        extra.update(planner_report(plan))
        return conditions(plan)

    def _warn_about_duration(self, conditions: Conditions, logs: list[str]) -> None:
        warning = duration_warning(conditions.lyrics, conditions.duration or MAX_DURATION, max_duration=MAX_DURATION)
        if warning:
            logger.warning(warning)
            logs.append(warning)


def repaint_window(request: RepaintInput, source_seconds: float) -> tuple[float, float | None]:
    """``(start, end)`` in seconds within the source (end None: to the end); bad spans are a 422 naming the field."""
    start, end = request.start_time, (None if request.end_time < 0 else request.end_time)
    if start >= source_seconds:
        raise InputError("start_time", f"must be before the end of the source audio ({source_seconds:.3f}s)")
    if end is not None and end <= start:
        raise InputError("end_time", "must be after start_time (or -1 for the end of the song)")
    if end is not None and end >= source_seconds:
        end = None
    return start, end


def _given_conditions(request, lyrics: str, duration: float | None) -> Conditions:
    return Conditions(prompt=request.prompt, lyrics=lyrics, duration=duration, vocal_language=request.vocal_language,
                      bpm=request.bpm, key_scale=request.key_scale, time_signature=request.time_signature)


def _seed(seed: int | None) -> int:
    import random

    return seed if seed is not None else random.SystemRandom().randrange(2**32)


def _dit_folder(root: Path, folder: str) -> str | None:
    """The variant's DiT folder for an official-layout root (None for a diffusers-layout one)."""
    from .checkpoint import DIT_CONFIG, is_diffusers_layout

    if is_diffusers_layout(root):
        return None
    if not (root / folder / DIT_CONFIG).is_file():
        raise WeightsError(f"{root / folder} is missing: the configured variant's DiT folder (pull it with "
                           f"`acestep-app weights pull`, or set [models.\"{FAMILY_NAME}\"].variant)")
    return folder


def _llm_dir(settings: Settings) -> Path:
    from acestep_app.weights.store import weights_cache_dir

    return weights_cache_dir(settings) / "llm"


def _asr_dir(settings: Settings) -> Path:
    from acestep_app.weights.store import weights_cache_dir

    return weights_cache_dir(settings) / "asr"


def _step_reporter(on_progress: ProgressCallback | None):
    if on_progress is None:
        return None
    return lambda step, total: on_progress(Progress(step, total, f"step {step}/{total}"))


def _take_reporter(on_progress: ProgressCallback | None):
    if on_progress is None:
        return None
    return lambda step, total, message: on_progress(Progress(step, total, message))

