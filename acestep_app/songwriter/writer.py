"""Prompt -> style tags and structured lyrics: the first stage of prompt-to-audio.

fal's prompt-to-audio takes one free-text prompt and "uses it to generate tags and lyrics". A
``SongWriter`` does that step:

* ``TransformersSongWriter`` (default): a local instruct model (Qwen3-4B-Instruct-2507 in the real
  deploy, pulled with the weights into ``<weights>/llm``) loaded once with transformers. Each attempt
  is one seeded ``generate`` call (static KV cache, compiled on CUDA) held to one JSON object by
  ``json_skeleton.JsonSkeletonProcessor``: the writer supplies ``{"tags": "...", "lyrics": "[verse]\n..."}``
  and the model only fills the two string values (the lyric cannot close before its minimum length).
  The result is parsed with ``json`` and validated with pydantic (tags cleaned, prose wrapped into
  lines, loops rejected, length fitted). Same seed + prompt -> same song; invalid output is retried
  with the next seed; after ``max_attempts`` the deterministic fallback is used and the logs say so.
* ``OpenAISongWriter``: any OpenAI-compatible chat endpoint (URL, model, key from the environment).
* ``FallbackSongWriter``: no model at all. Tags are the prompt's own words (music words first,
  ``N bpm`` and vocal phrases kept whole); the lyric is a minimal verse/chorus structure built from
  the prompt's other words and fitted to the duration. Used when no LLM weights are present (for
  instance with only the tiny ACE-Step checkpoint) and whenever a model fails.

Lyric length rule (``LyricBudget``): a sung line takes about 4 s and about 75 % of a song is sung,
so a song of ``d`` seconds gets at most ``round(0.75 * d / 4)`` lines (clamped to 2..48), in
sections of about 4 lines (``ceil(lines / 4)`` sections asked for, at most 2 more accepted, 8..10
for the longest songs), and at least a quarter of its maximum. The model is told the budget and the
budget is enforced afterwards: extra lines and sections are cut, too few lines is invalid output.
Instrumental songs get exactly ``"[inst]"`` and the model is only asked for tags.

torch and transformers are imported inside functions, so this module imports cheaply.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator

if TYPE_CHECKING:
    import httpx

    from acestep_app.songwriter.json_skeleton import JsonField

logger = logging.getLogger(__name__)

INSTRUMENTAL_LYRICS = "[inst]"
BACKENDS = ("transformers", "openai", "fallback")
# OpenAI-compatible backend configuration (read by ``OpenAISongWriter.from_env`` only).
ENV_OPENAI_URL = "ACESTEP_OPENAI_URL"
ENV_OPENAI_MODEL = "ACESTEP_OPENAI_MODEL"
ENV_OPENAI_API_KEY = "ACESTEP_OPENAI_API_KEY"

SECONDS_PER_LINE = 4.0
SUNG_SHARE = 0.75
LINES_PER_SECTION = 4
MAX_LINES = 48
MAX_TAGS = 12
MAX_TAG_CHARS = 40
WRAP_LINE_CHARS = 80
MAX_LINE_CHARS = 120
MAX_WORD_CHARS = 30  # longer "words" (e.g. 5,000 x's) are not words: the fallback skips them
MAX_PROMPT_CHARS = 1000

SongSource = Literal["llm", "openai", "fallback"]


@dataclass(frozen=True)
class Song:
    """What a song writer returns.

    Attributes:
        tags: comma-separated style tags, e.g. ``"lofi, hiphop, chill, 85 bpm, female vocals"``.
        lyrics: ``[section]``-structured lyrics fitted to the duration, or exactly ``"[inst]"``.
        source: ``"llm"`` (local model), ``"openai"`` (hosted endpoint) or ``"fallback"``.
        logs: human-readable lines for the response logs (which backend, attempts, fallback reason).
        tokens: tokens the language model generated over all attempts (0 for the fallback).
        prompt_tokens: prompt tokens the local model read over all attempts (0 for other writers).
    """

    tags: str
    lyrics: str
    source: SongSource
    logs: list[str] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int = 0


class SongWriter(Protocol):
    """Turns a free-text prompt into tags and lyrics. Implementations load their model once."""

    description: str

    def write(self, prompt: str, *, instrumental: bool, duration: float, seed: int) -> Song: ...


# ----------------------------------------------------------------------------------------------
# Length rule and validation
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LyricBudget:
    """How much lyric a song of ``duration`` seconds gets (see the module docstring)."""

    duration: float

    @property
    def max_lines(self) -> int:
        return min(MAX_LINES, max(2, round(self.duration * SUNG_SHARE / SECONDS_PER_LINE)))

    @property
    def min_lines(self) -> int:
        return max(1, self.max_lines // 4)

    @property
    def sections(self) -> int:
        """Sections the model is asked for."""
        return min(8, math.ceil(self.max_lines / LINES_PER_SECTION))

    @property
    def max_sections(self) -> int:
        return self.sections + 2

    @property
    def max_new_tokens(self) -> int:
        """Token budget for the lyrics value: ~14 tokens a line, 6 a header, plus slack."""
        return 24 + 14 * self.max_lines + 6 * self.max_sections


_SECTION_WORDS = "verse|chorus|pre-chorus|prechorus|bridge|intro|outro|hook|refrain|interlude|break"
_BRACKET_HEADER = re.compile(r"^\[\s*([^\[\]]{1,30}?)\s*\]$")
_WORD_HEADER = re.compile(rf"^({_SECTION_WORDS})(\s*\d+)?\s*:?$", re.IGNORECASE)
_TAG_SPLIT = re.compile(r"[,，、;；\n]")
_INLINE_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])")
_CLAUSE_END = re.compile(r"(?<=[,，、])\s*")


def _section_label(line: str) -> str | None:
    """``"[Verse 1]"`` / ``"Chorus:"`` -> ``"verse"`` / ``"chorus"``; None for a sung line."""
    match = _BRACKET_HEADER.match(line) or _WORD_HEADER.match(line)
    if match is None:
        return None
    label = re.sub(r"[\s\d:]+$", "", match.group(1).strip().lower())
    return re.sub(r"\s+", " ", label) or "verse"


def normalize_tags(raw: str) -> str:
    """Split, clean, lowercase and de-duplicate tags; raise ``ValueError`` if fewer than two remain."""
    tags: list[str] = []
    for piece in _TAG_SPLIT.split(raw):
        tag = re.sub(r"\s+", " ", piece.strip(" \t\"'`.#*-")).lower()
        if not tag or len(tag) > MAX_TAG_CHARS or any(c in tag for c in "[]{}:"):
            continue
        if tag not in tags:
            tags.append(tag)
    if len(tags) < 2:
        raise ValueError(f"need at least 2 comma-separated tags, got {raw[:80]!r}")
    return ", ".join(tags[:MAX_TAGS])


def wrap_line(line: str) -> list[str]:
    """Split a prose line longer than ``WRAP_LINE_CHARS`` at sentence, then clause, punctuation.

    Small models often write a verse as one paragraph; ACE-Step wants one sung phrase per line.
    Raises ``ValueError`` when a piece is still longer than ``MAX_LINE_CHARS``.
    """
    if len(line) <= WRAP_LINE_CHARS:
        return [line]
    lines: list[str] = []
    for sentence in filter(None, (s.strip() for s in _SENTENCE_END.split(line))):
        packing = False  # clauses of one sentence share a line while they fit
        for clause in filter(None, (c.strip() for c in _CLAUSE_END.split(sentence))):
            if packing and len(lines[-1]) + 1 + len(clause) <= WRAP_LINE_CHARS:
                lines[-1] = f"{lines[-1]} {clause}"
            else:
                lines.append(clause)
            packing = True
    if any(len(piece) > MAX_LINE_CHARS for piece in lines):
        raise ValueError(f"a line is longer than {MAX_LINE_CHARS} characters")
    return lines


def check_variety(lyrics: str) -> str:
    """Reject degenerate loops (from 4 lines on, at least a third of the sung lines must differ) and
    copies of the prompt's format example."""
    sung = [line.lower() for line in lyrics.splitlines() if line and not line.startswith("[")]
    if len(sung) >= 4 and 3 * len(set(sung)) < len(sung):
        raise ValueError(f"lyrics repeat the same lines ({len(set(sung))} distinct of {len(sung)})")
    if set(sung) & _EXAMPLE_LINES:
        raise ValueError("lyrics copy the format example")
    return lyrics


