"""The 5 Hz LM planner: a request's caption and lyrics -> metadata and semantic audio codes for the DiT.

``Planner.plan`` runs the official two phases with transformers' ``generate``:

1. **Chain of thought** (skipped when the user gave bpm, keyscale, time signature and duration, or
   with ``use_cot_metas=False``): the LM writes ``<think>\\nbpm: ..\\ncaption: ..\\nduration: ..\\n
   keyscale: ..\\nlanguage: ..\\ntimesignature: ..\\n</think>``, held to that order and to each
   field's value set by ``constraints.cot_script``; the user's own values are injected as tokens.
2. **Audio codes**: the chain of thought, as YAML, becomes the assistant's turn and the LM writes
   ``duration x 5`` codes (``constraints.codes_script``).

Both phases are guided by an unconditional prompt (``prompts.*_uncond_messages``) in the same batch
and sampled by ``sampling.GuidedSampler``. ``inspire`` / ``format`` / ``understand`` are the
official helper modes (an idea, or a caption and lyrics, or codes -> metadata and lyrics).

Three official quirks are done right here (docs/acestep-15-planner.md): phase 1 ends with
``</think>``; the LM's language reaches the DiT (the user's, when given, wins); and the codes are
always ``duration x 5`` long for the duration the metadata states (the official code constrains
phase 2 only by a duration the user gave), so the DiT's duration is the codes' length.

torch and transformers are imported inside functions (the schema imports this package cheaply).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import prompts
from .parsing import audio_codes, extract_lyrics, parse_metadata
from .values import (
    CODES_PER_SECOND, COT_FIELDS, INSTRUMENTAL_LYRICS, MAX_MODEL_LEN, NO_USER_INPUT, PLAN_FIELDS, REQUIRED_METADATA,
    code_count,
)

if TYPE_CHECKING:
    from acestep_app.songwriter.local_llm import GenerationSpeed
    from .constraints import Script, Vocabulary

logger = logging.getLogger(__name__)

# Static KV cache lengths are rounded up to these steps: on CUDA each length is one compiled graph.
_CUDA_CACHE_STEP = 1024
_CPU_CACHE_STEP = 256


@dataclass(frozen=True)
class SamplingConfig:
    """The LM's sampling (official defaults).

    Attributes:
        temperature: divides the logits last; 0 = greedy.
        top_p: nucleus mass kept; 0 or >= 1 = off.
        top_k: tokens kept; 0 = off.
        cfg_scale: classifier-free guidance of the conditional over the unconditional prompt; 1 = off
            (no unconditional rows are run).
        repetition_penalty: transformers' repetition penalty over the prompt and output; 1 = off.
    """

    temperature: float = 0.85
    top_p: float = 0.9
    top_k: int = 0
    cfg_scale: float = 2.0
    repetition_penalty: float = 1.0

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0


@dataclass(frozen=True)
class PlanRequest:
    """What the planner is asked: the request's text and the metadata the user gave (None = the LM decides).

    Attributes:
        caption: the user's caption (the LM reads it; with ``use_cot_caption`` the DiT gets the LM's).
        lyrics: the lyrics, as the LM and the DiT read them ("" for none, "[Instrumental]" for none sung).
        bpm, keyscale, timesignature, duration, language: the user's metadata; given values are
            forced into the chain of thought.
        default_language: the DiT's language when neither the user nor the LM gives one (phase 1
            skipped, or ``use_cot_language=False``); not forced into the chain of thought.
        negative_prompt: the caption of the LM's unconditional prompt ("NO USER INPUT" = none).
        use_cot_metas: run phase 1 for missing metadata (False: no chain of thought is written).
        use_cot_caption / use_cot_language: the LM writes (and the DiT gets) a caption / a language.
        constrained: hold the output to the formats (``constraints.py``); off, the LM writes freely and
            only what parses is used (the official ``use_constrained_decoding=False``).
        thinking: run phase 2 (the audio codes).
    """

    caption: str
    lyrics: str = ""
    bpm: int | None = None
    keyscale: str | None = None
    timesignature: str | None = None
    duration: float | None = None
    language: str | None = None
    default_language: str | None = None
    negative_prompt: str = NO_USER_INPUT
    use_cot_metas: bool = True
    use_cot_caption: bool = True
    use_cot_language: bool = True
    constrained: bool = True
    thinking: bool = True

    def given(self) -> dict[str, Any]:
        """The user's metadata as the chain of thought writes it (duration in whole seconds)."""
        values = {"bpm": self.bpm, "keyscale": self.keyscale, "timesignature": self.timesignature,
                  "duration": None if self.duration is None else int(self.duration), "language": self.language}
        return {key: one_line(value) for key, value in values.items() if value is not None}

    @property
    def needs_phase1(self) -> bool:
        return self.use_cot_metas and not all(key in self.given() for key in REQUIRED_METADATA)


