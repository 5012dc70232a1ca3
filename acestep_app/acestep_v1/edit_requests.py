"""fal's three editing requests -> pipeline editing tasks (editing spec §8, plus our decisions).

Each decision below is also in the README ("Editing endpoints: decisions"):

- audio-to-audio is FlowEdit from (original_tags, original_lyrics) to (tags, lyrics); ``edit_mode``
  picks the reference UI's preset (remix: steps 20-40 %, lyrics: 60-100 %). Empty ``tags`` or
  ``lyrics`` keep the original ones (as the reference UI does): the target is "the same, except".
  ``seed`` feeds FlowEdit's one generator; ``original_seed`` cannot change anything (FlowEdit uses
  no other noise) and is only acknowledged in the logs.
- inpaint and outpaint need two generators: the first gets ``seed``, the second
  :func:`retake_seed` of it, so equal seeds never collapse the noise mix.
- inpaint times ``relative_to: "end"`` count back from the end of the song (D - t). The range is
  clamped to [0, D]: an inpaint never extends; an end at D includes the last partial latent frame;
  the whole song is repainted with ``variance`` like any range (the reference would ignore the
  source); an empty range is a 422; variance 0 returns the source.
- outpaint adds the full length on both sides, may add more than the source's length, and refuses
  (422) a result over 240 s or an extension shorter than one latent frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from acestep_app.acestep_v1.editing import EDIT_PRESETS, LATENT_RATE, EditTask, Extend, FlowEdit, Repaint, plan_extend, plan_inpaint
from acestep_app.errors import InputError
from acestep_app.audio.resample import resampled_length

logger = logging.getLogger(__name__)

MAX_SEED = 2**32
RETAKE_SEED_OFFSET = 0x9E3779B9  # 2**32 / golden ratio: fixed, odd, far from small seeds
SAMPLES_PER_FRAME = 4096
NATIVE_SAMPLE_RATE = 44100
MAX_SECONDS = 240.0


def retake_seed(seed: int) -> int:
    """The second generator's seed of a repaint/extend: ``(seed + 0x9E3779B9) mod 2**32`` (never ``seed``)."""
    return (seed + RETAKE_SEED_OFFSET) % MAX_SEED