def fit_lyrics(raw: str, budget: LyricBudget) -> str:
    """Normalise section headers, wrap prose lines (``wrap_line``) and cut the lyric to ``budget``.

    Raises ``ValueError`` when the lyric has fewer than ``budget.min_lines`` sung lines, a line longer
    than ``MAX_LINE_CHARS`` after wrapping, or uses the instrumental marker.
    """
    sections: list[tuple[str, list[str]]] = []
    for line in (line.strip() for line in raw.splitlines()):
        if not line:
            continue
        label = _section_label(line)
        if label is not None:
            if label == "inst":
                raise ValueError("the instrumental marker is not a lyric")
            sections.append((label, []))
            continue
        line = re.sub(r"\s+", " ", _INLINE_BRACKETS.sub(" ", line)).strip()  # "[guitar solo] la" -> "la"
        if not line:
            continue
        if not sections:
            sections.append(("verse", []))
        sections[-1][1].extend(wrap_line(line))

    kept: list[str] = []
    sung = 0
    for label, lines in (s for s in sections if s[1]):
        if sung >= budget.max_lines or len(kept) >= budget.max_sections:
            break
        lines = lines[: budget.max_lines - sung]
        sung += len(lines)
        kept.append("\n".join([f"[{label}]", *lines]))
    if sung < budget.min_lines:
        raise ValueError(f"{sung} sung lines, a {budget.duration:g} s song needs {budget.min_lines}")
    return "\n\n".join(kept)