def one_line(value: object) -> str | int:
    """A user value as one chain-of-thought line (line breaks would open new fields)."""
    return value if isinstance(value, int) else " ".join(str(value).split())


@dataclass(frozen=True)
class Plan:
    """The planner's result: what the DiT gets, and what came from the LM.

    Attributes:
        caption, lyrics, bpm, keyscale, timesignature, language: the DiT's conditions.
        duration: seconds; the codes' length (``len(codes) / 5``) when there are codes.
        audio_codes: ``"<|audio_code_N|>..."``, "" without phase 2.
        from_planner: the fields the LM decided (``"audio_codes"`` included when it wrote them).
        cot: the chain of thought's metadata as phase 2 read it.
        logs: lines for the response logs.
        tokens / seconds: generated tokens and wall time per phase (``"phase1"``, ``"phase2"``).
    """

    caption: str
    lyrics: str
    bpm: int | None
    keyscale: str | None
    timesignature: str | None
    duration: float | None
    language: str | None
    audio_codes: str = ""
    from_planner: tuple[str, ...] = ()
    cot: dict[str, Any] = field(default_factory=dict)
    logs: tuple[str, ...] = ()
    tokens: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def code_count(self) -> int:
        return self.audio_codes.count("<|audio_code_")

    def pipeline_arguments(self) -> dict[str, Any]:
        """Keyword arguments of diffusers' ``AceStepPipeline.__call__`` for this plan."""
        arguments = {
            "prompt": self.caption, "lyrics": self.lyrics, "vocal_language": self.language or "unknown",
            "bpm": self.bpm, "keyscale": self.keyscale, "timesignature": self.timesignature,
            "audio_duration": self.duration,
        }  # fmt: skip
        if self.audio_codes:
            arguments["audio_codes"] = self.audio_codes
        return arguments

    def metadata(self) -> dict[str, Any]:
        """The metadata fields the DiT gets (None where unknown)."""
        return {"bpm": self.bpm, "caption": self.caption, "duration": self.duration, "keyscale": self.keyscale,
                "language": self.language, "timesignature": self.timesignature}


@dataclass(frozen=True)
class Sketch:
    """The result of the helper modes: the chain of thought's metadata and the lyrics the LM wrote."""

    metadata: dict[str, Any]
    lyrics: str
    text: str
    tokens: int
    seconds: float


@dataclass(frozen=True)
class Generated:
    text: str
    tokens: int
    seconds: float


