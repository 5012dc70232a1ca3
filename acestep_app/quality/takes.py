"""Ranked takes: transcribe every take of a song and pick the one whose sung words best match its lyrics.

ACE-Step sometimes skips or garbles lyrics, and users reroll seeds by hand until it does not. With
``[quality].takes = N`` the Engine samples N seeds, and this module scores each take by the word
error rate (WER) of a Whisper transcript against the request's lyrics: structure tags, case and
punctuation removed, Chinese and Japanese compared character by character (they are written
without spaces). The lowest WER wins; ties go to the earlier take.

The transcriber is any object with ``transcribe(waveforms, sample_rate, language) -> list[str]``;
:class:`WhisperTranscriber` runs a Whisper-family checkpoint through transformers (pinned in
``weights/manifest.toml`` as ``asr``). Without one, the first take is returned and the logs say so.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from acestep_app.quality.lyric_timing import strip_structure

logger = logging.getLogger(__name__)

ASR_SAMPLE_RATE = 16000
CHUNK_SECONDS = 30  # Whisper's window
MIN_CHUNK_SECONDS = 1.0  # a shorter tail is dropped: too short to hold a word worth scoring
MAX_NEW_TOKENS = 220  # a 30 s window of sung words is well under Whisper's 448-token limit
ASR_BATCH = 16  # windows per Whisper forward

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
WORD_TOKEN = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+")
APOSTROPHES = re.compile(r"['’`´]")


def lyric_words(text: str) -> list[str]:
    """Words to compare: tags dropped, NFKC, lower case, no punctuation or apostrophes, CJK per character."""
    text = unicodedata.normalize("NFKC", strip_structure(text)).lower()
    return WORD_TOKEN.findall(APOSTROPHES.sub("", text))


def take_seeds(count: int, seed: int, *, seed_given: bool, lyrics: str, logs: list[str],
               draw: Callable[[], int]) -> list[int]:
    """``count`` take seeds (``[quality].takes``), the first being ``seed``, the others from ``draw``; one
    when there is nothing to rank (no sung words) or the caller gave the seed to replay its take."""
    if count == 1:
        return [seed]
    if seed_given:
        logs.append(f"seed {seed} given: one take, no ranking (the seed a ranked request returns replays its take)")
        return [seed]
    if not lyric_words(lyrics):
        logs.append("instrumental: one take, nothing to rank")
        return [seed]
    return [seed, *(draw() for _ in range(count - 1))]


def word_error_rate(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """(substitutions + deletions + insertions) / len(reference), by Levenshtein distance over words.

    An empty reference scores 0 against an empty hypothesis and 1 against anything else.
    """
    if not reference:
        return 0.0 if not hypothesis else 1.0
    previous = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, start=1):
        current = [i]
        for j, heard in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != heard)))
        previous = current
    return previous[-1] / len(reference)


@dataclass
class Take:
    """One sampled take: its seed and ``(2, N)`` float32 audio, then its transcript and WER once ranked."""

    seed: int
    waveform: np.ndarray
    transcript: str | None = None
    score: float | None = None  # WER against the lyrics; lower is better; None when not ranked


StepReporter = Callable[[int, int, str], None]  # (step, total, message) over all runs


@dataclass
class SampledTakes:
    takes: list[Take]
    sample_rate: int
    num_forwards: int
    timings: dict[str, float] = field(default_factory=dict)  # summed over runs


def sample_takes(pipeline, seeds: Sequence[int], *, batched: bool, report: StepReporter | None = None,
                 **arguments) -> SampledTakes:
    """Run ``pipeline(**arguments)`` for every seed: one call per seed, or one batched call.

    One call per seed runs exactly what a single-take request with that seed runs, so a replay of any
    take's seed is bit-identical. A batched call is faster where the accelerator has room, but batch
    size changes kernel choices (convolutions, GEMM tiling), so a replay matches only to float
    rounding. A batched call that runs out of accelerator memory is retried one seed at a time.
    """
    if batched and len(seeds) > 1:
        import torch

        try:
            return _sample_runs(pipeline, [list(seeds)], report, arguments)
        except torch.OutOfMemoryError:
            logger.warning("a batch of %d takes ran out of memory; running them one at a time", len(seeds))
        _release_accelerator_memory()  # outside the except block, once the failed run's tensors are gone
    return _sample_runs(pipeline, [[seed] for seed in seeds], report, arguments)


def _sample_runs(pipeline, groups: list[list[int]], report: StepReporter | None, arguments: dict) -> SampledTakes:
    takes, forwards, timings, sample_rate = [], 0, {}, 0
    for index, group in enumerate(groups):
        output = pipeline(seed=group, batch_size=len(group), callback=_run_reporter(report, index, len(groups)),
                          **arguments)
        takes.extend(Take(seed, waveform.numpy()) for seed, waveform in zip(output.seeds, output.waveforms))
        forwards += output.num_forwards
        sample_rate = output.sample_rate
        for name, seconds in output.timings.items():
            timings[name] = timings.get(name, 0.0) + seconds
    return SampledTakes(takes, sample_rate, forwards, timings)


def _run_reporter(report: StepReporter | None, index: int, runs: int) -> Callable[[int, int], None] | None:
    if report is None:
        return None

    def on_step(step: int, total: int) -> None:
        prefix = f"take {index + 1}/{runs}: " if runs > 1 else ""
        report(index * total + step, runs * total, f"{prefix}step {step}/{total}")

    return on_step


def _release_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Transcriber(Protocol):
    def transcribe(self, waveforms: Sequence[np.ndarray], sample_rate: int, language: str | None = None) -> list[str]:
        """One transcript per ``(channels, N)`` waveform."""


def language_of(lyrics: str) -> str | None:
    """The lyrics' language for Whisper: by script for ja/ko/zh, else LangSegment on the whole text, kept
    only when it is one of ACE-Step's languages (short lines fool it); None lets Whisper detect it."""
    sung = [line.strip() for line in strip_structure(lyrics).splitlines() if line.strip()]
    text = "".join(sung)
    if re.search(r"[\u3040-\u30ff]", text):
        return "ja"
    if re.search(r"[\uac00-\ud7a3]", text):
        return "ko"
    if re.search(rf"[{_CJK}]", text):
        return "zh"
    if not sung:
        return None
    from acestep_app.acestep_v1.lyrics.tokenizer import (
        SUPPORTED_LANGUAGES,
        detect_language,
    )

    language = detect_language("\n".join(sung))
    return language if language in SUPPORTED_LANGUAGES else None