class SongDraft(BaseModel):
    """A model's reply. Validate with ``context={"budget": LyricBudget, "instrumental": bool}``."""

    tags: str
    lyrics: str = INSTRUMENTAL_LYRICS

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: str, info: ValidationInfo) -> str:
        if (info.context or {}).get("instrumental"):
            value = ",".join(tag for tag in _TAG_SPLIT.split(value) if "vocal" not in tag.lower())
        return normalize_tags(value)

    @field_validator("lyrics")
    @classmethod
    def _fit_lyrics(cls, value: str, info: ValidationInfo) -> str:
        context = info.context or {}
        if context.get("instrumental"):
            return INSTRUMENTAL_LYRICS
        return check_variety(fit_lyrics(value, context.get("budget") or LyricBudget(60.0)))


def parse_draft(text: str, *, budget: LyricBudget, instrumental: bool) -> SongDraft:
    """Parse a JSON reply (code fences and surrounding chatter tolerated) into a valid ``SongDraft``.

    Raises ``ValueError`` (``ValidationError`` is one) with a short reason.
    """
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("reply holds no JSON object")
    data = json.loads(text[start : end + 1], strict=False)  # models write raw newlines in strings
    if not isinstance(data, dict):
        raise ValueError("reply is not a JSON object")
    return SongDraft.model_validate(data, context={"budget": budget, "instrumental": instrumental})


def _short_reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}".replace("Value error, ", "")
    return str(error).splitlines()[0][:160]


# ----------------------------------------------------------------------------------------------
# Instructions shared by the LLM backends
# ----------------------------------------------------------------------------------------------

# Shows the format (small models follow an example better than a description); not its words.
_EXAMPLE_REPLY = json.dumps(
    {
        "tags": "acoustic pop, guitar, warm, 100 bpm, male vocals",
        "lyrics": "[verse]\nMorning light across the floor\nCoffee steaming by the door\n\n[chorus]\nStay a while, stay a while",
    },
    ensure_ascii=False,
)
_EXAMPLE_LINES = frozenset(
    line.lower() for line in json.loads(_EXAMPLE_REPLY)["lyrics"].splitlines() if line and not line.startswith("[")
)
_TAGS_GUIDE = 'tags: 4-10 lowercase comma-separated music tags: genre, instruments, mood, "N bpm"'