def source_frames(num_samples: int, sample_rate: int) -> int:
    """Latent frames the encoder makes of ``num_samples`` at ``sample_rate``: ceil(N44 / 4096)."""
    return -(-resampled_length(num_samples, sample_rate, NATIVE_SAMPLE_RATE) // SAMPLES_PER_FRAME)


MAX_FRAMES = source_frames(int(MAX_SECONDS * NATIVE_SAMPLE_RATE), NATIVE_SAMPLE_RATE)  # 2584: a 240 s clip


@dataclass(frozen=True)
class EditPlan:
    """What the pipeline runs for one request: conditioning text, the task, and what to report."""

    tags: str  # conditioning of the run (FlowEdit: the source's description)
    lyrics: str
    task: EditTask
    result_tags: str  # what the output was made with, as returned to the client
    result_lyrics: str


def plan_edit(request, waveform: torch.Tensor, sample_rate: int, seed: int, logs: list[str]) -> EditPlan:
    """Map an ``AudioToAudioInput``/``AudioInpaintInput``/``AudioOutpaintInput`` onto a task.

    ``waveform`` (2, N) is the decoded source. Raises :class:`InputError` for requests that cannot
    be served; appends one line per decision that changed the input to ``logs``.
    """
    from acestep_app.acestep_v1.schema import AudioInpaintInput, AudioOutpaintInput, AudioToAudioInput

    if isinstance(request, AudioToAudioInput):
        return _audio_to_audio(request, waveform, sample_rate, seed, logs)
    if isinstance(request, AudioInpaintInput):
        return _inpaint(request, waveform, sample_rate, seed, logs)
    if isinstance(request, AudioOutpaintInput):
        return _outpaint(request, waveform, sample_rate, seed, logs)
    raise TypeError(f"not an editing request: {type(request).__name__}")


def _note(logs: list[str], message: str) -> None:
    logger.info(message)
    logs.append(message)


def _audio_to_audio(request, waveform, sample_rate, seed, logs) -> EditPlan:
    keep_tags, keep_lyrics = not request.tags.strip(), not request.lyrics.strip()
    tags = request.original_tags if keep_tags else request.tags
    lyrics = request.original_lyrics if keep_lyrics else request.lyrics
    if keep_tags:
        _note(logs, "tags is empty: the edit keeps original_tags")
    if keep_lyrics and request.original_lyrics:
        _note(logs, "lyrics is empty: the edit keeps original_lyrics")
    if request.original_seed is not None:
        _note(logs, f"original_seed {request.original_seed} noted; the edit draws all its noise from seed {seed}")
    if str(request.scheduler) != "euler":
        _note(logs, "audio-to-audio always samples with euler (FlowEdit)")
    n_min, n_max = EDIT_PRESETS[str(request.edit_mode)]
    task = FlowEdit(waveform, sample_rate, tags, lyrics, n_min=n_min, n_max=n_max, n_avg=1, seed=seed)
    return EditPlan(request.original_tags, request.original_lyrics, task, tags, lyrics)


def _absolute_time(value: float, relative_to, duration: float) -> float:
    return duration - value if str(relative_to) == "end" else value


def _inpaint(request, waveform, sample_rate, seed, logs) -> EditPlan:
    duration = waveform.shape[-1] / sample_rate
    start = _absolute_time(request.start_time, request.start_time_relative_to, duration)
    end = _absolute_time(request.end_time, request.end_time_relative_to, duration)
    clamped = (min(max(start, 0.0), duration), min(max(end, 0.0), duration))
    if clamped != (start, end):
        _note(logs, f"inpaint range {start:.3f}-{end:.3f} s clamped to the song: {clamped[0]:.3f}-{clamped[1]:.3f} s")
    plan = plan_inpaint(start, end, source_frames(waveform.shape[-1], sample_rate), duration)
    if plan.end <= plan.start:
        raise InputError(
            "end_time",
            f"the range to inpaint ({start:.3f}-{end:.3f} s of a {duration:.3f} s song) is empty: "
            "end_time must fall after start_time, inside the song",
        )
    if request.variance == 0:
        _note(logs, "variance 0: nothing is regenerated, the result is the source")
    task = Repaint(
        waveform, sample_rate, clamped[0], clamped[1], variance=request.variance,
        seed=retake_seed(seed), within_source=True,
    )  # fmt: skip
    return EditPlan(request.tags, request.lyrics, task, request.tags, request.lyrics)


def _outpaint(request, waveform, sample_rate, seed, logs) -> EditPlan:
    duration = waveform.shape[-1] / sample_rate
    before, after = request.extend_before_duration, request.extend_after_duration
    frames = source_frames(waveform.shape[-1], sample_rate)
    plan = plan_extend(before, after, frames, duration)
    field = "extend_before_duration" if before > 0 and after == 0 else "extend_after_duration"
    if not plan.is_extend:
        raise InputError(
            field, f"nothing to extend: add at least one latent frame ({1 / LATENT_RATE:.3f} s) before or after"
        )
    if plan.frames > MAX_FRAMES:
        room = max(0.0, MAX_SECONDS - duration)
        raise InputError(
            field,
            f"the extended song would last {plan.frames / LATENT_RATE:.1f} s; the model makes at most "
            f"{MAX_SECONDS:.0f} s, so at most {room:.1f} s can be added to this {duration:.1f} s song",
        )
    task = Extend(waveform, sample_rate, before=before, after=after, variance=1.0, seed=retake_seed(seed))
    return EditPlan(request.tags, request.lyrics, task, request.tags, request.lyrics)
