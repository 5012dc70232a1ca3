"""The default song writer: a local instruct model, held to our JSON frame while it generates."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from acestep_app.songwriter.fallback import attempt_seed, fallback_after
from acestep_app.songwriter.song import (
    LyricBudget,
    Song,
    build_messages,
    parse_draft,
    short_reason,
)

if TYPE_CHECKING:
    from acestep_app.songwriter.json_skeleton import JsonField

logger = logging.getLogger(__name__)


CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")
TAGS_MAX_NEW_TOKENS = 48
# The lyric opens with a section header: small models then keep to one sung line per row.
_LYRICS_OPENER = "[verse]\\n"
# Static KV cache length on CUDA, where the decode step is compiled: one shape, so no recompiles.
COMPILED_CACHE_LEN = 2048
_CACHE_LEN_STEP = 256


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling for the local model. ``max_attempts`` counts the first try."""

    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    max_attempts: int = 3


@dataclass(frozen=True)
class GenerationSpeed:
    """How the local model decodes; the song only differs by float rounding.

    Attributes:
        cache: ``"static"`` (a KV cache allocated once per request at a fixed size: fixed shapes, so the
            decode step can be compiled), ``"dynamic"`` (grows by one token a step) or ``"auto"``:
            static on CUDA, dynamic elsewhere (on CPU a static cache without compilation was slower).
        compile: ``torch.compile`` the decode step of a static cache. None: transformers decides (on
            for CUDA); True also compiles on CPU.
    """

    cache: Literal["auto", "static", "dynamic"] = "auto"
    compile: bool | None = None


EAGER = GenerationSpeed(cache="dynamic", compile=False)