def build_messages(prompt: str, *, instrumental: bool, budget: LyricBudget) -> list[dict[str, str]]:
    """Chat messages asking for the JSON song; kept short (every prompt token is prefilled per attempt).

    Instrumental songs ask for tags only."""
    if instrumental:
        system = (
            'Describe instrumental music for a text-to-music model. Reply as JSON like '
            f'{{"tags": "ambient, piano, calm, 70 bpm"}}. {_TAGS_GUIDE}; no vocals.'
        )
    else:
        system = (
            f"Write a song for a text-to-music model. Reply as JSON like {_EXAMPLE_REPLY}. {_TAGS_GUIDE}, "
            f"vocal type. lyrics: {budget.sections} section(s), at most {budget.max_lines} lines in all, each "
            "section opening with a header such as [verse], [chorus] or [bridge], one sung line per row, in the "
            "language the user asks for, else the prompt's."
        )
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt.strip()[:MAX_PROMPT_CHARS]}]


# ----------------------------------------------------------------------------------------------
# Deterministic fallback
# ----------------------------------------------------------------------------------------------

_MUSIC_WORDS = frozenset(
    """
    pop rock jazz blues funk soul disco house techno trance dubstep edm electronic electro ambient
    lofi lo-fi hiphop hip-hop rap trap drill rnb r&b reggae reggaeton latin salsa samba bossa nova
    country folk indie punk metal grunge emo classical orchestral cinematic opera gospel kpop k-pop
    jpop j-pop synthwave synthpop chillwave vaporwave garage drum bass dnb breakbeat afrobeat
    acoustic piano guitar bass drums violin cello strings synth synthesizer saxophone sax trumpet
    flute harp organ ukulele banjo choir beat beats 808 chill calm mellow happy sad dark upbeat
    energetic dreamy melancholic romantic epic uplifting groovy aggressive relaxing nostalgic
    emotional powerful soft slow fast
    """.split()
)
_STOPWORDS = frozenset(
    """
    a an the and or but of to in on at for with about from by into over under is are be was were
    it its this that these those as song music track tune some very make write create generate
    vibe vibes style feel feeling like kind type sounding sound sounds i me my we our you your
    """.split()
)
_VOCAL_PHRASE = re.compile(r"\b(female|male|women|men|girl|boy)(?:'?s)?\s+(?:vocals?|voice|singers?)\b", re.I)
_VOCAL_GENDER = {"women": "female", "girl": "female", "men": "male", "boy": "male"}
_BPM_PHRASE = re.compile(r"\b(\d{2,3})\s*bpm\b", re.I)
_WORD = re.compile(r"[^\W_]+(?:[-'&][^\W_]+)*", re.UNICODE)


def _prompt_words(prompt: str) -> tuple[list[str], list[str]]:
    """``(phrases, words)``: "N bpm" / "female vocals" phrases, and the other non-stopword words."""
    text = unicodedata.normalize("NFKC", prompt)
    phrases = [f"{m.group(1)} bpm" for m in _BPM_PHRASE.finditer(text)]
    phrases += [f"{_VOCAL_GENDER.get(g, g)} vocals" for g in (m.group(1).lower() for m in _VOCAL_PHRASE.finditer(text))]
    text = _VOCAL_PHRASE.sub(" ", _BPM_PHRASE.sub(" ", text))
    words = [
        w for w in _WORD.findall(text)
        if w.lower() not in _STOPWORDS and not w.isdigit() and len(w) <= MAX_WORD_CHARS
    ]
    return phrases, words


def fallback_tags(prompt: str, *, instrumental: bool) -> str:
    """Tags from the prompt's own words: music words, then bpm and vocal phrases, then other words."""
    phrases, words = _prompt_words(prompt)
    words = [w.lower() for w in words]
    if instrumental:
        phrases = [p for p in phrases if not p.endswith("vocals")]
    music = [w for w in words if w in _MUSIC_WORDS]
    other = [w for w in words if w not in _MUSIC_WORDS and len(w) > 2]
    tags: list[str] = []
    for tag in [*music, *phrases, *other, "instrumental" if instrumental else "pop", "melodic"]:
        if tag not in tags:
            tags.append(tag)
    return ", ".join(tags[:8])