def rank_takes(
    takes: list[Take], lyrics: str, transcriber: Transcriber | None, sample_rate: int
) -> tuple[int, list[str]]:
    """Score every take against ``lyrics``; return the winner's index and log lines (one per take, then the pick)."""
    if transcriber is None:
        return 0, [f"takes not ranked: no ASR model loaded (weights without `asr`); returned take 1 of {len(takes)}, "
                   f"seed {takes[0].seed}"]
    language = language_of(lyrics)
    transcripts = transcriber.transcribe([take.waveform for take in takes], sample_rate, language)
    reference = lyric_words(lyrics)
    for take, transcript in zip(takes, transcripts, strict=True):
        take.transcript = transcript
        take.score = word_error_rate(reference, lyric_words(transcript))
    winner = min(range(len(takes)), key=lambda index: (takes[index].score, index))
    logs = [f"take {index + 1}: seed {take.seed}, lyric WER {take.score:.3f}" for index, take in enumerate(takes)]
    logs.append(f"returned take {winner + 1} of {len(takes)} (seed {takes[winner].seed}, lowest lyric WER "
                f"{takes[winner].score:.3f}, language {language or 'auto'})")
    return winner, logs


class WhisperTranscriber:
    """A Whisper-family checkpoint (transformers layout: model, tokenizer and feature extractor in one folder).

    Songs are mixed to mono, resampled to 16 kHz and cut into 30 s windows; every window of every
    take goes through ``generate`` in batches, and each take's transcript is its windows' texts joined.
    """

    def __init__(self, model, processor, path: Path):
        self.model = model
        self.processor = processor
        self.path = path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype=None) -> WhisperTranscriber:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        dtype = dtype or torch.float32
        processor = WhisperProcessor.from_pretrained(path)
        model = WhisperForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval()
        return cls(model, processor, Path(path))

    @property
    def description(self) -> str:
        return f"whisper ({self.path.name or self.path})"

    def windows(self, waveform: np.ndarray, sample_rate: int) -> list[np.ndarray]:
        import torch

        from acestep_app.audio.resample import resample

        mono = torch.from_numpy(np.asarray(waveform, dtype=np.float32)).mean(0)
        audio = resample(mono, sample_rate, ASR_SAMPLE_RATE).numpy()
        step = CHUNK_SECONDS * ASR_SAMPLE_RATE
        pieces = [audio[start:start + step] for start in range(0, len(audio), step)]
        kept = [piece for piece in pieces if len(piece) >= MIN_CHUNK_SECONDS * ASR_SAMPLE_RATE]
        return kept or pieces[:1]

    def transcribe(self, waveforms: Sequence[np.ndarray], sample_rate: int, language: str | None = None) -> list[str]:
        import torch

        windows, owners = [], []
        for index, waveform in enumerate(waveforms):
            pieces = self.windows(waveform, sample_rate)
            windows.extend(pieces)
            owners.extend([index] * len(pieces))
        texts: list[str] = []
        options = self.generate_options(language)
        with torch.inference_mode():
            for start in range(0, len(windows), ASR_BATCH):
                features = self.processor.feature_extractor(
                    windows[start:start + ASR_BATCH], sampling_rate=ASR_SAMPLE_RATE, return_tensors="pt",
                    return_attention_mask=True,
                )
                ids = self.model.generate(
                    features.input_features.to(self.model.device, self.model.dtype),
                    attention_mask=features.attention_mask.to(self.model.device),
                    **options,
                )
                texts.extend(self.processor.batch_decode(ids, skip_special_tokens=True))
        joined = [[] for _ in waveforms]
        for owner, text in zip(owners, texts):
            joined[owner].append(text.strip())
        return [" ".join(part for part in parts if part) for parts in joined]

    def generate_options(self, language: str | None) -> dict:
        config = self.model.generation_config
        limit = self.model.config.max_target_positions - 4  # room for the start, language, task and timestamp tokens
        options: dict = {"max_new_tokens": min(MAX_NEW_TOKENS, limit)}
        if getattr(config, "task_to_id", None) and "transcribe" in config.task_to_id:
            options["task"] = "transcribe"
        if language and f"<|{language}|>" in (getattr(config, "lang_to_id", None) or {}):
            options["language"] = language
        return options


def load_transcriber(path: str | Path, device: str = "cpu", dtype=None) -> WhisperTranscriber | None:
    """The Whisper checkpoint at ``path``, or None (logged) when there is none, e.g. the tiny demo."""
    path = Path(path)
    if not (path / "config.json").is_file():
        logger.warning("no ASR model at %s: takes will not be ranked (run `acestep-app weights pull`)", path)
        return None
    transcriber = WhisperTranscriber.from_pretrained(path, device=device, dtype=dtype)
    logger.info("ASR model for ranking takes loaded from %s", path)
    return transcriber