def find_llm_weights(path: str | os.PathLike | None) -> tuple[Path, str | None] | None:
    """``(directory, gguf_file or None)`` when ``path`` holds a loadable model, else None.

    Accepts a transformers folder (``config.json`` plus ``*.safetensors``/``*.bin``), a ``.gguf``
    file, or a folder holding exactly one ``.gguf`` file.
    """
    if path is None:
        return None
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if not path.is_dir():
        return None
    if (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin"))):
        return path, None
    ggufs = sorted(path.glob("*.gguf"))
    return (path, ggufs[0].name) if len(ggufs) == 1 else None


def song_fields(instrumental: bool, budget: LyricBudget) -> list[JsonField]:
    """The JSON values the model writes: tags, and for songs with vocals the lyrics."""
    from acestep_app.songwriter.json_skeleton import JsonField

    tags = JsonField("tags", TAGS_MAX_NEW_TOKENS)
    if instrumental:
        return [tags]
    return [tags, JsonField("lyrics", budget.max_new_tokens, min_chars=12 * budget.min_lines, opener=_LYRICS_OPENER)]


class TransformersSongWriter:
    """Song writer on a local causal LM (any transformers chat model; Qwen3 in the real deploy).

    One seeded ``generate`` call per attempt, held to the JSON object by ``JsonSkeletonProcessor``:
    the prompt ends with ``{"tags": "``, the processor forces ``", "lyrics": "[verse]\\n`` and ``"}``
    and the model only writes the two values (instrumental songs: tags only). The values are then
    parsed and validated by ``parse_draft``.

    Args:
        model: a ``PreTrainedModel`` with a causal LM head, already on its device and in eval mode.
        tokenizer: its tokenizer (a chat template is used when present, ChatML otherwise).
        name: shown in logs.
        sampling: temperature / top-p / top-k and retry count.
        speed: KV cache and compilation (``GenerationSpeed``; ``EAGER`` for transformers' defaults).
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "llm", sampling: SamplingConfig | None = None,
                 speed: GenerationSpeed | None = None):
        from acestep_app.songwriter.json_skeleton import TokenPieces

        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.sampling = sampling or SamplingConfig()
        self.speed = speed or GenerationSpeed()
        self.description = f"local language model {name}"
        self.stop_ids = self._stop_token_ids()
        self.pieces = TokenPieces(tokenizer, self.stop_ids)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, device: str = "auto", torch_dtype: str = "auto",
                        sampling: SamplingConfig | None = None,
                        speed: GenerationSpeed | None = None) -> TransformersSongWriter:
        """Load a model folder or ``.gguf`` file (see ``find_llm_weights``).

        Args:
            device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
            torch_dtype: ``"auto"`` (bfloat16 on CUDA, float32 on CPU) or a torch dtype name.
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from acestep_app.errors import WeightsError

        found = find_llm_weights(path)
        if found is None:
            raise WeightsError(f"no language model weights at {path}")
        directory, gguf_file = found
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if torch_dtype == "auto":
            torch_dtype = "bfloat16" if device.startswith("cuda") else "float32"
        started = time.perf_counter()
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(directory, **extra)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, torch_dtype), **extra)
        model.to(device).eval()
        name = gguf_file or directory.name
        logger.info("song writer: loaded %s on %s in %.1f s", name, device, time.perf_counter() - started)
        return cls(model, tokenizer, name=name, sampling=sampling, speed=speed)

    def write(self, prompt: str, *, instrumental: bool, duration: float, seed: int) -> Song:
        budget = LyricBudget(duration)
        fields = song_fields(instrumental, budget)
        prompt_ids = self.prompt_ids(build_messages(prompt, instrumental=instrumental, budget=budget), fields)
        failures: list[str] = []
        tokens = 0
        for attempt in range(self.sampling.max_attempts):
            reply, used = self.draft(prompt_ids, fields, attempt_seed(seed, attempt))
            tokens += used
            try:
                draft = parse_draft(reply, budget=budget, instrumental=instrumental)
            except ValueError as error:  # json.JSONDecodeError and ValidationError are ValueErrors
                failures.append(short_reason(error))
                logger.info("song writer: attempt %d invalid: %s", attempt + 1, failures[-1])
                continue
            read = len(prompt_ids) * (attempt + 1)
            log = (f"prompt: {self.name} wrote tags and lyrics in {attempt + 1} attempt(s), "
                   f"{read} prompt + {tokens} generated tokens")
            return Song(draft.tags, draft.lyrics, "llm", [log], tokens, read)
        song = fallback_after(failures, prompt, instrumental, duration, seed, tokens)
        return replace(song, prompt_tokens=len(prompt_ids) * len(failures))

    def prompt_ids(self, messages: list[dict[str, str]], fields: list[JsonField]) -> list[int]:
        """The chat, with the assistant turn opened by the JSON object up to the first value."""
        from acestep_app.songwriter.json_skeleton import opening

        template = None if getattr(self.tokenizer, "chat_template", None) else CHATML_TEMPLATE
        # enable_thinking=False: Qwen3 hybrid checkpoints would otherwise open a <think> block.
        chat = self.tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        return self.tokenizer(chat + opening(fields), add_special_tokens=False)["input_ids"]

    def draft(self, prompt_ids: list[int], fields: list[JsonField], seed: int) -> tuple[str, int]:
        """One seeded, JSON-constrained ``generate``; returns the reply's JSON text and the tokens generated."""
        import torch
        from transformers import LogitsProcessorList

        from acestep_app.songwriter.json_skeleton import JsonSkeletonProcessor

        skeleton = JsonSkeletonProcessor(self.pieces, fields, len(prompt_ids))
        input_ids = torch.tensor([prompt_ids], device=self.model.device)
        max_new_tokens = sum(field.max_tokens for field in fields) + 16 * len(fields)  # values + skeleton
        cuda = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.inference_mode():
            torch.manual_seed(seed)
            output = self.model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), logits_processor=LogitsProcessorList([skeleton]),
                max_new_tokens=max_new_tokens, **self._generate_options(len(prompt_ids) + max_new_tokens),
            )
        return skeleton.json_text(self.tokenizer), output.shape[1] - len(prompt_ids)

    def _generate_options(self, length: int) -> dict[str, Any]:
        cfg, speed = self.sampling, self.speed
        options: dict[str, Any] = {
            "do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k,
            "eos_token_id": self.stop_ids, "pad_token_id": self.stop_ids[0],
        }
        cuda = self.model.device.type == "cuda"
        static = speed.cache == "static" or (speed.cache == "auto" and cuda)
        if not static or speed.compile is False:
            options["disable_compile"] = True
        if not static:
            return options
        options["cache_implementation"] = "static"
        if cuda and speed.compile is not False:  # one cache shape for every request: one compiled graph
            options["max_cache_len"] = COMPILED_CACHE_LEN
        else:
            options["max_cache_len"] = -(-length // _CACHE_LEN_STEP) * _CACHE_LEN_STEP
        if speed.compile and not cuda:
            from transformers import CompileConfig

            config = CompileConfig(mode="default")
            config._compile_all_devices = True  # transformers' switch for compiling off CUDA
            options["compile_config"] = config
        return options

    def _stop_token_ids(self) -> list[int]:
        """End-of-turn tokens, the tokenizer's end-of-sequence token first."""
        ids = [self.tokenizer.eos_token_id]
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids += eos if isinstance(eos, list) else [eos]
        vocab = self.tokenizer.get_vocab()
        ids += [vocab[token] for token in _STOP_TOKENS if token in vocab]
        return list(dict.fromkeys(i for i in ids if i is not None))


# ----------------------------------------------------------------------------------------------
# Hosted model (OpenAI-compatible chat endpoint)
# ----------------------------------------------------------------------------------------------