def fallback_lyrics(prompt: str, budget: LyricBudget) -> str:
    """A minimal verse/chorus lyric made of the prompt's topic words, fitted to ``budget``.

    Lines are successive 4-word chunks of the prompt's non-music words (cycling); the chorus repeats
    the first chunk. Sections alternate verse, chorus, ..., with a bridge before the last chorus of
    songs of five or more sections.
    """
    _, words = _prompt_words(prompt)
    topic = [w for w in words if w.lower() not in _MUSIC_WORDS] or words or ["la", "la", "la"]
    chunks = [" ".join(topic[i : i + 4]) for i in range(0, len(topic), 4)]
    labels = ["verse" if i % 2 == 0 else "chorus" for i in range(budget.sections)]
    if len(labels) >= 5:
        labels[-2] = "bridge"
    per_section = max(1, budget.max_lines // len(labels))
    sections, verse_line = [], 0
    for label in labels:
        if label == "chorus":
            lines = [chunks[0]] * min(per_section, 2) + [f"oh, {chunks[0]}"] * max(0, per_section - 2)
        else:
            lines = [chunks[(verse_line + i) % len(chunks)] for i in range(per_section)]
            verse_line += per_section
        sections.append("\n".join([f"[{label}]", *lines]))
    return fit_lyrics("\n\n".join(sections), budget)


class FallbackSongWriter:
    """Deterministic song writer with no model (see ``fallback_tags`` and ``fallback_lyrics``).

    Args:
        reason: why no model is used; repeated in every song's logs.
    """

    def __init__(self, reason: str = "no language model configured"):
        self.reason = reason
        self.description = f"deterministic fallback ({reason})"

    def write(self, prompt: str, *, instrumental: bool, duration: float, seed: int) -> Song:
        budget = LyricBudget(duration)
        lyrics = INSTRUMENTAL_LYRICS if instrumental else fallback_lyrics(prompt, budget)
        log = (
            f"prompt: {self.reason}; tags and lyrics come from the deterministic fallback "
            "(tags from the prompt's words, a minimal structured lyric)"
        )
        return Song(fallback_tags(prompt, instrumental=instrumental), lyrics, "fallback", [log])


def _fallback_after(failures: list[str], prompt: str, instrumental: bool, duration: float, seed: int,
                    tokens: int) -> Song:
    reason = f"language model output invalid after {len(failures)} attempt(s) ({failures[-1]})"
    logger.warning("song writer: %s", reason)
    song = FallbackSongWriter(reason).write(prompt, instrumental=instrumental, duration=duration, seed=seed)
    return Song(song.tags, song.lyrics, "fallback", song.logs, tokens)


def _attempt_seed(seed: int, attempt: int) -> int:
    return (seed + 7919 * attempt) % (2**63)


# ----------------------------------------------------------------------------------------------
# Local model (transformers)
# ----------------------------------------------------------------------------------------------

# Used when a tokenizer ships without a chat template (ChatML, as Qwen and SmolLM2 use).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")
_TAGS_MAX_NEW_TOKENS = 48
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

    tags = JsonField("tags", _TAGS_MAX_NEW_TOKENS)
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
            reply, used = self.draft(prompt_ids, fields, _attempt_seed(seed, attempt))
            tokens += used
            try:
                draft = parse_draft(reply, budget=budget, instrumental=instrumental)
            except ValueError as error:  # json.JSONDecodeError and ValidationError are ValueErrors
                failures.append(_short_reason(error))
                logger.info("song writer: attempt %d invalid: %s", attempt + 1, failures[-1])
                continue
            read = len(prompt_ids) * (attempt + 1)
            log = (f"prompt: {self.name} wrote tags and lyrics in {attempt + 1} attempt(s), "
                   f"{read} prompt + {tokens} generated tokens")
            return Song(draft.tags, draft.lyrics, "llm", [log], tokens, read)
        song = _fallback_after(failures, prompt, instrumental, duration, seed, tokens)
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


class OpenAISongWriter:
    """Song writer on an OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp...).

    JSON mode (``response_format: json_object``) and the request ``seed`` are sent; servers that
    honour the seed give the same song for the same seed and prompt.

    Args:
        base_url: API root, e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
        model: model name the endpoint serves.
        api_key: bearer token (optional for local servers).
        transport: an ``httpx`` transport (tests pass ``httpx.MockTransport``).
        json_mode: send ``response_format``; turn off for servers that reject it.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 max_attempts: int = 3, temperature: float = 0.7, json_mode: bool = True,
                 transport: httpx.BaseTransport | None = None):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.model = model
        self.max_attempts = max_attempts
        self.temperature = temperature
        self.json_mode = json_mode
        self.description = f"OpenAI-compatible endpoint {base_url} ({model})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> OpenAISongWriter:
        """Configure from ``ACESTEP_OPENAI_URL``, ``ACESTEP_OPENAI_MODEL`` and ``ACESTEP_OPENAI_API_KEY``."""
        environ = os.environ if environ is None else environ
        missing = [name for name in (ENV_OPENAI_URL, ENV_OPENAI_MODEL) if not environ.get(name)]
        if missing:
            raise ValueError(f"prompt backend 'openai' needs the environment variables {', '.join(missing)}")
        return cls(environ[ENV_OPENAI_URL], environ[ENV_OPENAI_MODEL], environ.get(ENV_OPENAI_API_KEY), **kwargs)

    def write(self, prompt: str, *, instrumental: bool, duration: float, seed: int) -> Song:
        import httpx

        budget = LyricBudget(duration)
        messages = build_messages(prompt, instrumental=instrumental, budget=budget)
        failures: list[str] = []
        tokens = 0
        for attempt in range(self.max_attempts):
            payload: dict[str, Any] = {
                "model": self.model,
                "messages": messages,
                "temperature": self.temperature,
                "seed": _attempt_seed(seed, attempt),
                "max_tokens": _TAGS_MAX_NEW_TOKENS + (0 if instrumental else budget.max_new_tokens) + 16,
            }
            if self.json_mode:
                payload["response_format"] = {"type": "json_object"}
            try:
                response = self.client.post("chat/completions", json=payload)
                response.raise_for_status()
                body = response.json()
                tokens += int((body.get("usage") or {}).get("completion_tokens") or 0)
                content = body["choices"][0]["message"]["content"]
                draft = parse_draft(content, budget=budget, instrumental=instrumental)
            except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as error:
                failures.append(_short_reason(error))
                logger.info("song writer: endpoint attempt %d failed: %s", attempt + 1, failures[-1])
                continue
            log = f"prompt: {self.model} (OpenAI-compatible endpoint) wrote tags and lyrics in {attempt + 1} attempt(s)"
            return Song(draft.tags, draft.lyrics, "openai", [log], tokens)
        return _fallback_after(failures, prompt, instrumental, duration, seed, tokens)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_song_writer(model_dir: str | os.PathLike | None, backend: str = "transformers", *,
                     device: str = "auto", torch_dtype: str = "auto",
                     speed: GenerationSpeed | None = None) -> SongWriter:
    """The Engine's song writer, loaded once at startup.

    Args:
        model_dir: the LLM weights (folder or ``.gguf``); None or a path without weights gives the
            fallback with a startup warning (the tiny-checkpoint setup).
        backend: ``"transformers"`` (local model, default), ``"openai"`` (environment-configured
            endpoint) or ``"fallback"``.
        device, torch_dtype, speed: for the local model, as in ``TransformersSongWriter.from_pretrained``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"prompt backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "openai":
        writer: SongWriter = OpenAISongWriter.from_env()
    elif backend == "fallback":
        writer = FallbackSongWriter("prompt backend set to 'fallback'")
    elif find_llm_weights(model_dir) is None:
        writer = FallbackSongWriter(f"no language model weights at {model_dir or '(none configured)'}")
        logger.warning("song writer: %s; prompt-to-audio uses the deterministic fallback", writer.reason)
        return writer
    else:
        writer = TransformersSongWriter.from_pretrained(model_dir, device=device, torch_dtype=torch_dtype, speed=speed)
    logger.info("song writer: %s", writer.description)
    return writer