class Planner:
    """The 5 Hz LM, loaded once (see the module docstring).

    Args:
        model: a causal LM (Qwen3) on its device, in eval mode.
        tokenizer: its tokenizer, with the ``<|audio_code_N|>`` tokens and a chat template.
        name: shown in logs.
        speed: KV cache and compilation, as the song writer's (static + compiled on CUDA by default).
        max_model_len: the context the official runtime gives the LM; bounds every generation.
        max_duration: the longest song the LM may plan, in seconds (10-600).
        caption_tokens: the caption's token limit.
    """

    def __init__(self, model, tokenizer, *, name: str = "lm", speed: GenerationSpeed | None = None,
                 max_model_len: int = MAX_MODEL_LEN, max_duration: int = 600, caption_tokens: int = 512):
        from acestep_app.songwriter.local_llm import GenerationSpeed
        from .constraints import Vocabulary

        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.speed = speed or GenerationSpeed()
        self.max_model_len = max_model_len
        self.caption_tokens = caption_tokens
        if tokenizer.pad_token is None:  # the guidance batch is left-padded
            tokenizer.pad_token = tokenizer.eos_token
        self.vocabulary: Vocabulary = Vocabulary(tokenizer, model.get_output_embeddings().weight.shape[0], max_duration)
        self.pad_id = tokenizer.pad_token_id

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "auto", dtype: str = "auto", **kwargs: Any) -> Planner:
        """Load an LM folder (transformers layout).

        Args:
            device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
            dtype: ``"auto"`` (bfloat16 on CUDA, float32 elsewhere) or a torch dtype name.
            kwargs: ``Planner`` options.
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
        planner = cls(model, tokenizer, name=Path(path).name, **kwargs)
        logger.info("planner: loaded %s on %s (%s) in %.1f s", planner.name, device, dtype, time.perf_counter() - started)
        return planner

    # -- the two phases --------------------------------------------------------------------------

    def plan(self, request: PlanRequest, *, seed: int, sampling: SamplingConfig | None = None) -> Plan:
        """Run phase 1 (when metadata is missing) and phase 2 (when ``thinking``) for one request."""
        from .constraints import codes_script, cot_script

        sampling = sampling or SamplingConfig()
        generator = self._generator(seed)
        given = request.given()
        cot: dict[str, Any] = {key: given.get(key) for key in PLAN_FIELDS}
        cot["caption"] = None
        logs, tokens, seconds = [], {}, {}
        if request.needs_phase1:
            fields = [f for f in PLAN_FIELDS if (f != "caption" or request.use_cot_caption)
                      and (f != "language" or request.use_cot_language or "language" in given)]
            script = cot_script(self.vocabulary, fields, given, caption_tokens=self.caption_tokens) \
                if request.constrained else None
            prompt = prompts.render(self.tokenizer, prompts.phase1_messages(request.caption, request.lyrics),
                                    add_generation_prompt=True)
            uncond = prompts.render(self.tokenizer, prompts.phase1_uncond_messages(request.lyrics, request.negative_prompt),
                                    add_generation_prompt=True)
            out = self.generate(prompt, uncond if sampling.guided else None, script, sampling, generator,
                                max_new_tokens=prompts.max_new_tokens(None, self.max_model_len))
            cot.update(parse_metadata(out.text))
            tokens["phase1"], seconds["phase1"] = out.tokens, out.seconds
            logs.append(f"planner: {self.name} wrote the chain of thought in {out.tokens} tokens, {out.seconds:.2f} s")
        codes = ""
        duration = _number(cot.get("duration"))
        if request.duration is not None:
            duration = request.duration
        if request.thinking:
            target = code_count(duration) if duration else None
            assistant = prompts.format_cot(cot)
            prompt = prompts.render(self.tokenizer, prompts.phase2_messages(request.caption, request.lyrics, assistant),
                                    add_generation_prompt=False)
            uncond = prompts.render(
                self.tokenizer, prompts.phase2_uncond_messages(request.caption, request.lyrics, request.negative_prompt),
                add_generation_prompt=False,
            )
            script = codes_script(self.vocabulary, target) if request.constrained else None
            out = self.generate(prompt, uncond if sampling.guided else None, script, sampling, generator,
                                max_new_tokens=prompts.max_new_tokens(duration, self.max_model_len))
            codes = audio_codes(out.text)
            tokens["phase2"], seconds["phase2"] = out.tokens, out.seconds
            logs.append(f"planner: {self.name} wrote {codes.count('<|')} audio codes ({codes.count('<|') / CODES_PER_SECOND:g} s) "
                        f"in {out.seconds:.2f} s")
            if codes:
                duration = codes.count("<|") / CODES_PER_SECOND
        plan = self._merge(request, cot, codes, duration, logs, tokens, seconds)
        logger.info("%s", "; ".join(plan.logs))
        return plan

    def _merge(self, request: PlanRequest, cot: dict, codes: str, duration: float | None, logs: list[str],
               tokens: dict, seconds: dict) -> Plan:
        """The DiT's conditions: the user's metadata where given, the LM's elsewhere."""
        given = request.given()
        decided = [key for key in ("bpm", "keyscale", "timesignature", "duration") if key not in given and cot.get(key) is not None]
        caption = request.caption
        if request.use_cot_caption and cot.get("caption"):
            caption = cot["caption"]
            decided.append("caption")
        language = request.language
        if language is None and request.use_cot_language and cot.get("language"):
            language = cot["language"]
            decided.append("language")
        language = language or request.default_language
        if codes:
            decided.append("audio_codes")
        shown = ", ".join(f"{key} {caption if key == 'caption' else cot.get(key)!r}" for key in decided if key != "audio_codes")
        logs.append(f"planner: metadata from the LM: {shown or 'none'}")
        return Plan(
            caption=caption, lyrics=request.lyrics, bpm=_integer(request.bpm if request.bpm is not None else cot.get("bpm")),
            keyscale=request.keyscale or _text(cot.get("keyscale")),
            timesignature=request.timesignature or _text(cot.get("timesignature")), duration=duration,
            language=language, audio_codes=codes, from_planner=tuple(decided), cot=dict(cot), logs=tuple(logs),
            tokens=tokens, seconds=seconds,
        )  # fmt: skip

    def warmup(self) -> None:
        """One short plan through both phases: allocates the KV cache and, on CUDA, compiles the
        decode step for the common cache length before the first request pays for it."""
        self.plan(PlanRequest(caption="warm-up", lyrics="[Instrumental]", duration=2.0), seed=0)

    # -- the helper modes ------------------------------------------------------------------------

    def inspire(self, query: str, *, instrumental: bool, seed: int, language: str | None = None,
                duration: float | None = None, sampling: SamplingConfig | None = None,
                lyrics_tokens: int | None = None) -> Sketch:
        """An idea -> metadata (with genres) and lyrics ("[Instrumental]" for instrumental requests).

        ``language`` (not "unknown") and ``duration`` are forced into the chain of thought, so the
        lyrics are written for them; ``lyrics_tokens`` bounds the lyrics (default: only the
        context's limit, as the official mode)."""
        messages = prompts.inspire_messages(query, instrumental)
        given: dict[str, Any] = {"language": language} if language and language != "unknown" else {}
        if duration is not None:
            given["duration"] = int(duration)
        sketch = self._sketch(messages, given, seed, sampling, lyrics_tokens)
        if instrumental and not sketch.lyrics:
            return Sketch(sketch.metadata, INSTRUMENTAL_LYRICS, sketch.text, sketch.tokens, sketch.seconds)
        return sketch

    def format(self, caption: str, lyrics: str, *, seed: int, sampling: SamplingConfig | None = None,
               lyrics_tokens: int | None = None) -> Sketch:
        """A caption and lyrics -> a detailed caption, metadata and formatted lyrics."""
        return self._sketch(prompts.format_messages(caption, lyrics), {}, seed, sampling, lyrics_tokens)

    def understand(self, codes: str, *, seed: int, sampling: SamplingConfig | None = None,
                   lyrics_tokens: int | None = None) -> Sketch:
        """Audio codes -> metadata and lyrics (temperature 0.3 by default, as the official mode)."""
        sampling = sampling or SamplingConfig(temperature=0.3)
        return self._sketch(prompts.understand_messages(codes), {}, seed, sampling, lyrics_tokens)

    def _sketch(self, messages: list[dict], given: dict, seed: int, sampling: SamplingConfig | None,
                lyrics_tokens: int | None) -> Sketch:
        from .constraints import cot_script

        # The helper modes run without guidance (the official ones have no unconditional prompt).
        sampling = replace(sampling or SamplingConfig(), cfg_scale=1.0)
        script = cot_script(self.vocabulary, COT_FIELDS, given, then="lyrics", caption_tokens=self.caption_tokens,
                            lyrics_tokens=lyrics_tokens)
        prompt = prompts.render(self.tokenizer, messages, add_generation_prompt=True)
        out = self.generate(prompt, None, script, sampling, self._generator(seed),
                            max_new_tokens=prompts.max_new_tokens(None, self.max_model_len))
        return Sketch(parse_metadata(out.text), extract_lyrics(out.text), out.text, out.tokens, out.seconds)

    # -- generation ------------------------------------------------------------------------------

    def generate(self, prompt: str, uncond: str | None, script: Script | None, sampling: SamplingConfig, generator,
                 *, max_new_tokens: int) -> Generated:
        """One guided ``generate`` of one sequence, constrained by ``script`` (None: free); returns
        its text (special tokens kept)."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        from .sampling import GuidedSampler

        texts = [prompt] if uncond is None else [prompt, uncond]
        batch = self.tokenizer(texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
        input_ids = batch["input_ids"].to(self.model.device)
        attention_mask = batch["attention_mask"].to(self.model.device)
        bound = script.max_tokens if script is not None else None
        new_tokens = max_new_tokens if bound is None else min(max_new_tokens, bound)
        config = GenerationConfig(
            do_sample=False, max_new_tokens=new_tokens, eos_token_id=sorted({self.vocabulary.eos_id, self.pad_id}),
            pad_token_id=self.pad_id,
            **self._cache_options(input_ids.shape[1] + new_tokens),
        )
        sampler = GuidedSampler([script], sampling, generator)
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(input_ids, attention_mask=attention_mask, generation_config=config,
                                         logits_processor=LogitsProcessorList([sampler]))
        seconds = time.perf_counter() - started
        written = output[0, input_ids.shape[1]:].tolist()
        ends = [index for index, token in enumerate(written) if token in (self.vocabulary.eos_id, self.pad_id)]
        if ends:  # the end of sequence (or pad, which the official decoder also stops on), then padding
            written = written[: ends[0] + 1]
        text = self.tokenizer.decode(written, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return Generated(text, len(written), seconds)

    def _cache_options(self, length: int) -> dict[str, Any]:
        cuda = self.model.device.type == "cuda"
        static = self.speed.cache == "static" or (self.speed.cache == "auto" and cuda)
        if not static:
            return {"disable_compile": True}
        step = _CUDA_CACHE_STEP if cuda else _CPU_CACHE_STEP
        options: dict[str, Any] = {"cache_implementation": "static", "max_cache_len": -(-length // step) * step}
        if self.speed.compile is False or (not cuda and not self.speed.compile):
            options["disable_compile"] = True
        elif not cuda:
            from transformers import CompileConfig

            compiled = CompileConfig(mode="default")
            compiled._compile_all_devices = True  # transformers' switch for compiling off CUDA
            options["compile_config"] = compiled
        return options

    def _generator(self, seed: int):
        import torch

        return torch.Generator(device=self.model.device).manual_seed(seed)


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
